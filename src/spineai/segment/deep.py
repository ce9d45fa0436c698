"""Learned click segmentation of a vertebral body (DeepGrow / DeepEdit style).

A 3D U-Net sees a patch around the first click, resampled to the model's spacing and to LPS axes
(so any orientation, spacing or slice thickness works), with two guidance channels: Gaussian blobs
at the clicks inside the body (the first click plus any "add" clicks) and at "remove" clicks outside
it. Its probability map is sampled back at the centres of the image's own voxels, thresholded, and
the connected part that holds the click is the body: the mask has exactly the image's geometry.

The network, its arguments and the preprocessing come from the bundle's card; the default bundle
ships inside the package (``resources/models``) and is pinned by sha256 in the registry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from spineai.errors import SpineAIError
from spineai.image import Volume

TASK = "click-segmentation"
DEFAULT_MODEL = "spineai-body-click"


@dataclass
class DeepResult:
    mask: Volume
    probability_max: float
    timings: dict = field(default_factory=dict)  # seconds per stage
    device: str = "cpu"
    model: str = ""


class ClickSegmenter:
    """A loaded click-segmentation bundle on a device; reuse it for many clicks."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str | None = None):
        from spineai.deep.bundle import load_torch_bundle
        from spineai.deep.device import require_torch, select_device

        require_torch()
        self.device = select_device(device)
        self.bundle = load_torch_bundle(model, task=TASK)
        self.network = self.bundle.network.to(self.device)
        pre = self.bundle.card["preprocessing"]
        self.shape = tuple(int(n) for n in pre["patch_shape"])
        self.spacing = float(pre["spacing_mm"])
        self.sigma = float(pre["guidance_sigma_vox"])
        self.percentiles = tuple(float(q) for q in pre.get("percentiles", (1.0, 99.0)))
        self.threshold = float(pre.get("threshold", 0.5))
        # Average with the left-right mirrored patch (the spine is nearly symmetric): steadier
        # borders for about 1.6x the network's time.
        self.flip_average = bool(pre.get("flip_average", False))

    @property
    def name(self) -> str:
        return f"{self.bundle.card.get('id', '?')} {self.bundle.card.get('version', '')}".strip()

    def inputs(self, image: Volume, grid, add_lps: Sequence, remove_lps: Sequence):
        """The network's (3, nz, ny, nx) input for a patch grid: image, add guidance, remove guidance."""
        return model_input(image, grid, add_lps, remove_lps, self.sigma, self.percentiles)

    def probability(self, image: Volume, seed_ijk: Sequence[int], add_ijk: Sequence = (), remove_ijk: Sequence = ()):
        """The network's probability map for a click, on the image's own voxels: (values, box, seconds),
        ``values`` for the box of voxels the patch covers (``image.array[box]``)."""
        import torch

        from spineai.deep.device import autocast
        from spineai.deep.patches import PatchGrid, patch_to_volume

        t0 = time.perf_counter()
        m = image.ijk_to_lps_matrix()
        to_lps = lambda p: (m @ np.append(np.asarray(p, float), 1.0))[:3]  # noqa: E731
        seed_lps = to_lps(seed_ijk)
        grid = PatchGrid(tuple(seed_lps), self.shape, self.spacing)
        x = self.inputs(image, grid, [seed_lps] + [to_lps(p) for p in add_ijk], [to_lps(p) for p in remove_ijk])
        t1 = time.perf_counter()
        batch = torch.stack([x, x.flip(-1)]) if self.flip_average else x[None]
        with torch.inference_mode(), autocast(self.device):
            prob = torch.sigmoid(self.network(batch.to(self.device))[:, 0].float()).cpu()
        prob = (prob[0] + prob[1].flip(-1)) / 2 if self.flip_average else prob[0]
        t2 = time.perf_counter()
        values, box = patch_to_volume(prob, grid, image)
        return values, box, {"resample": t1 - t0, "network": t2 - t1, "back-project": time.perf_counter() - t2}

    def segment(self, image: Volume, seed_ijk: Sequence[int], add_ijk: Sequence = (), remove_ijk: Sequence = (),
                allowed: np.ndarray | None = None, threshold: float | None = None) -> DeepResult:
        from spineai.deep.device import describe

        t0 = time.perf_counter()
        values, box, seconds = self.probability(image, seed_ijk, add_ijk, remove_ijk)
        t1 = time.perf_counter()
        mask = mask_from_probability(values, box, image.array.shape, self.threshold if threshold is None else threshold,
                                     seed_ijk, add_ijk, remove_ijk, allowed)
        if not mask.any():
            raise SpineAIError(
                "the learned model found no vertebral body at this click (probability "
                f"{float(values.max()) if values.size else 0.0:.2f} at most): click inside a vertebral body, "
                "or use --method classic")
        seconds["back-project"] += time.perf_counter() - t1
        seconds["total"] = time.perf_counter() - t0
        return DeepResult(Volume(mask, image.spacing, image.origin, image.direction),
                          float(values.max()) if values.size else 0.0, seconds, describe(self.device), self.name)


def mask_from_probability(values: np.ndarray, box, shape, threshold: float, seed_ijk, add_ijk=(), remove_ijk=(),
                          allowed: np.ndarray | None = None) -> np.ndarray:
    """Threshold, keep out of ``allowed``'s complement and off the remove clicks, and keep the parts
    that hold the clicks. Works within the patch's box only: the cost does not grow with the image."""
    lo = np.array([s.start for s in box])  # k, j, i
    local = lambda p: tuple(int(round(c)) - o for c, o in zip(p[::-1], lo))  # noqa: E731
    sub = (values >= threshold).astype(np.uint8)
    if allowed is not None:
        sub &= allowed[box].astype(np.uint8)
    for p in remove_ijk:  # a remove click is never inside the result
        kji = local(p)
        if all(0 <= c < n for c, n in zip(kji, sub.shape)):
            sub[kji] = 0
    inside = [p for p in [seed_ijk, *add_ijk] if all(0 <= c < n for c, n in zip(local(p), sub.shape))]
    sub = _component_at(sub, [tuple(np.array(local(p))[::-1]) for p in inside])
    mask = np.zeros(shape, np.uint8)
    mask[box] = sub
    return mask


def model_input(image: Volume, grid, add_lps, remove_lps, sigma: float, percentiles=(1.0, 99.0), raw=None):
    """Image channel (robustly normalised) + add / remove guidance channels, on the patch grid.

    ``raw``: an already sampled image patch and its inside mask (training augments between the two
    steps)."""
    import torch

    from spineai.deep.patches import gaussian_points, robust_normalise, sample_patch

    values, inside = raw if raw is not None else sample_patch(image, grid)
    img = robust_normalise(values, inside, *percentiles)
    pos = gaussian_points(grid.shape, _patch_points(grid, add_lps), sigma)
    neg = gaussian_points(grid.shape, _patch_points(grid, remove_lps), sigma)
    return torch.stack([img, pos, neg]).float()


def _patch_points(grid, points_lps):
    if len(points_lps) == 0:
        return []
    return list(grid.lps_to_patch_index(np.asarray(points_lps, float).reshape(-1, 3)))


def _component_at(mask: np.ndarray, points_ijk) -> np.ndarray:
    """The connected parts of ``mask`` that hold a click (or, when a click lies just outside, the
    part nearest to it within 3 voxels); the rest is dropped."""
    from scipy import ndimage

    if not mask.any():
        return mask
    labels, n = ndimage.label(mask)
    if n == 1:
        return mask
    keep = set()
    for p in points_ijk:
        i, j, k = (int(round(c)) for c in p)
        lo = [max(c - 3, 0) for c in (k, j, i)]
        window = labels[lo[0]:k + 4, lo[1]:j + 4, lo[2]:i + 4]
        if labels[k, j, i]:
            keep.add(int(labels[k, j, i]))
        elif window.any():
            ids, counts = np.unique(window[window > 0], return_counts=True)
            keep.add(int(ids[np.argmax(counts)]))
    if not keep:
        return np.zeros_like(mask)
    return np.isin(labels, sorted(keep)).astype(np.uint8)


_CACHE: dict = {}


def segmenter(model: str = DEFAULT_MODEL, device: str | None = None) -> ClickSegmenter:
    """A cached ClickSegmenter: the command line and Slicer pay for loading once per process."""
    key = (str(model), device or "")
    if key not in _CACHE:
        _CACHE[key] = ClickSegmenter(model, device)
    return _CACHE[key]


def deep_available(model: str = DEFAULT_MODEL) -> tuple[bool, str]:
    """(True, '') when torch, MONAI and the model bundle are there, else (False, why).

    Only finds the bundle, without reading it: loading verifies it (sha256, manifest) once, and a
    damaged or tampered bundle is then an error to report, not a reason to fall back quietly."""
    try:
        import torch  # noqa: F401
        import monai  # noqa: F401
    except ImportError as exc:
        return False, f"{exc.name} is not installed"
    from pathlib import Path

    if Path(model).exists():
        return True, ""
    try:
        from spineai.models.registry import resolve

        resolve(str(model))
    except SpineAIError as exc:
        return False, str(exc)
    return True, ""
