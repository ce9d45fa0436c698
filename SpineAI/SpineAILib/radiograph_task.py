"""The background task of scoliosis screening: runs in the worker process (no Slicer, no Qt).

Input in the job folder: ``film.nii`` (the one-slice radiograph, written by the logic from its node);
outputs: ``heatmap.npy`` (on the film's voxels) and ``result.json`` (the summary, plus the measured
centre line and end vertebrae for the markups).
"""

from __future__ import annotations

import json
from pathlib import Path

TASK = "SpineAILib.radiograph_task:run"


def run(folder: Path, params: dict, progress) -> None:
    import numpy as np

    from spineai.image import read_volume
    from spineai.imaging.radiograph_classifier import classify_radiograph, load_radiograph_model
    from spineai.progress import report

    folder = Path(folder)
    film = read_volume(folder / "film.nii")
    report(progress, 0, 3, "loading the scoliosis model")
    bundle = load_radiograph_model(params.get("model") or None, params.get("device"))
    report(progress, 1, 3, "screening the film and computing the heatmap")
    result = classify_radiograph(bundle, film, method=params.get("method", "gradcam"))
    np.save(folder / "heatmap.npy", result.heatmap_volume.array.astype(np.float32), allow_pickle=False)
    out = dict(result.summary(), heatmap_method=params.get("method", "gradcam"))
    cobb = result.cobb
    if cobb is not None:
        out["cobb"] = {"angle_deg": float(cobb.angle_deg), "centre_line": np.asarray(cobb.centre_line, float).tolist(),
                       "tilts_deg": np.asarray(cobb.tilts_deg, float).tolist(), "upper_end": int(cobb.upper_end),
                       "lower_end": int(cobb.lower_end), "strength": float(cobb.strength)}
    (folder / "result.json").write_text(json.dumps(out), encoding="utf-8")
    report(progress, 3, 3, "done")
