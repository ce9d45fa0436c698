"""``spineai demo``: the main job, click -> segmentation -> features, on a generated phantom."""

from __future__ import annotations

import json
from pathlib import Path

from spineai import RESEARCH_USE_NOTICE, __version__
from spineai.image import atomic_write, check_output_path, dice, write_volume
from spineai.progress import ProgressCallback, report

OUTPUTS = {
    "image": "phantom_t2.nii.gz",
    "truth": "lesion_truth.nii.gz",
    "labels": "anatomy_labels.nii.gz",
    "mask": "lesion_mask.nii.gz",
    "features": "features.csv",
    "overlay": "overlay.png",
    "heatmap": "heatmap.nii.gz",
    "heatmap_overlay": "heatmap_overlay.png",
    "summary": "summary.json",
}


def run_demo(out_dir: str | Path, overwrite: bool = False, seed: int = 0, kind: str = "MET",
             progress: ProgressCallback | None = None) -> str:
    """Generate a phantom, segment its lesion from a click at its centre, extract the 31 features,
    classify them with the bundled demonstration model.

    Writes the files in ``OUTPUTS`` into ``out_dir`` and returns a printable summary. Refuses to
    replace existing files unless ``overwrite``; checks every output path before any work.
    """
    from spineai.models import classify_with_demo_model
    from spineai.phantom import make_spine_phantom
    from spineai.radiomics import extract_features, write_features_csv
    from spineai.segment import segment
    from spineai.visualize import save_overlay_png

    out = Path(out_dir)
    paths = {key: out / name for key, name in OUTPUTS.items()}
    for path in paths.values():
        check_output_path(path, overwrite)
    steps = 6
    report(progress, 0, steps, "phantom")
    ph = make_spine_phantom(seed=seed, lesion_kind=kind)
    click_ras = ph.lesion_center_ras
    write_volume(ph.image, paths["image"], overwrite)
    write_volume(ph.lesion_mask, paths["truth"], overwrite)
    write_volume(ph.labels, paths["labels"], overwrite)

    report(progress, 1, steps, "segment")
    seed_ijk = ph.image.ras_to_ijk(click_ras).round().astype(int)
    mask = segment(ph.image, tuple(int(v) for v in seed_ijk), mode="lesion")
    write_volume(mask, paths["mask"], overwrite)
    overlap = dice(mask.array, ph.lesion_mask.array)

    report(progress, 2, steps, "features")
    features = extract_features(ph.image, mask)
    write_features_csv([features], paths["features"], overwrite=overwrite, ids=[f"phantom-{kind}-{seed}"])

    prediction = classify_with_demo_model(features.values)

    report(progress, 3, steps, "overlay")
    save_overlay_png(
        ph.image, [(ph.lesion_mask, "truth", "lime"), (mask, "segmented from the click", "red")],
        paths["overlay"], center_ijk=seed_ijk,
        title=f"Synthetic phantom, {kind}-like lesion in {ph.lesion_level}: Dice {overlap:.3f}", overwrite=overwrite,
    )

    report(progress, 4, steps, "image model and heatmap")
    image_result = _image_classification(ph.image, mask, paths, overwrite)

    report(progress, 5, steps, "summary")
    summary = {
        "spineai_version": __version__,
        "notice": RESEARCH_USE_NOTICE,
        "phantom": {"seed": seed, "lesion_kind": kind, "lesion_level": ph.lesion_level,
                    "size_ijk": ph.image.size_ijk, "spacing_mm": ph.image.spacing},
        "click_ras_mm": [round(v, 2) for v in click_ras],
        "segmentation": {"voxels": int(mask.array.sum()), "dice_vs_truth": round(overlap, 4)},
        "features": {k: float(v) for k, v in features.values.items()},
        "classification": prediction.to_dict(),
        "image_classification": image_result,
        "files": {key: p.name for key, p in paths.items() if p.exists()},
    }
    atomic_write(paths["summary"], lambda tmp: tmp.write_text(json.dumps(summary, indent=2)), suffix=".json",
                 overwrite=overwrite)
    report(progress, steps, steps, "done")
    lines = [
        f"SpineAI {__version__} demo -> {out}",
        f"  phantom: {kind}-like lesion in {ph.lesion_level}, {ph.image.size_ijk} voxels",
        f"  click at RAS {tuple(round(v, 1) for v in click_ras)} mm",
        f"  segmented {int(mask.array.sum())} voxels, Dice vs truth {overlap:.3f}",
        f"  {len(features.values)} radiomic features -> {paths['features'].name}",
        f"  overlay -> {paths['overlay'].name}",
        "  classification (demonstration model trained on synthetic phantoms):",
        *("    " + line for line in prediction.summary().splitlines()),
        *_image_lines(image_result),
        f"  {RESEARCH_USE_NOTICE}",
    ]
    return "\n".join(lines)


def _image_classification(image, mask, paths: dict, overwrite: bool) -> dict:
    """The image model (SD / MET / STB from the sagittal slices) and its Grad-CAM heatmap on the
    phantom's geometry; skipped with the reason when torch / MONAI are not installed."""
    from spineai.deep.device import require_torch
    from spineai.errors import SpineAIError
    from spineai.imaging.lesion import classify_lesion, save_heatmap_png

    try:
        require_torch()
    except SpineAIError as exc:
        return {"skipped": str(exc)}
    result = classify_lesion(image, mask=mask, device="cpu")
    write_volume(result.heatmap, paths["heatmap"], overwrite)
    save_heatmap_png(image, result, paths["heatmap_overlay"], overwrite)
    return result.to_json()


def _image_lines(image_result: dict) -> list:
    if "skipped" in image_result:
        return [f"  image model and heatmap skipped: {image_result['skipped']}"]
    probs = ", ".join(f"{c} {p:.2f}" for c, p in image_result["probabilities"].items())
    return [f"  image model {image_result['model']}: {probs}",
            f"    {image_result['notice']}" if image_result["notice"] else "",
            f"  Grad-CAM heatmap -> {OUTPUTS['heatmap']}, {OUTPUTS['heatmap_overlay']}"]
