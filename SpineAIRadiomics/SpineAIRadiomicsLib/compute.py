"""The engine work of SpineAIRadiomics, runnable in the background process.

Plain numpy + spineai: no MRML, no Qt, no VTK, so the worker process needs neither. Inputs and
outputs are ``.npy`` arrays (loaded with ``allow_pickle=False``) and JSON in the job folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from spineai.errors import SpineAIError
from spineai.image import Volume

TASK = "SpineAIRadiomicsLib.compute:run"


def save_volume(folder: Path, name: str, volume: Volume) -> dict:
    np.save(folder / f"{name}.npy", np.ascontiguousarray(volume.array), allow_pickle=False)
    return {
        "array": f"{name}.npy",
        "spacing": list(volume.spacing),
        "origin": list(volume.origin),
        "direction": np.asarray(volume.direction).tolist(),
    }


def load_volume(folder: Path, spec: dict) -> Volume:
    array = np.load(folder / spec["array"], allow_pickle=False)
    return Volume(array, tuple(spec["spacing"]), tuple(spec["origin"]), np.asarray(spec["direction"]))


def resample_nearest(volume: Volume, reference: Volume) -> np.ndarray:
    """``volume``'s voxels on ``reference``'s grid (nearest neighbour, 0 outside), array[k, j, i]."""
    import SimpleITK as sitk

    if volume.same_geometry(reference):
        return volume.array
    grid = sitk.Image([int(n) for n in reference.size_ijk], sitk.sitkUInt8)
    grid.SetSpacing(reference.spacing)
    grid.SetOrigin(reference.origin)
    grid.SetDirection(tuple(reference.direction.ravel()))
    return sitk.GetArrayFromImage(sitk.Resample(volume.to_sitk(), grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0))


def labels_on_grid(reference: Volume, layers: list, segments: list, name: str = "bounding segmentation") -> Volume:
    """Segment n (in the node's order) -> label n + 1 on ``reference``'s grid; where segments overlap
    the later one wins, as when Slicer exports a label map. ``segments``: (name, layer, label value)."""
    on_grid = [resample_nearest(layer, reference) for layer in layers]
    labels = np.zeros(reference.array.shape, np.uint16)
    for n, (_, layer, value) in enumerate(segments, start=1):
        labels[on_grid[layer] == value] = n
    if not labels.any():
        raise SpineAIError(f"the bounding segmentation '{name}' does not overlap the input volume")
    return reference.with_array(labels)


def run(folder: Path, params: dict, progress) -> None:
    """Segment around each seed and/or extract features of each mask.

    params: ``image`` (volume spec); ``lesions``: list of ``{"name", "seed_ijk"}`` (segment) or
    ``{"name", "mask_index"}`` (masks given in ``masks.npy``, stacked); ``segment`` / ``extract``
    flags; ``mode``; optional ``within_layers`` (volume specs), ``within_segments`` ((name, layer,
    label value) each) and ``within_name`` (a bounding segmentation, resampled here) and
    ``within_label``; ``params`` (feature set); ``method`` ('auto', 'deep' or 'classic') and
    ``device`` ('auto', 'cpu', 'cuda') of the segmentation, and per lesion optional ``add_ijk`` /
    ``remove_ijk`` corrective clicks (learned method).
    Writes ``masks_out.npy`` (uint8 [n, k, j, i]), ``features.json`` and ``segment_details.json``
    (per lesion: the method used, its device and model, seconds).
    """
    folder = Path(folder)
    image = load_volume(folder, params["image"])
    lesions = params["lesions"]
    do_segment, do_extract = bool(params.get("segment")), bool(params.get("extract"))
    within = None
    if params.get("within_layers"):
        progress(0, 1, "resampling the bounding segmentation")
        layers = [load_volume(folder, spec) for spec in params["within_layers"]]
        within = labels_on_grid(image, layers, params["within_segments"], params.get("within_name", "bounding segmentation"))
    given = np.load(folder / "masks.npy", allow_pickle=False) if not do_segment else None
    steps = len(lesions) * (int(do_segment) + int(do_extract))
    step = 0
    masks = np.zeros((len(lesions),) + image.array.shape, np.uint8)
    features, details = [], []
    if do_segment:
        from spineai.segment import segment  # imported here: the worker pays for SimpleITK, not Slicer's startup

    if do_extract:
        from spineai.radiomics import extract_features
    for n, lesion in enumerate(lesions):
        name = lesion["name"]
        if do_segment:
            progress(step, steps, f"segmenting {name}")
            info: dict = {"name": name}
            start = time.perf_counter()
            try:
                result = segment(image, tuple(lesion["seed_ijk"]), mode=params.get("mode", "lesion"),
                                 within=within, within_label=params.get("within_label"),
                                 method=params.get("method", "classic"), device=params.get("device"),
                                 add_points=[tuple(p) for p in lesion.get("add_ijk", [])],
                                 remove_points=[tuple(p) for p in lesion.get("remove_ijk", [])], details=info)
            except SpineAIError as exc:
                raise SpineAIError(f"{name}: {exc}") from None
            masks[n] = np.asarray(result.array) != 0
            info["seconds"] = time.perf_counter() - start
            details.append(info)
            if not masks[n].any():
                raise SpineAIError(f"{name}: the segmentation around this point is empty; move the point into the lesion")
            step += 1
        else:
            masks[n] = given[lesion["mask_index"]] != 0
        if do_extract:
            progress(step, steps, f"extracting features of {name}")
            try:
                fr = extract_features(image, image.with_array(masks[n]), label=1, params=params.get("params", "spineai31-v1"))
            except SpineAIError as exc:
                raise SpineAIError(f"{name}: {exc}") from None
            features.append({"name": name, "values": fr.values, "provenance": fr.provenance})
            step += 1
    np.save(folder / "masks_out.npy", masks, allow_pickle=False)
    (folder / "features.json").write_text(json.dumps(features, default=_json_default), encoding="utf-8")
    (folder / "segment_details.json").write_text(json.dumps(details, default=_json_default), encoding="utf-8")
    progress(steps, steps, "done")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
