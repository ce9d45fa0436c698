"""Find and name the lumbar discs on MR: L1/L2 ... L5/S1 as points in LPS millimetres.

A small 3D U-Net sees the whole field of view resampled to 2 mm on LPS axes (any orientation,
spacing or slice thickness) and labels each voxel background, vertebral body, or L5's body. The
bodies are the connected parts of its body map (refined to 1 mm by interpolating the probabilities);
L5 is the body the network calls L5 (the one above the sacrum), and the bodies above it are L4, L3,
... in order. Each body's endplate centres are where its axis (the line through the centres of its
neighbours) leaves it; a disc lies halfway between the lower endplate of one body and the upper
endplate of the next, and L5/S1 (the sacrum is not labelled) at the centre of L5's lower endplate.
The same geometry gives the reference discs from manual body masks (``reference_levels``).

The network and its preprocessing come from the bundle's card (task ``lumbar-levels``); the default
bundle ships inside the package and is pinned by sha256 in the registry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from spineai.errors import SpineAIError
from spineai.image import Volume

TASK = "lumbar-levels"
DEFAULT_MODEL = "spineai-lumbar-levels"
LUMBAR_DISCS = ("L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1")
# Bodies named from the lowest lumbar one upward.
BODY_NAMES_UP = ("L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8", "T7", "T6")
CLASSES = ("background", "body", "L5")
ENDPLATE_RADIUS_MM = 5.0  # the endplate centre: the farthest body voxel within this distance of the axis
SPLIT_RADIUS_MM = 3.0  # bridges thinner than twice this are cut between bodies
MIN_BODY_ML = 2.0  # smaller parts of the body map are noise (a whole body holds 20-45 mL)


@dataclass
class Body:
    name: str
    centre: np.ndarray  # LPS mm, the centroid
    upper_endplate: np.ndarray  # LPS mm, centre of the upper (superior) endplate
    lower_endplate: np.ndarray
    volume_ml: float
    l5_score: float = float("nan")  # mean L5 probability over the body (learned bodies only)


@dataclass
class LevelResult:
    discs: dict  # name -> (x, y, z) LPS mm, lumbar discs only, top to bottom
    bodies: list  # Body, top to bottom
    timings: dict = field(default_factory=dict)
    device: str = "cpu"
    model: str = ""
    demonstration: bool = False

    def body_points(self) -> dict:
        """{body name: (x, y, z)} LPS mm of each body's centre (for markups)."""
        return {b.name: tuple(float(v) for v in b.centre) for b in self.bodies}


# ---- geometry shared by reference and prediction ------------------------------------------------

def endplates(bodies_points: Sequence[np.ndarray], voxel_mm: float) -> list[tuple]:
    """(centre, upper, lower) endplate centres (LPS mm) of bodies given as point clouds (voxel
    centres, LPS mm) sorted top to bottom. The axis of a body runs through its neighbours' centres
    (one-sided at the ends; S-I for a lone body); an endplate centre is the farthest point along the
    axis within ``ENDPLATE_RADIUS_MM`` of it, plus half a voxel to reach the surface."""
    centres = [np.asarray(p, float).mean(0) for p in bodies_points]
    out = []
    n = len(centres)
    for i, pts in enumerate(bodies_points):
        pts = np.asarray(pts, float)
        lo, hi = centres[max(i - 1, 0)], centres[min(i + 1, n - 1)]
        axis = hi - lo if n > 1 else np.array([0.0, 0.0, -1.0])  # downward (LPS z is superior)
        axis = axis / max(np.linalg.norm(axis), 1e-9)
        rel = pts - centres[i]
        t = rel @ axis
        radial = np.linalg.norm(rel - t[:, None] * axis, axis=1)
        near = t[radial <= ENDPLATE_RADIUS_MM]
        if near.size == 0:
            near = t
        half = 0.5 * voxel_mm
        out.append((centres[i], centres[i] + (near.min() - half) * axis, centres[i] + (near.max() + half) * axis))
    return out


def name_bodies(count: int, l5_index: int) -> list[Optional[str]]:
    """Names of ``count`` bodies sorted top to bottom when the body at ``l5_index`` is L5 (bodies
    below it get None)."""
    names: list[Optional[str]] = []
    for i in range(count):
        up = l5_index - i
        names.append(BODY_NAMES_UP[up] if 0 <= up < len(BODY_NAMES_UP) else None)
    return names


def discs_from_bodies(bodies: Sequence[Body]) -> dict:
    """{disc name: LPS point}: between consecutive named bodies; L5/S1 at L5's lower endplate."""
    discs = {}
    for upper, lower in zip(bodies[:-1], bodies[1:]):
        discs[f"{upper.name}/{lower.name}"] = (upper.lower_endplate + lower.upper_endplate) / 2.0
    for b in bodies:
        if b.name == "L5":
            discs["L5/S1"] = b.lower_endplate.copy()
    return discs


def _bodies(points: Sequence[np.ndarray], names: Sequence[str], voxel_mm: float, l5_scores=None) -> list[Body]:
    geo = endplates(points, voxel_mm)
    return [Body(n, c, u, lo, len(p) * voxel_mm ** 3 / 1000.0,
                 float("nan") if l5_scores is None else float(l5_scores[i]))
            for i, (n, p, (c, u, lo)) in enumerate(zip(names, points, geo))]


def _voxel_points(volume: Volume, mask: np.ndarray) -> np.ndarray:
    kji = np.argwhere(mask)
    m = volume.ijk_to_lps_matrix()
    return kji[:, ::-1].astype(float) @ m[:3, :3].T + m[:3, 3]


def reference_levels(labels: Volume) -> LevelResult:
    """Reference bodies and discs from a body label map (one label per body, any label order, the
    lowest body being L5, as in ``spine-mr-bodies``)."""
    values = [int(v) for v in np.unique(labels.array) if v != 0]
    if not values:
        raise SpineAIError("the body label map is empty")
    points = [_voxel_points(labels, labels.array == v) for v in values]
    order = np.argsort([-p[:, 2].mean() for p in points])  # LPS z is superior: top first
    points = [points[i] for i in order]
    names = name_bodies(len(points), len(points) - 1)
    bodies = _bodies(points, names, float(np.cbrt(np.prod(labels.spacing))))
    discs = discs_from_bodies(bodies)
    return LevelResult({k: tuple(float(x) for x in discs[k]) for k in LUMBAR_DISCS if k in discs}, bodies)


# ---- the learned locator -------------------------------------------------------------------------

def whole_image_grid(image: Volume, spacing: float, multiple: int = 16):
    """A PatchGrid on LPS axes covering the whole image at ``spacing`` mm, each size a multiple of
    ``multiple`` (the network's total stride)."""
    from spineai.deep.patches import PatchGrid

    size = np.asarray(image.size_ijk, float)
    corners = np.array([[a, b, c] for a in (-0.5, size[0] - 0.5) for b in (-0.5, size[1] - 0.5)
                        for c in (-0.5, size[2] - 0.5)])
    m = image.ijk_to_lps_matrix()
    lps = corners @ m[:3, :3].T + m[:3, 3]
    lo, hi = lps.min(0), lps.max(0)
    n_xyz = np.maximum(np.ceil((hi - lo) / spacing / multiple), 1).astype(int) * multiple
    return PatchGrid(tuple((lo + hi) / 2.0), (int(n_xyz[2]), int(n_xyz[1]), int(n_xyz[0])), float(spacing))


def check_image(image) -> Volume:
    """A Volume from a SimpleITK image or Volume, refusing what cannot hold a lumbar spine."""
    from spineai.image import require_finite

    if not isinstance(image, Volume):
        try:
            image = Volume.from_sitk(image)
        except (AttributeError, TypeError):
            raise SpineAIError(f"expected a SimpleITK image or a spineai Volume, got {type(image).__name__}") from None
    require_finite(image)
    arr = image.array
    if arr.size == 0 or arr.min() == arr.max():
        raise SpineAIError("the image is empty or constant: there is no spine to find levels in")
    extent = np.asarray(image.size_ijk) * np.asarray(image.spacing)
    if extent.min() < 20.0:
        raise SpineAIError(f"the image covers only {' x '.join(f'{e:.0f}' for e in extent)} mm (i x j x k): "
                           "locating discs needs a 3D volume (a sagittal series of several slices), not one slice")
    return image


def network_probabilities(network, image: Volume, spacing: float, percentiles=(1.0, 99.0), device=None):
    """Softmax probabilities (3, nz, ny, nx) on the whole-image grid, and that grid."""
    import torch

    from spineai.deep.device import autocast
    from spineai.deep.patches import robust_normalise, sample_patch

    grid = whole_image_grid(image, spacing)
    values, inside = sample_patch(image, grid)
    x = robust_normalise(values, inside, *percentiles)[None, None]
    device = device or next(network.parameters()).device
    with torch.inference_mode(), autocast(device):
        logits = network(x.to(device)).float()
    return torch.softmax(logits, 1)[0].cpu(), grid


def bodies_from_probabilities(prob, grid, min_ml: float = MIN_BODY_ML) -> list[Body]:
    """Named bodies (top to bottom) from the network's (3, nz, ny, nx) probabilities on ``grid``.

    The body map is interpolated to half the grid spacing before thresholding, so that endplates
    fall between the network's voxels; parts smaller than ``min_ml`` are dropped, and so are bodies
    below L5 (the sacrum)."""
    import torch
    from scipy import ndimage

    fg = (prob[1] + prob[2])[None, None]
    fine = torch.nn.functional.interpolate(fg, scale_factor=2, mode="trilinear", align_corners=False)[0, 0].numpy()
    l5 = torch.nn.functional.interpolate(prob[2][None, None], scale_factor=2, mode="trilinear",
                                         align_corners=False)[0, 0].numpy()
    step = grid.spacing / 2.0
    labels, n = split_bodies(fine >= 0.5, step)
    if n == 0:
        return []
    counts = np.bincount(labels.ravel())
    l5_sum = ndimage.sum_labels(l5, labels, index=np.arange(n + 1))
    keep = [lab for lab in range(1, n + 1) if counts[lab] * step ** 3 / 1000.0 >= min_ml]
    if not keep:
        return []
    nz, ny, nx = fine.shape
    # Fine voxel centre (z, y, x) -> LPS: the fine grid spans the coarse grid's extent.
    origin = np.array(grid.centre_lps, float) - np.array([nx, ny, nz], float) * step / 2.0 + step / 2.0
    points, scores = [], []
    objects = ndimage.find_objects(labels)
    for lab in keep:
        sl = objects[lab - 1]
        zyx = np.argwhere(labels[sl] == lab) + np.array([s.start for s in sl])
        points.append(zyx[:, ::-1] * step + origin)
        scores.append(l5_sum[lab] / counts[lab])
    order = np.argsort([-p[:, 2].mean() for p in points])
    points = [points[i] for i in order]
    scores = np.asarray(scores)[order]
    # L5: the body the network calls L5 most; without a clear one, the lowest body.
    l5_index = int(np.argmax(scores)) if scores.max() >= 0.5 else len(points) - 1
    points, scores = points[: l5_index + 1], scores[: l5_index + 1]
    names = name_bodies(len(points), l5_index)
    return [b for b in _bodies(points, names, step, scores) if b.name is not None]


def split_bodies(mask: np.ndarray, step: float, radius_mm: float = SPLIT_RADIUS_MM) -> tuple[np.ndarray, int]:
    """Label the bodies of a body mask, cutting the thin bridges that join neighbours across a disc:
    an opening by a ball of ``radius_mm`` (the cores, where the mask is deeper than the radius, are
    the bodies; each voxel within the radius of a core goes to its nearest core)."""
    from scipy import ndimage

    out = np.zeros(mask.shape, np.int32)
    if not mask.any():
        return out, 0
    # Within the mask's box and one voxel around it, the result is exact and the transforms cheap.
    box = tuple(slice(max(int(np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0]) - 1, 0),
                      int(np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[-1]) + 2)
                for ax in range(3))
    sub = mask[box]
    core = ndimage.distance_transform_edt(sub, sampling=step) > radius_mm
    markers, n = ndimage.label(core)
    if n == 0:
        return out, 0
    dist, idx = ndimage.distance_transform_edt(~core, sampling=step, return_indices=True)
    labels = markers[tuple(idx)]
    labels[~sub | (dist > radius_mm + step)] = 0
    out[box] = labels
    return out, n


class LevelLocator:
    """A loaded lumbar-levels bundle on a device; reuse it for many images."""

    def __init__(self, model: Optional[str] = None, device: Optional[str] = None, network=None, card=None):
        from spineai.deep.device import require_torch, select_device

        require_torch()
        self.device = select_device(device)
        if network is None:
            from spineai.deep.bundle import load_torch_bundle

            bundle = load_torch_bundle(model or DEFAULT_MODEL, task=TASK)
            network, card = bundle.network, bundle.card
        self.network = network.to(self.device)
        self.card = card or {}
        pre = self.card.get("preprocessing", {})
        self.spacing = float(pre.get("spacing_mm", 2.0))
        self.percentiles = tuple(float(q) for q in pre.get("percentiles", (1.0, 99.0)))

    @property
    def name(self) -> str:
        return f"{self.card.get('id', '?')} {self.card.get('version', '')}".strip()

    def locate(self, image) -> LevelResult:
        from spineai.deep.device import describe

        t0 = time.perf_counter()
        volume = check_image(image)
        t1 = time.perf_counter()
        prob, grid = network_probabilities(self.network, volume, self.spacing, self.percentiles, self.device)
        t2 = time.perf_counter()
        bodies = bodies_from_probabilities(prob, grid)
        if not bodies:
            raise SpineAIError("no vertebral body was found in the image: is it a lumbar spine MR covering the "
                               f"bodies? (largest body probability {float((prob[1] + prob[2]).max()):.2f})")
        discs = discs_from_bodies(bodies)
        t3 = time.perf_counter()
        return LevelResult({k: tuple(float(x) for x in discs[k]) for k in LUMBAR_DISCS if k in discs}, bodies,
                           {"checks": t1 - t0, "network": t2 - t1, "bodies": t3 - t2, "total": t3 - t0},
                           describe(self.device), self.name, bool(self.card.get("demonstration")))


_CACHE: dict = {}


def locator(model: Optional[str] = None, device: Optional[str] = None) -> LevelLocator:
    """A cached LevelLocator: a process pays for loading once."""
    key = (str(model or DEFAULT_MODEL), device or "")
    if key not in _CACHE:
        _CACHE[key] = LevelLocator(model, device)
    return _CACHE[key]


def locate_levels(image, device: Optional[str] = None, model: Optional[str] = None) -> LevelResult:
    """Discs and bodies (names, LPS points, endplates) of a lumbar MR image."""
    volume = check_image(image)  # a bad image is reported before any model is loaded
    return locator(model, device).locate(volume)


def locate_discs(image, device: Optional[str] = None, model: Optional[str] = None) -> dict:
    """{"L1/L2": (x, y, z), ..., "L5/S1": (x, y, z)} in LPS mm for a SimpleITK (or spineai Volume)
    lumbar MR image of any orientation; levels not found are absent. Raises SpineAIError when no
    disc is found."""
    result = locate_levels(image, device, model)
    if not result.discs:
        raise SpineAIError(f"no lumbar disc was found: the bodies found were {', '.join(b.name for b in result.bodies)}")
    return result.discs
