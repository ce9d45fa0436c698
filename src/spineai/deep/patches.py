"""Patches in patient space: sample a model's fixed grid around a point from any image, and map a
result on that grid back onto the image's own voxels.

A patch grid has its own spacing (mm) and axes; with ``rotation`` = identity its axes are the LPS
axes, so a network always sees the anatomy the same way up, whatever the scan's orientation,
spacing or slice thickness. Training uses the same sampler with a rotation, a scale and a wedge
(compressing one side of the anatomy more than the other) as spatial augmentation.

Arrays follow ``Volume``: a patch of shape ``(nz, ny, nx)`` is indexed [z, y, x], x along the patch's
first axis (L with identity rotation), y along the second (P), z along the third (S).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from spineai.image import Volume


@dataclass(frozen=True)
class PatchGrid:
    """A regular grid centred on ``centre_lps`` (mm); ``shape`` is (nz, ny, nx); ``spacing`` mm.

    ``rotation`` (3x3, columns = the patch's x, y, z axes in LPS) and ``wedge`` (the z spacing grows
    linearly along y by this fraction from the centre: a wedge-shaped compression) are augmentations.
    """

    centre_lps: tuple
    shape: tuple
    spacing: float
    rotation: np.ndarray = None
    scale: tuple = (1.0, 1.0, 1.0)
    wedge: float = 0.0

    def points_lps(self) -> np.ndarray:
        """LPS coordinates of every grid point, shape (nz, ny, nx, 3)."""
        nz, ny, nx = self.shape
        z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) - (n - 1) / 2.0 for n in (nz, ny, nx)), indexing="ij")
        sx, sy, sz = (self.spacing * s for s in self.scale)
        local = np.stack([x * sx, y * sy, z * sz * (1.0 + self.wedge * y / max((ny - 1) / 2.0, 1.0))], axis=-1)
        rot = np.eye(3) if self.rotation is None else np.asarray(self.rotation, float)
        return local @ rot.T + np.asarray(self.centre_lps, float)

    def lps_to_patch_index(self, points_lps: np.ndarray) -> np.ndarray:
        """Continuous (x, y, z) patch indices of LPS points (exact without a wedge)."""
        rot = np.eye(3) if self.rotation is None else np.asarray(self.rotation, float)
        local = (np.asarray(points_lps, float) - np.asarray(self.centre_lps, float)) @ rot
        sc = np.array([self.spacing * s for s in self.scale])
        nz, ny, nx = self.shape
        return local / sc + np.array([(nx - 1) / 2.0, (ny - 1) / 2.0, (nz - 1) / 2.0])


def lps_to_continuous_index(volume: Volume, points_lps: np.ndarray) -> np.ndarray:
    """Continuous (i, j, k) voxel indices of LPS points."""
    m = np.asarray(volume.direction) @ np.diag(volume.spacing)
    return (np.asarray(points_lps, float) - np.asarray(volume.origin)) @ np.linalg.inv(m).T


def _normalised(idx: np.ndarray, size_ijk) -> np.ndarray:
    # grid_sample with align_corners=True: -1 and 1 are the centres of the first and last voxels.
    size = np.maximum(np.asarray(size_ijk, float) - 1.0, 1.0)
    return 2.0 * idx / size - 1.0


def sample_patch(volume: Volume, grid: PatchGrid, array=None, mode: str = "bilinear"):
    """Sample ``volume`` (or ``array``, a torch tensor on the volume's grid) on the patch grid.

    Returns (values, inside): float32 tensors of the patch's shape; ``inside`` is 1 where the grid
    point lies within the image (outside values are 0). Only the box of voxels the patch covers is
    converted to a tensor, so a large image costs no more than a small one.
    """
    import torch

    idx = lps_to_continuous_index(volume, grid.points_lps()).astype(np.float32)  # (nz, ny, nx, 3): i, j, k
    size = np.asarray(volume.size_ijk)
    nz, ny, nx = grid.shape
    # The box from the grid's corners (exact for an affine grid; a wedge bends it by less than 2 voxels).
    corners = idx[[0, -1]][:, [0, -1]][:, :, [0, -1]].reshape(-1, 3)
    lo = np.clip(np.floor(corners.min(0)).astype(int) - 2, 0, size - 1)
    hi = np.clip(np.ceil(corners.max(0)).astype(int) + 3, 1, size)
    inside = np.all((idx >= -0.5) & (idx <= size - 0.5), axis=-1)
    if np.any(hi <= lo) or not inside.any():  # the patch misses the image entirely
        return torch.zeros((nz, ny, nx)), torch.zeros((nz, ny, nx))
    if array is None:
        box = volume.array[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
        src = torch.from_numpy(np.ascontiguousarray(box, dtype=np.float32))
    else:
        src = array[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]].float()
    g = _normalised(idx - lo.astype(np.float32), src.shape[::-1]).astype(np.float32)
    out = torch.nn.functional.grid_sample(
        src[None, None], torch.from_numpy(g[None]), mode=mode, padding_mode="border", align_corners=True)[0, 0]
    inside_t = torch.from_numpy(inside.astype(np.float32))
    return out * inside_t, inside_t


def patch_to_volume(patch, grid: PatchGrid, volume: Volume, fill: float = 0.0):
    """Sample a patch result (e.g. a probability map) at the centres of ``volume``'s voxels.

    Returns (values, box): values for the box of voxels the patch covers, as a float32 numpy array
    indexed [k, j, i], and that box as slices into ``volume.array``; voxels outside the patch get
    ``fill``. Exact for grids without a wedge (inference never uses one).
    """
    import torch

    nz, ny, nx = grid.shape
    corners = np.array([[x, y, z] for z in (0, nz - 1) for y in (0, ny - 1) for x in (0, nx - 1)], float)
    idx = lps_to_continuous_index(volume, _patch_index_to_lps(grid, corners))
    size = np.asarray(volume.size_ijk)
    lo = np.clip(np.floor(idx.min(0)).astype(int), 0, size)
    hi = np.clip(np.ceil(idx.max(0)).astype(int) + 1, 0, size)
    box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    if np.any(hi <= lo):
        return np.zeros((0, 0, 0), np.float32), box
    # voxel (i, j, k) -> patch index (x, y, z) is affine: a = P @ (i, j, k) + q, built per axis by
    # broadcasting, so a 1 mm image costs one float32 array of the box's size and no meshgrid.
    m = np.asarray(volume.direction) @ np.diag(volume.spacing)
    rot = np.eye(3) if grid.rotation is None else np.asarray(grid.rotation, float)
    sc = np.array([grid.spacing * s for s in grid.scale])
    centre_idx = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0, (nz - 1) / 2.0])
    P = (rot.T @ m) / sc[:, None]
    q = (rot.T @ (np.asarray(volume.origin) - np.asarray(grid.centre_lps, float))) / sc + centre_idx
    # grid_sample's normalised coordinates: -1 and 1 are the first and last patch voxels.
    norm = 2.0 / np.maximum(np.array([nx, ny, nz], float) - 1.0, 1.0)
    P, q = P * norm[:, None], q * norm - 1.0
    ks, js, is_ = (torch.arange(a, b, dtype=torch.float32) for a, b in zip(lo[::-1], hi[::-1]))
    Pt, qt = torch.from_numpy(P.astype(np.float32)), torch.from_numpy(q.astype(np.float32))
    g = (ks[:, None, None, None] * Pt[:, 2] + js[None, :, None, None] * Pt[:, 1]
         + is_[None, None, :, None] * Pt[:, 0] + qt)
    src = patch if isinstance(patch, torch.Tensor) else torch.from_numpy(np.asarray(patch, np.float32))
    out = torch.nn.functional.grid_sample(src.float()[None, None], g[None], mode="bilinear",
                                          padding_mode="zeros", align_corners=True)[0, 0]
    # Half a voxel past the outermost patch voxels counts as outside.
    limit = 1.0 + norm / 2.0
    outside = (g.abs() > torch.from_numpy(limit.astype(np.float32))).any(-1)
    out[outside] = fill
    return out.numpy(), box


def _patch_index_to_lps(grid: PatchGrid, idx_xyz: np.ndarray) -> np.ndarray:
    nz, ny, nx = grid.shape
    rot = np.eye(3) if grid.rotation is None else np.asarray(grid.rotation, float)
    sc = np.array([grid.spacing * s for s in grid.scale])
    local = (np.asarray(idx_xyz, float) - np.array([(nx - 1) / 2.0, (ny - 1) / 2.0, (nz - 1) / 2.0])) * sc
    return local @ rot.T + np.asarray(grid.centre_lps, float)


def gaussian_points(shape: Sequence[int], points_xyz, sigma_vox: float):
    """A [0, 1] map with a Gaussian blob (peak 1) at each patch point (x, y, z); zeros when none."""
    import torch

    out = torch.zeros(tuple(shape))
    reach = int(np.ceil(3 * sigma_vox))
    for p in points_xyz:
        c = np.round(np.asarray(p, float)[::-1]).astype(int)  # (z, y, x)
        lo = np.maximum(c - reach, 0)
        hi = np.minimum(c + reach + 1, shape)
        if np.any(hi <= lo):
            continue
        axes = [torch.arange(a, b, dtype=torch.float32) - float(q) for a, b, q in zip(lo, hi, np.asarray(p, float)[::-1])]
        d2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
        win = out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        torch.maximum(win, torch.exp(-d2 / (2.0 * sigma_vox ** 2)), out=win)
    return out


def robust_normalise(values, inside, low: float = 1.0, high: float = 99.0):
    """Scale so that the ``low`` / ``high`` percentiles of the in-image voxels map to 0 / 1.

    Percentiles, not a fixed range: MR intensities have no units, and T1, T2, STIR and water-fat
    images then all arrive in one range."""
    import torch

    vals = values.numpy()[inside.numpy() > 0]
    if vals.size < 16:
        return torch.zeros_like(values)
    lo, hi = np.percentile(vals[:: max(1, vals.size // 32768)], [low, high])
    if hi - lo <= 1e-6:
        return torch.zeros_like(values)
    return ((values - float(lo)) / float(hi - lo)).clamp(-0.5, 1.5) * inside
