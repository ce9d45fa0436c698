"""The background task of the image classifier: runs in the worker process (no Slicer, no Qt).

Inputs in the job folder: ``image.nii`` (and ``mask.nii`` for a lesion given as a segment), written
by the logic from the nodes; outputs: ``heatmap.npy`` (on the image's voxels) and ``result.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

TASK = "SpineAILib.image_task:run"


def run(folder: Path, params: dict, progress) -> None:
    import numpy as np

    from spineai.image import read_volume
    from spineai.imaging.lesion import classify_lesion

    folder = Path(folder)
    image = read_volume(folder / "image.nii")
    mask = read_volume(folder / "mask.nii") if params.get("mask") else None
    result = classify_lesion(image, mask=mask, seed=params.get("seed_ras"), model=params["model"],
                             method=params.get("method", "gradcam"), device=params.get("device"), progress=progress)
    np.save(folder / "heatmap.npy", result.heatmap.array.astype(np.float32), allow_pickle=False)
    (folder / "result.json").write_text(json.dumps(result.to_json()), encoding="utf-8")
