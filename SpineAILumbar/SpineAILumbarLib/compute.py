"""The engine work of SpineAILumbar, runnable in the background process (no MRML, Qt or VTK).

Inputs: the series as NIfTI files written by the engine (``spineai.image.write_volume``, geometry
included) and, optionally, level points (disc centres, LPS) in ``job.json``. Outputs in the job folder: ``grades.json`` (the engine's result document) and, per
series, ``heatmap_<role>.npy``: every level's Grad-CAM placed on that series' own voxel grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TASK = "SpineAILumbarLib.compute:run"


def run(folder: Path, params: dict, progress) -> None:
    import warnings

    from spineai.errors import SpineAIWarning
    from spineai.lumbar.grading import grade_study, heatmap_on_volume
    from spineai.lumbar.preprocess import canal_points_from_discs
    from spineai.image import read_volume
    from spineai.lumbar.study import read_study

    folder = Path(folder)
    volumes = {role: read_volume(folder / name) for role, name in params["series"].items()}
    discs = params.get("disc_points_lps") or {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpineAIWarning)  # kept in study.warnings and shown in the panel
        study = read_study(volumes, params.get("study_id", "study"), levels=canal_points_from_discs(discs) if discs else None)
        result = grade_study(study, params.get("model") or None, params.get("device", "auto"), explain=True,
                             progress=progress)
    (folder / "grades.json").write_text(json.dumps(result.to_dict()), encoding="utf-8")
    for role, volume in volumes.items():
        np.save(folder / f"heatmap_{role}.npy", heatmap_on_volume(result, role, volume), allow_pickle=False)
