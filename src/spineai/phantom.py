"""Synthetic sagittal lumbar spine MR phantoms with a lesion of known extent and kind.

Deterministic by ``seed``. The image is T2-like: vertebral bodies with trabecular marrow texture
and a dark cortical rim, bright disc nuclei, bright CSF in the canal, posterior elements, soft
tissue and subcutaneous fat, a smooth coil bias field and Rician noise. One vertebral body holds a
lesion whose texture depends on its kind (SD / MET / STB). The textures are invented for
demonstration and testing: they are not a model of real pathology, and models trained on them are
demonstrations only.

Axes: i runs anterior -> posterior, j superior -> inferior, k left -> right (sagittal slices),
matching a sagittal acquisition; the direction matrix says so, and the origin is not zero, so the
phantom also exercises geometry handling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from spineai.errors import SpineAIError
from spineai.image import Volume

LESION_KINDS = ("SD", "MET", "STB")
LEVELS = ("L1", "L2", "L3", "L4", "L5")

# Label map values.
LABELS = {
    **{lvl: n + 1 for n, lvl in enumerate(LEVELS)},  # vertebral bodies 1..5
    **{f"{a}/{b}": 11 + n for n, (a, b) in enumerate(zip(LEVELS, LEVELS[1:] + ("S1",)))},  # discs 11..15
    "canal": 20,
    "posterior elements": 21,
}

# Columns are the i, j, k axes in LPS: i -> posterior (+y), j -> inferior (-z), k -> right (-x);
# a proper rotation (det +1).
SAGITTAL_DIRECTION = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class SpinePhantom:
    image: Volume
    labels: Volume  # LABELS values
    lesion_mask: Volume  # uint8, 1 inside the lesion
    lesion_kind: str | None
    lesion_level: str | None
    lesion_center_ijk: tuple[int, int, int] | None

    @property
    def lesion_center_ras(self) -> tuple[float, float, float] | None:
        if self.lesion_center_ijk is None:
            return None
        return tuple(float(v) for v in self.image.ijk_to_ras(self.lesion_center_ijk))


def _smooth_noise(rng, shape, sigma_vox, dtype=np.float32) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise smoothed to a correlation length of ``sigma_vox``."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(dtype), sigma_vox, mode="wrap")
    return noise / max(float(noise.std()), 1e-6)


def _superellipse(du, dv, dw, a, b, c, p=4.0) -> np.ndarray:
    return (np.abs(du / a) ** p + np.abs(dv / b) ** p + np.abs(dw / c) ** p)


def make_spine_phantom(
    seed: int = 0,
    shape_ijk: tuple[int, int, int] = (192, 256, 24),
    spacing: tuple[float, float, float] = (0.9, 0.9, 3.0),
    lesion_kind: str | None = "MET",
    lesion_level: str = "L3",
    lesion_radius_mm: float = 10.0,
    noise: float = 0.025,
) -> SpinePhantom:
    """Make a phantom. ``lesion_kind=None`` gives a spine without a lesion.

    The field of view (``shape_ijk * spacing``) must hold the five lumbar bodies: at least
    about 150 mm anterior-posterior and 200 mm superior-inferior.
    """
    if lesion_kind is not None and lesion_kind not in LESION_KINDS:
        raise SpineAIError(f"lesion kind must be one of {LESION_KINDS} or None, got {lesion_kind!r}")
    if lesion_level not in LEVELS:
        raise SpineAIError(f"lesion level must be one of {LEVELS}, got {lesion_level!r}")
    ni, nj, nk = (int(v) for v in shape_ijk)
    si, sj, sk = (float(v) for v in spacing)
    fov = (ni * si, nj * sj, nk * sk)
    if fov[0] < 140 or fov[1] < 190 or fov[2] < 40:
        raise SpineAIError(
            f"field of view {tuple(round(f) for f in fov)} mm is too small for a lumbar spine phantom "
            "(needs about 140 x 190 x 40 mm)"
        )
    rng = np.random.default_rng(seed)
    # Millimetre coordinates of voxel centres, relative to the field-of-view centre, shaped [k, j, i].
    u = ((np.arange(ni) - (ni - 1) / 2) * si).astype(np.float32)[None, None, :]
    v = ((np.arange(nj) - (nj - 1) / 2) * sj).astype(np.float32)[None, :, None]
    w = ((np.arange(nk) - (nk - 1) / 2) * sk).astype(np.float32)[:, None, None]
    shape = (nk, nj, ni)
    vox_sigma = lambda mm: tuple(mm / s for s in (sk, sj, si))  # noqa: E731  mm -> voxels per axis

    img = np.full(shape, 0.22, np.float32)  # muscle / soft tissue
    labels = np.zeros(shape, np.uint8)

    # Subcutaneous fat, posterior (bright on T2 fast spin echo).
    body_u = -5.0 + rng.uniform(-3, 3)  # AP centre of the vertebral bodies
    img[np.broadcast_to(u > body_u + 62, shape)] = 0.6

    depth, width = 32.0 + rng.uniform(-2, 2), 42.0 + rng.uniform(-3, 3)
    body_h, disc_h = 26.0 + rng.uniform(-1.5, 1.5), 9.0 + rng.uniform(-1, 1)
    pitch = body_h + disc_h
    lordosis = rng.uniform(4.0, 8.0)  # mm of anterior bow across the lumbar spine
    centres_v = (np.arange(5) - 2) * pitch + rng.uniform(-3, 3)
    marrow_tex = _smooth_noise(rng, shape, vox_sigma(0.9))

    def bow(vv):  # anterior shift of the spine at height vv (lumbar lordosis)
        return lordosis * (1 - (vv / (2.6 * pitch)) ** 2)

    for n, cv in enumerate(centres_v):
        cu = body_u - bow(cv)
        du, dv, dw = u - cu, v - cv, w
        # Waisted body: narrower at mid-height.
        waist = 1 - 0.06 * np.cos(np.clip(dv / (body_h / 2), -1, 1) * np.pi / 2)
        r = _superellipse(du, dv, dw / waist, depth / 2, body_h / 2, width / 2, 4.0)
        body = r <= 1.0
        cortex = body & (r > 0.72)
        labels[body] = LABELS[LEVELS[n]]
        img[body] = (0.42 + 0.05 * marrow_tex)[body]
        img[cortex] = 0.12
        # Disc below this body (nucleus bright, annulus darker).
        dv_disc = v - (cv + pitch / 2)
        cu_d = body_u - bow(cv + pitch / 2)
        rd = _superellipse(u - cu_d, dv_disc, w, depth / 2 * 0.98, disc_h / 2, width / 2 * 0.98, 2.5)
        disc = (rd <= 1.0) & (labels == 0)
        nucleus = _superellipse(u - cu_d, dv_disc, w, depth / 3.2, disc_h / 3.0, width / 3.2, 2.0) <= 1.0
        labels[disc] = list(LABELS.values())[5 + n]
        img[disc] = 0.34
        img[disc & nucleus] = 0.78

    # Canal (CSF) and cauda equina behind the bodies, posterior elements behind the canal.
    cu_canal = body_u + depth / 2 + 9.0 - bow(v)
    canal = ((u - cu_canal) / 8.0) ** 2 + (w / 9.0) ** 2 <= 1.0
    canal = np.broadcast_to(canal, shape) & (labels == 0)
    labels[canal] = LABELS["canal"]
    img[canal] = 0.92
    roots = canal & (_smooth_noise(rng, shape, vox_sigma(1.2)) > 1.2)
    img[roots] = 0.45
    cu_post = cu_canal + 20.0
    post_tex = _smooth_noise(rng, shape, vox_sigma(1.5))
    for cv in centres_v:
        arch = _superellipse(u - cu_post, v - cv - 3, w, 12.0, body_h / 2.2, 30.0, 2.5) <= 1.0
        arch &= labels == 0
        labels[arch] = LABELS["posterior elements"]
        img[arch] = (0.38 + 0.04 * post_tex)[arch]

    lesion = np.zeros(shape, bool)
    centre_ijk = None
    if lesion_kind is not None:
        n = LEVELS.index(lesion_level)
        cv = centres_v[n] + rng.uniform(-3, 3)
        cu = body_u - bow(cv) + rng.uniform(-3, 3)
        cw = rng.uniform(-5, 5)
        rad = lesion_radius_mm
        du, dv, dw = u - cu, v - cv, w - cw
        dist = np.sqrt((du / 1.0) ** 2 + (dv / 0.9) ** 2 + (dw / 1.05) ** 2)
        # Irregular margin: radius modulated by smooth noise.
        margin = 1.0 + 0.12 * _smooth_noise(rng, shape, vox_sigma(4.0))
        body_of_level = labels == LABELS[lesion_level]
        lesion = (dist <= rad * margin) & body_of_level
        tex_fine = _smooth_noise(rng, shape, vox_sigma(0.7))
        tex_coarse = _smooth_noise(rng, shape, vox_sigma(2.5))
        if lesion_kind == "MET":  # fairly homogeneous, hyperintense, sharp margin
            values = 0.74 + 0.04 * tex_fine
        elif lesion_kind == "SD":  # oedematous, blotchy, brightest near the endplates
            near_endplate = np.clip(np.abs(dv) / (body_h / 2), 0, 1)
            values = 0.70 + 0.07 * tex_coarse + 0.08 * near_endplate
        else:  # STB: heterogeneous, with necrotic (very bright) loculi and a darker rim
            loculi = (tex_coarse > 0.9).astype(np.float32)
            rim = (dist > 0.75 * rad * margin).astype(np.float32)
            values = 0.66 + 0.06 * tex_fine + 0.2 * loculi - 0.1 * rim
        img[lesion] = values[lesion]
        if not lesion.any():
            raise SpineAIError("the lesion fell outside the vertebral body: choose another seed")
        # Centre: the lesion voxel farthest from its boundary, so a click there is well inside.
        inner = ndimage.distance_transform_edt(lesion, sampling=(sk, sj, si))
        kk, jj, ii = np.unravel_index(int(np.argmax(inner)), shape)
        centre_ijk = (int(ii), int(jj), int(kk))

    # Partial-volume blur, coil bias field, Rician noise; stored as an MR-like int16 range.
    img = ndimage.gaussian_filter(img, vox_sigma(0.45))
    bias = 1.0 + 0.12 * _smooth_noise(rng, shape, vox_sigma(60.0))
    img = img * bias
    n1 = rng.standard_normal(shape, dtype=np.float32) * noise
    n2 = rng.standard_normal(shape, dtype=np.float32) * noise
    img = np.sqrt((img + n1) ** 2 + n2**2)
    arr = np.round(img * 1000).astype(np.int16)

    origin_ras = np.array([-(nk - 1) / 2 * sk, 40.0, 110.0])  # arbitrary, non-zero
    origin_lps = (-origin_ras[0], -origin_ras[1], origin_ras[2])
    geom = dict(spacing=(si, sj, sk), origin=origin_lps, direction=SAGITTAL_DIRECTION)
    return SpinePhantom(
        image=Volume(arr, **geom),
        labels=Volume(labels, **geom),
        lesion_mask=Volume(lesion.astype(np.uint8), **geom),
        lesion_kind=lesion_kind,
        lesion_level=lesion_level if lesion_kind else None,
        lesion_center_ijk=centre_ijk,
    )
