"""Generated SD / MET / STB lesions inside real vertebral bodies, for the demonstration image model.

No labelled spondylodiscitis / metastasis / tuberculosis MR images are public, so the demonstration
model learns from lesions drawn into the healthy spines of ``spine-mr-bodies`` (real anatomy, real
contrast, real noise), each with its class's published imaging pattern:

- SD (pyogenic spondylodiscitis): disc-centred; the disc bright; both endplates eroded
  (irregular); marrow oedema mirrored in the two adjacent bodies, fading away from the disc.
- MET (metastasis): one to three focal round lesions in one body, mostly in its posterior part,
  sometimes reaching the pedicle; the disc spared.
- STB (spinal tuberculosis): two or three contiguous bodies with patchy, anterior-predominant
  oedema; subligamentous spread along their front; a large smooth-walled paraspinal abscess with a
  thin dark rim; the discs relatively preserved.

Each lesion is generated in patient space (millimetres, LPS), so any orientation and spacing
work. What this can teach: where to look and which configurations tell the classes apart. What it
cannot: the true appearance, variability and mimics of disease; the model's scores on generated
lesions say the pipeline works, never that it diagnoses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from spineai.errors import SpineAIError
from spineai.image import Volume, read_volume

CLASSES = ("SD", "MET", "STB")
SHIFT_MM = (3.0, 15.0, 15.0)  # training crops' random shift (L-R, A-P, S-I): see lesion_crops


@dataclass
class GeneratedLesion:
    image: Volume  # the case's image with the lesion drawn in
    mask: Volume  # uint8, 1 on every voxel the lesion changed
    kind: str
    bodies: list  # labels of the bodies involved (superior first)


@dataclass
class _Body:
    label: int
    centre: np.ndarray  # LPS mm
    lo: np.ndarray  # LPS bounding box of the body
    hi: np.ndarray


def _bodies(labels: Volume) -> list:
    """Bodies with their LPS centre and extent, superior first (the labels' order is not anatomical)."""
    from scipy import ndimage

    lab = labels.array.astype(np.int32)
    m = labels.ijk_to_lps_matrix()
    out = []
    for value, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        kji = np.argwhere(lab[sl] == value) + np.array([s.start for s in sl])
        if len(kji) < 500:
            continue
        pts = kji[:, ::-1] @ m[:3, :3].T + m[:3, 3]
        out.append(_Body(value, pts.mean(0), pts.min(0), pts.max(0)))
    return sorted(out, key=lambda b: -b.centre[2])


def _box(volume: Volume, lo_lps, hi_lps):
    """Slices of the voxel box covering an LPS box, and the LPS coordinates of its voxels (..., 3)."""
    m = volume.ijk_to_lps_matrix()
    corners = np.array([[x, y, z] for x in (lo_lps[0], hi_lps[0]) for y in (lo_lps[1], hi_lps[1])
                        for z in (lo_lps[2], hi_lps[2])])
    ijk = (corners - m[:3, 3]) @ np.linalg.inv(m[:3, :3]).T
    size = np.asarray(volume.size_ijk)
    lo = np.clip(np.floor(ijk.min(0)).astype(int), 0, size)
    hi = np.clip(np.ceil(ijk.max(0)).astype(int) + 1, 0, size)
    box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    k, j, i = np.meshgrid(*(np.arange(a, b, dtype=np.float32) for a, b in zip(lo[::-1], hi[::-1])), indexing="ij")
    pts = np.stack([i, j, k], -1) @ m[:3, :3].T.astype(np.float32) + m[:3, 3].astype(np.float32)
    return box, pts


def _texture(rng, shape, sigma=2.0):
    from spineai.phantom import _smooth_noise  # the phantom's correlated noise: one definition

    return _smooth_noise(rng, shape, sigma) if min(shape) > 0 else np.zeros(shape, np.float32)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def generate_lesion(image: Volume, labels: Volume, kind: str, rng: np.random.Generator,
                    first_body: Optional[int] = None) -> GeneratedLesion:
    """Draw one lesion of ``kind`` into a copy of ``image``; ``labels`` holds one label per body.
    ``first_body`` (index in superior-to-inferior order) picks where; default random."""
    if kind not in CLASSES:
        raise SpineAIError(f"unknown lesion kind {kind!r} (choose from {', '.join(CLASSES)})")
    bodies = _bodies(labels)
    need = {"SD": 2, "MET": 1, "STB": 3}[kind]
    if len(bodies) < need:
        raise SpineAIError(f"a {kind} lesion needs {need} labelled bodies; the label map has {len(bodies)}")
    span = int(rng.integers(2, 4)) if kind == "STB" else need
    start = int(rng.integers(0, len(bodies) - span + 1)) if first_body is None else int(first_body)
    if not 0 <= start <= len(bodies) - span:
        raise SpineAIError(f"body index {first_body} leaves no room for a {kind} lesion")
    chosen = bodies[start:start + span]
    lo = np.min([b.lo for b in chosen], 0) - 30.0
    hi = np.max([b.hi for b in chosen], 0) + 30.0
    box, pts = _box(image, lo, hi)
    arr = image.array.astype(np.float32)
    sub = arr[box].copy()
    lab = labels.array[box].astype(np.int32)
    in_body = {b.label: lab == b.label for b in chosen}
    any_body = lab > 0
    marrow = float(np.median(sub[any_body])) if any_body.any() else float(np.median(sub))
    bright = float(np.percentile(arr[arr > 0] if (arr > 0).any() else arr, 99.5))
    dark = float(np.percentile(arr[arr > 0] if (arr > 0).any() else arr, 5))
    lesion = np.zeros(sub.shape, bool)
    tex = _texture(rng, sub.shape)
    x, y, z = pts[..., 0], pts[..., 1], pts[..., 2]

    if kind == "SD":
        up, low = chosen
        z_up, z_low = up.lo[2], low.hi[2]  # the upper body's inferior and the lower body's superior endplates
        zc = 0.5 * (z_up + z_low)
        c = 0.5 * (up.centre + low.centre)
        ax = 0.5 * np.mean([up.hi[0] - up.lo[0], low.hi[0] - low.lo[0]])
        ay = 0.5 * np.mean([up.hi[1] - up.lo[1], low.hi[1] - low.lo[1]])
        half = max(0.5 * (z_up - z_low), 2.0) + 2.0
        disc = (((x - c[0]) / ax) ** 2 + ((y - c[1]) / ay) ** 2 <= 1.0) & (np.abs(z - zc) <= half) & ~any_body
        sub[disc] = bright * rng.uniform(0.85, 1.05) * (1 + 0.08 * tex[disc])
        lesion |= disc
        erosion_depth = rng.uniform(3.0, 7.0)
        decay = rng.uniform(7.0, 14.0)
        amp = rng.uniform(0.45, 0.8) * (bright - marrow)  # one amplitude for both bodies: mirrored oedema
        for body, dist in ((up, z - z_up), (low, z_low - z)):
            inside = in_body[body.label]
            d = np.where(inside, np.maximum(dist, 0.0), np.inf)
            eroded = inside & (d <= erosion_depth * (1.0 + 0.45 * tex))  # irregular erosion front
            w = np.exp(-d / decay) * inside
            sub += (amp * w * (1 + 0.15 * tex)).astype(np.float32)
            sub[eroded] = np.where(tex[eroded] > 0.3, dark, bright * 0.9)
            lesion |= eroded | (w > 0.3)
    elif kind == "MET":
        body = chosen[0]
        inside = in_body[body.label]
        size = body.hi - body.lo
        n = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        hyper = rng.random() < 0.7  # lytic (T2-bright) or sclerotic (dark)
        for n_i in range(n):
            r = rng.uniform(4.0, 9.0)
            if n_i == 0 and rng.random() < 0.35:  # reaching the pedicle: the posterolateral corner
                ctr = np.array([body.centre[0] + rng.choice([-1, 1]) * 0.3 * size[0], body.hi[1] - 0.3 * r,
                                body.centre[2] + rng.uniform(-0.15, 0.15) * size[2]])
            else:  # posterior two thirds of the body, mostly
                ctr = np.array([body.centre[0] + rng.uniform(-0.3, 0.3) * size[0],
                                body.centre[1] + rng.uniform(-0.1, 0.35) * size[1],
                                body.centre[2] + rng.uniform(-0.25, 0.25) * size[2]])
            dist = np.sqrt((x - ctr[0]) ** 2 + (y - ctr[1]) ** 2 + (z - ctr[2]) ** 2)
            w = _sigmoid((r - dist) / 0.8)
            target = bright * rng.uniform(0.8, 1.0) if hyper else dark * rng.uniform(0.8, 1.3)
            sub += (w * (target - sub) * (1 + 0.1 * tex)).astype(np.float32)
            lesion |= w > 0.5
    else:  # STB
        union = np.zeros(sub.shape, bool)
        for body in chosen:
            inside = in_body[body.label]
            union |= inside
            depth = rng.uniform(0.35, 0.7) * (body.hi[1] - body.lo[1])
            w = _sigmoid((body.lo[1] + depth - y) / 3.0) * inside * np.clip(0.6 + 0.5 * tex, 0, 1.2)  # anterior, patchy
            sub += (rng.uniform(0.45, 0.8) * (bright - marrow) * w).astype(np.float32)
            lesion |= w > 0.3
        top, bottom = chosen[0].hi[2], chosen[-1].lo[2]
        front = np.min([b.lo[1] for b in chosen])
        xc = np.mean([b.centre[0] for b in chosen])
        half_w = 0.5 * np.mean([b.hi[0] - b.lo[0] for b in chosen])
        thick = rng.uniform(2.0, 4.0)
        band = (y >= front - thick) & (y <= front + 1.5) & (np.abs(x - xc) <= 0.6 * half_w) & \
               (z <= top + 3) & (z >= bottom - 3) & ~union
        sub[band] = bright * rng.uniform(0.8, 0.95)
        lesion |= band
        zc = 0.5 * (top + bottom)
        radii = np.array([rng.uniform(10.0, 17.0), rng.uniform(8.0, 13.0), 0.5 * (top - bottom) * rng.uniform(0.7, 1.0)])
        ctr = np.array([xc + rng.choice([-1, 1]) * half_w * rng.uniform(0.3, 0.9), front - radii[1] * rng.uniform(0.3, 0.7), zc])
        d = [(x - ctr[0]) / radii[0], (y - ctr[1]) / radii[1], (z - ctr[2]) / radii[2]]
        rho = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
        grad = np.sqrt(sum((di / r) ** 2 for di, r in zip(d, radii))) / np.maximum(rho, 1e-3)
        shell = (rho <= 1.0) & ~union
        rim = shell & ((1.0 - rho) / np.maximum(grad, 1e-6) <= 1.5)  # a 1.5 mm wall, whatever the radii
        cavity = shell & ~rim
        sub[cavity] = bright * rng.uniform(0.9, 1.05) * (1 + 0.03 * tex[cavity])  # smooth fluid
        sub[rim] = marrow * 0.45
        lesion |= cavity | rim
    if not lesion.any():
        raise SpineAIError(f"the {kind} lesion fell outside the image")
    lo_val, hi_val = (0.0, 255.0) if image.array.dtype == np.uint8 else (float(arr.min()), float(arr.max()) * 1.2)
    arr[box] = np.clip(sub, lo_val, hi_val)
    mask = np.zeros(arr.shape, np.uint8)
    mask[box] = lesion
    return GeneratedLesion(image.with_array(arr), image.with_array(mask), kind, [b.label for b in chosen])


# ---- the demonstration data set -----------------------------------------------------------------

def lesion_examples(folder: str | Path, names, recipe: dict, per_class: int, seed: int, augmented: int = 0,
                    progress=None) -> dict:
    """Crops of generated lesions: ``per_class`` lesions of each class in each case of ``names``.

    ``augmented`` = 0: one crop per lesion at its mask's centroid (evaluation, what ``--mask`` does);
    > 0: that many crops per lesion, each centred on the centroid or on a random lesion voxel (a
    click), rotated up to 12 deg and scaled 0.9-1.1 (training). Returns arrays: ``x`` (N, C, ...),
    ``y``, ``region`` (the lesion on the crop grid, for Grad-CAM localisation), ``group`` (source case).
    """
    rng = np.random.default_rng(seed)
    xs, ys, regions, groups = [], [], [], []
    for n, name in enumerate(names):
        if progress:
            progress(n, len(names), f"lesions in {name}")
        image = read_volume(Path(folder) / f"{name}_img.nii.gz")
        labels = read_volume(Path(folder) / f"{name}_bodies.nii.gz")
        for kind_index, kind in enumerate(CLASSES):
            for _ in range(per_class):
                g = generate_lesion(image, labels, kind, rng)
                for x, region in lesion_crops(g.image, g.mask, recipe, augmented, rng):
                    xs.append(x)
                    ys.append(kind_index)
                    regions.append(region)
                    groups.append(name)
    return {"x": np.stack(xs).astype(np.float32), "y": np.asarray(ys, np.int64), "region": np.stack(regions),
            "group": np.asarray(groups)}


def lesion_crops(image: Volume, mask: Optional[Volume], recipe: dict, augmented: int, rng: np.random.Generator,
                 centre_lps=None) -> list:
    """(crop (C, ...) float32, lesion region on the crop grid) pairs for one lesion. ``augmented`` = 0:
    one crop at the mask's centroid (or ``centre_lps``, a click); > 0: that many, each centred on the
    centroid or on a random lesion voxel, then shifted up to 15 mm in the sagittal plane (3 mm L-R),
    rotated up to 12 deg about L-R (5 deg about each axis) and scaled 0.9-1.1. Without a mask the
    region is empty (no localisation measure).

    The shift matters: each class's lesion sits at its own place in the anatomy (MET in the posterior
    body, SD on the disc, STB anterior), so crops always centred on the lesion let a network tell the
    class from where the canal or the disc lies in the crop, not from the lesion; Grad-CAM showed MET
    maps on the canal before the shift was added."""
    from scipy.spatial.transform import Rotation

    from spineai.deep.patches import sample_patch
    from spineai.imaging.classifier import sample_crop
    from spineai.imaging.lesion import mask_centre_lps

    centre = mask_centre_lps(mask) if centre_lps is None else np.asarray(centre_lps, float)
    voxels = np.argwhere(mask.array > 0) if mask is not None else np.zeros((0, 3), int)
    m = image.ijk_to_lps_matrix()
    out = []
    for _ in range(max(augmented, 1)):
        c = centre
        if augmented:
            if len(voxels) and rng.random() < 0.5:
                c = voxels[rng.integers(len(voxels))][::-1] @ m[:3, :3].T + m[:3, 3]
            c = c + rng.uniform(-1, 1, 3) * np.array(SHIFT_MM)
        rot = Rotation.from_rotvec(np.deg2rad(rng.uniform(-12, 12)) * np.array([1.0, 0, 0])
                                   + np.deg2rad(rng.uniform(-5, 5, 3))).as_matrix() if augmented else None
        scale = rng.uniform(0.9, 1.1) if augmented else 1.0
        x, grid = sample_crop(image, recipe, c, rot, scale)
        if mask is not None:
            region = sample_patch(mask, grid, mode="nearest")[0].numpy() > 0.5
        else:
            region = np.zeros(grid.shape, bool)
        out.append((x.numpy(), region.any(-1) if recipe["kind"] == "sagittal-slices" else region))
    return out
