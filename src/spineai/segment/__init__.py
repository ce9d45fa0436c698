"""Seeded segmentation: one click gives a uint8 mask on the image's own grid.

Methods:
- ``classic``: intensity-window level set (no learned weights; lesions and vertebral bodies);
- ``deep``: a 3D U-Net prompted by the click (vertebral bodies; corrective add / remove clicks);
- ``auto``: ``deep`` for vertebral bodies when torch, MONAI and the model bundle are available,
  else ``classic``. Lesions are always classic.

``segment`` is the public API; the command line and the Slicer modules call it.
"""

from __future__ import annotations

from typing import Sequence

from spineai.errors import SpineAIError
from spineai.image import Volume
from spineai.segment.classic import SEGMENTATION_MODES, _check_seed, _within_mask
from spineai.segment.classic import segment as segment_classic

METHODS = ("auto", "classic", "deep")

__all__ = ["METHODS", "SEGMENTATION_MODES", "choose_method", "segment", "segment_classic"]


def choose_method(mode: str, method: str = "auto", model: str | None = None) -> tuple[str, str]:
    """(method to use, why): ``auto`` resolves to ``deep`` or ``classic`` here."""
    if method not in METHODS:
        raise SpineAIError(f"unknown segmentation method {method!r}: choose one of {', '.join(METHODS)}")
    if mode not in SEGMENTATION_MODES:
        raise SpineAIError(f"unknown segmentation mode {mode!r}: choose one of {', '.join(SEGMENTATION_MODES)}")
    if mode != "vertebral-body":
        if method == "deep":
            raise SpineAIError("the learned method segments vertebral bodies only: use --mode vertebral-body, "
                               "or --method classic for lesions")
        return "classic", "lesions are segmented by the classic method"
    if method != "auto":
        return method, f"{method} method asked for"
    from spineai.segment.deep import DEFAULT_MODEL, deep_available

    ok, why = deep_available(model or DEFAULT_MODEL)
    return ("deep", "learned model available") if ok else ("classic", f"learned model unavailable: {why}")


def segment(image: Volume, seed_ijk: Sequence[int], mode: str = "lesion", within: Volume | None = None,
            within_label: int | None = None, method: str = "classic", add_points: Sequence = (),
            remove_points: Sequence = (), device: str | None = None, model: str | None = None,
            details: dict | None = None) -> Volume:
    """Segment the lesion (``mode='lesion'``) or vertebral body (``'vertebral-body'``) holding the seed.

    ``seed_ijk``: the click's voxel index (i, j, k). ``within``: an optional label map on the image's
    grid that bounds the result (its label ``within_label``, or the one under the seed).
    ``add_points`` / ``remove_points``: corrective clicks (voxel indices) inside / outside the
    structure, for the learned method. ``device``: 'auto', 'cpu' or 'cuda' (learned method).
    ``details``, when given a dict, receives the method used, the device and per-stage seconds.
    Returns a uint8 mask with exactly the image's geometry.
    """
    used, why = choose_method(mode, method, model)
    if details is not None:
        details.update(method=used, method_reason=why)
    if used == "classic":
        if add_points or remove_points:
            raise SpineAIError("corrective add / remove points need the learned method (--method deep)")
        return segment_classic(image, seed_ijk, mode=mode, within=within, within_label=within_label)
    from spineai.image import require_finite
    from spineai.segment.deep import DEFAULT_MODEL, segmenter

    require_finite(image)
    seed = _check_seed(image, seed_ijk)
    adds = [_check_seed(image, p) for p in add_points]
    removes = [_check_seed(image, p) for p in remove_points]
    allowed = _within_mask(image, seed, within, within_label)
    result = segmenter(model or DEFAULT_MODEL, device).segment(image, seed, adds, removes, allowed)
    if details is not None:
        details.update(device=result.device, model=result.model, timings=result.timings)
    return result.mask
