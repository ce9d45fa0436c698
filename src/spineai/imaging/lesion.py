"""Classify a spine lesion on MR from its image (SD / MET / STB), with a Grad-CAM heatmap on the
source volume's geometry: the engine behind ``spineai classify-image`` and the SpineAI Slicer module.

The lesion is given by a mask (its centroid centres the crop) or by a click (the crop is centred on
it). The crop, its resampling and its normalisation come from the bundle's card (``preprocessing``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from spineai.errors import SpineAIError
from spineai.image import Volume

TASK = "lesion-image-classification"
DEFAULT_MODEL = "spineai-lesion-demo"
DEMONSTRATION_NOTICE = ("DEMONSTRATION MODEL: trained on generated lesions in healthy spines; its probabilities and "
                        "heatmap mean nothing for a real patient.")
OUTPUTS = {"probabilities": "probabilities.json", "heatmap": "heatmap.nii.gz", "overlay": "heatmap_overlay.png"}

_CACHE: dict = {}


def load_image_model(model: str = DEFAULT_MODEL, device: Optional[str] = None):
    """The lesion image bundle (verified, task-checked, network on ``device``), loaded once per process."""
    from spineai.deep.bundle import load_torch_bundle
    from spineai.deep.device import select_device
    from spineai.imaging.classifier import check_recipe

    dev = select_device(device)
    key = (str(model), str(dev))
    if key not in _CACHE:
        bundle = load_torch_bundle(model, task=TASK)
        card = bundle.card
        if not isinstance(card.get("classes"), list) or len(card["classes"]) < 2:
            raise SpineAIError(f"{bundle.source}: the card lists no classes")
        check_recipe(card.get("preprocessing") or {})
        bundle.network.to(dev)
        _CACHE[key] = bundle
    return _CACHE[key]


def mask_centre_lps(mask: Volume) -> np.ndarray:
    """The LPS centroid of a mask's voxels."""
    kji = np.argwhere(mask.array > 0)
    if not len(kji):
        raise SpineAIError("the lesion mask is empty: no voxel is non-zero")
    m = mask.ijk_to_lps_matrix()
    return kji[:, ::-1].mean(0) @ m[:3, :3].T + m[:3, 3]


def lesion_centre(image: Volume, mask: Optional[Volume] = None, seed: Optional[Sequence[float]] = None,
                  seed_space: str = "ras") -> np.ndarray:
    """The crop centre (LPS mm): the mask's centroid, or the seed (RAS mm, or voxel (i, j, k) with
    ``seed_space='ijk'``). Exactly one of the two."""
    from spineai.image import mask_from_labelmap, require_same_geometry, seed_to_index

    if (mask is None) == (seed is None):
        raise SpineAIError("give the lesion either as a mask or as a seed point (one of the two)")
    if mask is not None:
        require_same_geometry(image, mask, "image", "lesion mask")
        return mask_centre_lps(mask.with_array(mask_from_labelmap(mask, what="lesion mask").astype(np.uint8)))
    seed_to_index(image, seed, seed_space)  # refuses a seed outside the image, naming it
    p = np.asarray(seed, float)
    if seed_space == "ijk":
        m = image.ijk_to_lps_matrix()
        return p @ m[:3, :3].T + m[:3, 3]
    return np.array([-p[0], -p[1], p[2]])


@dataclass
class LesionClassification:
    probabilities: dict  # class -> probability
    predicted: str
    heatmap: Volume  # [0, 1] on the image's geometry
    method: str
    target_layer: str
    centre_ras: list
    model: str
    demonstration: bool
    explanation: object  # spineai.imaging.classifier.Explanation

    @property
    def notice(self) -> str:
        return DEMONSTRATION_NOTICE if self.demonstration else ""

    def to_json(self) -> dict:
        return {"probabilities": self.probabilities, "predicted": self.predicted, "heatmap_method": self.method,
                "heatmap_layer": self.target_layer, "crop_centre_ras": self.centre_ras, "model": self.model,
                "demonstration": self.demonstration, "notice": self.notice,
                "seconds": {k: round(v, 4) for k, v in self.explanation.seconds.items()}}


def classify_lesion(image: Volume, mask: Optional[Volume] = None, seed: Optional[Sequence[float]] = None,
                    model: str = DEFAULT_MODEL, method: str = "gradcam", device: Optional[str] = None,
                    seed_space: str = "ras", progress=None) -> LesionClassification:
    """Crop around the lesion, classify it and explain the prediction with Grad-CAM (or Grad-CAM++)."""
    from spineai.image import require_finite
    from spineai.imaging.classifier import explain_crop
    from spineai.progress import report

    require_finite(image)
    centre = lesion_centre(image, mask, seed, seed_space)
    report(progress, 0, 3, "loading the image model")
    bundle = load_image_model(model, device)
    report(progress, 1, 3, "classifying and computing the heatmap")
    ex = explain_crop(bundle, image, centre, method=method)
    report(progress, 3, 3, "done")
    card = bundle.card
    return LesionClassification({c: float(p) for c, p in zip(ex.classes, ex.probabilities)}, ex.predicted, ex.heatmap,
                                method, ex.target_layer, [float(-centre[0]), float(-centre[1]), float(centre[2])],
                                f"{card.get('id', '?')} {card.get('version', '')}".strip(), bundle.is_demonstration, ex)


def write_outputs(result: LesionClassification, image: Volume, out_dir: str | Path, overwrite: bool = False) -> dict:
    """probabilities.json, heatmap.nii.gz (the image's geometry) and heatmap_overlay.png in ``out_dir``;
    every path is checked before anything is written."""
    from spineai.image import atomic_write, check_output_path, write_volume

    out = Path(out_dir)
    paths = {k: out / v for k, v in OUTPUTS.items()}
    for p in paths.values():
        check_output_path(p, overwrite)
    atomic_write(paths["probabilities"], lambda tmp: Path(tmp).write_text(json.dumps(result.to_json(), indent=2)),
                 suffix=".json", overwrite=overwrite)
    write_volume(result.heatmap, paths["heatmap"], overwrite=overwrite)
    save_heatmap_png(image, result, paths["overlay"], overwrite)
    return paths


def _lr_axis(image: Volume) -> int:
    """The array axis (0 = k, 1 = j, 2 = i) closest to left-right: sagittal slices are taken across it."""
    ijk_axis = int(np.argmax(np.abs(np.asarray(image.direction)[0, :])))
    return 2 - ijk_axis


def save_heatmap_png(image: Volume, result: LesionClassification, path: str | Path, overwrite: bool = False) -> Path:
    """The sagittal slice through the crop centre with the heatmap in a heat colour map, the
    probabilities and, for a demonstration model, its notice."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from spineai.image import atomic_write, check_output_path
    from spineai.visualize import _window

    path = check_output_path(path, overwrite)
    axis = _lr_axis(image)
    ijk = image.ras_to_ijk(result.centre_ras)
    index = int(np.clip(round(float(ijk[2 - axis])), 0, image.array.shape[axis] - 1))
    take = lambda a: np.take(a, index, axis=axis)  # noqa: E731
    rest = [a for a in range(3) if a != axis]
    spacing_kji = np.asarray(image.spacing)[::-1]
    lo, hi = _window(image.array)
    heat = take(result.heatmap.array)
    fig, ax = plt.subplots(figsize=(5, 6))
    ax.imshow(take(image.array), cmap="gray", vmin=lo, vmax=hi, aspect=spacing_kji[rest[0]] / spacing_kji[rest[1]],
              interpolation="nearest")
    ax.imshow(np.ma.masked_less_equal(heat, 0.05), cmap="hot", vmin=0, vmax=1, alpha=0.5,
              aspect=spacing_kji[rest[0]] / spacing_kji[rest[1]], interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    probs = ", ".join(f"{c} {p:.2f}" for c, p in result.probabilities.items())
    ax.set_title(f"{result.predicted} ({probs})\n{result.method} heatmap, {result.model}", fontsize=9)
    if result.demonstration:
        fig.text(0.5, 0.01, "DEMONSTRATION MODEL (generated lesions): not for patients", ha="center", fontsize=9,
                 color="white", backgroundcolor="darkred")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"), suffix=".png", overwrite=overwrite)
    plt.close(fig)
    return path
