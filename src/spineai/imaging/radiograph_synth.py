"""Synthetic frontal (PA) spine radiographs with a known Cobb angle: the demonstration data of the
scoliosis screening task, generated because no labelled radiographs are reachable here.

A spine of 17 vertebrae (T1-L5) follows a centre line whose tilt profile is built so that the angle
between the most tilted vertebrae (the Cobb angle) is exactly the one asked for; each vertebra is
drawn perpendicular to the centre line, so its tilt is the line's tilt there. Around it: soft tissue,
lungs, ribs that leave the thoracic vertebrae, clavicles, a pelvis and sacrum, then a random exposure
(gamma, contrast), blur and quantum noise, and a small whole-patient rotation (which leaves the Cobb
angle unchanged, as on a real film). Deterministic by seed. The anatomy is schematic: a network trained
on it is a demonstration, not a screening tool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from spineai.errors import SpineAIError
from spineai.image import Volume

SCOLIOSIS_COBB_DEG = 10.0  # the clinical definition: a Cobb angle of 10 degrees or more
STUDY_PREVALENCE = 0.016  # 1,308 of 82,997 radiographs in the study
N_VERTEBRAE = 17  # T1-L5
PIXEL_MM = 1.4  # a 256-pixel film covers about 36 cm

# Columns are the i (patient left), j (inferior) and k (anterior -> posterior) axes in LPS: a frontal
# film as Slicer's coronal view shows it (patient's right on the viewer's left).
FRONTAL_DIRECTION = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class SyntheticRadiograph:
    image: np.ndarray  # float32 (H, W) in [0, 1], bright = dense, row 0 superior
    cobb_deg: float  # exact: max - min tilt of the drawn vertebrae
    vertebra_centres: np.ndarray  # (17, 2) (row, col), top to bottom
    vertebra_tilts_deg: np.ndarray  # (17,) tilt of each vertebra in the film (positive: counter-clockwise on screen)
    spine_mask: np.ndarray  # bool (H, W): the vertebrae
    seed: int

    @property
    def scoliosis(self) -> bool:
        return self.cobb_deg >= SCOLIOSIS_COBB_DEG

    @property
    def end_vertebrae(self) -> tuple[int, int]:
        """Indices of the two most tilted vertebrae (upper first): the Cobb angle is measured between them."""
        a, b = int(np.argmax(self.vertebra_tilts_deg)), int(np.argmin(self.vertebra_tilts_deg))
        return (min(a, b), max(a, b))

    def volume(self) -> Volume:
        return radiograph_volume(self.image)


def radiograph_volume(image: np.ndarray, pixel_mm: float = PIXEL_MM) -> Volume:
    """A 2D film as a one-slice volume in the frontal orientation (how Slicer holds a radiograph)."""
    return Volume(np.asarray(image, np.float32)[None], (pixel_mm, pixel_mm, 1.0), (0.0, 0.0, 0.0), FRONTAL_DIRECTION)


def _tilt_profile(rng: np.random.Generator, cobb_deg: float, t: np.ndarray) -> np.ndarray:
    """Tilt (degrees) along the spine at positions t in [0, 1], scaled so that max - min over t is
    ``cobb_deg``: the derivative of one lateral bump (C curve) or two opposite ones (S curve)."""
    if cobb_deg <= 0:
        return np.zeros_like(t)
    n = 1 if rng.random() < 0.6 else 2
    centres = [rng.uniform(0.35, 0.65)] if n == 1 else sorted([rng.uniform(0.25, 0.4), rng.uniform(0.6, 0.75)])
    shape = np.zeros_like(t)
    sign = rng.choice([-1.0, 1.0])
    for m, c in enumerate(centres):
        s = rng.uniform(0.1, 0.18)
        amp = sign * (1.0 if m == 0 else -rng.uniform(0.4, 1.0))
        shape += amp * -(t - c) / s ** 2 * np.exp(-0.5 * ((t - c) / s) ** 2)
    return shape * cobb_deg / (shape.max() - shape.min())


def _rotated_box(yy, xx, cy, cx, half_h, half_w, angle_rad, soft=0.8):
    """Soft-edged filled rectangle centred at (cy, cx) whose long (spine) axis points along
    (sin a, cos a) in (x, y-down): tilted counter-clockwise on screen for a positive angle."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    dy, dx = yy - cy, xx - cx
    u = dx * c - dy * s  # along the endplates
    v = dx * s + dy * c  # along the spine
    return np.clip(0.5 + (half_w - np.abs(u)) / soft, 0, 1) * np.clip(0.5 + (half_h - np.abs(v)) / soft, 0, 1)


def _draw_curve(canvas: np.ndarray, ys: np.ndarray, xs: np.ndarray, value: float) -> None:
    """Adds ``value`` along a polyline (densely sampled), clipped to the canvas."""
    h, w = canvas.shape
    ok = (ys >= 0) & (ys < h - 1) & (xs >= 0) & (xs < w - 1)
    np.add.at(canvas, (np.round(ys[ok]).astype(int), np.round(xs[ok]).astype(int)), value)


def generate_radiograph(cobb_deg: float, seed: int = 0, size: int = 256) -> SyntheticRadiograph:
    """One synthetic frontal radiograph whose spine has exactly ``cobb_deg`` (0-60) of Cobb angle."""
    if not 0 <= cobb_deg <= 90:
        raise SpineAIError(f"the Cobb angle must be between 0 and 90 degrees, got {cobb_deg}")
    if size < 64:
        raise SpineAIError(f"a synthetic radiograph needs at least 64 pixels across, got {size}")
    rng = np.random.default_rng(seed)
    H = W = size
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    sc = size / 256.0

    # Spine centre line: arc length along t, tilt from the profile, lateral position by integration.
    top, bottom = rng.uniform(0.06, 0.12) * H, rng.uniform(0.76, 0.84) * H
    t_fine = np.linspace(0, 1, 400)
    tilt_fine = _tilt_profile(rng, cobb_deg, t_fine)
    length = bottom - top
    dy = np.cos(np.radians(tilt_fine)) * length / len(t_fine)
    dx = np.sin(np.radians(tilt_fine)) * length / len(t_fine)
    line_y = top + np.cumsum(dy) - dy[0]
    line_x = np.cumsum(dx)
    line_x += W / 2 + rng.uniform(-0.04, 0.04) * W - line_x.mean()

    # Vertebrae: heights grow caudally (thoracic -> lumbar), discs between them.
    heights = np.linspace(0.8, 1.25, N_VERTEBRAE) * rng.uniform(0.92, 1.08)
    edges = np.concatenate([[0.0], np.cumsum(heights)]) / heights.sum()
    t_centre = (edges[:-1] + edges[1:]) / 2
    idx = np.clip(np.round(t_centre * (len(t_fine) - 1)).astype(int), 0, len(t_fine) - 1)
    cy, cx, tilts = line_y[idx], line_x[idx], tilt_fine[idx]
    if cobb_deg > 0:  # exact on the drawn vertebrae, not only on the fine line
        tilts = tilts * cobb_deg / (tilts.max() - tilts.min())
    seg = length / len(heights) * heights / heights.mean()
    widths = np.linspace(9.5, 16.0, N_VERTEBRAE) * sc * rng.uniform(0.9, 1.1)

    bone = np.zeros((H, W), np.float32)
    spine = np.zeros((H, W), np.float32)
    for v in range(N_VERTEBRAE):
        a = np.radians(tilts[v])
        body = _rotated_box(yy, xx, cy[v], cx[v], 0.36 * seg[v], widths[v], a)
        spine = np.maximum(spine, body)
        bone += 0.55 * body
        for side in (-1, 1):  # pedicles: bright ovals inside the body, one each side
            px, py = cx[v] + side * 0.55 * widths[v] * np.cos(a), cy[v] - side * 0.55 * widths[v] * np.sin(a)
            bone += 0.25 * (((yy - py) / (0.25 * seg[v])) ** 2 + ((xx - px) / (0.18 * widths[v])) ** 2 < 1)
        sp_y, sp_x = cy[v] + 0.1 * seg[v] * np.cos(a), cx[v] + 0.1 * seg[v] * np.sin(a)  # spinous process
        bone += 0.2 * (((yy - sp_y) / (0.3 * seg[v])) ** 2 + ((xx - sp_x) / (0.12 * widths[v])) ** 2 < 1)

    # Ribs: pairs from the 10 upper thoracic vertebrae, curving out and down.
    ribs = np.zeros((H, W), np.float32)
    s = np.linspace(0, 1, 300)
    rib_len = rng.uniform(0.28, 0.34) * W
    for v in range(1, 11):
        for side in (-1, 1):
            span = rib_len * (0.55 + 0.45 * np.sin(np.pi * (v + 1) / 13))
            rx = cx[v] + side * (widths[v] + span * np.sin(s * np.pi * 0.55))
            ry = cy[v] - 0.1 * seg[v] + span * (0.15 * s + 0.55 * s ** 2.2) - side * np.tan(np.radians(tilts[v])) * widths[v]
            _draw_curve(ribs, ry, rx, 1.0)
    ribs = np.clip(ndimage.gaussian_filter(ribs, 1.2 * sc) * 2.2, 0, 0.28)

    # Clavicles.
    clav = np.zeros((H, W), np.float32)
    for side in (-1, 1):
        s2 = np.linspace(0, 1, 200)
        _draw_curve(clav, cy[0] - 0.02 * H + 0.03 * H * s2 - 0.02 * H * np.sin(np.pi * s2),
                    cx[0] + side * (0.04 * W + 0.25 * W * s2), 1.0)
    clav = np.clip(ndimage.gaussian_filter(clav, 2.0 * sc) * 3.5, 0, 0.3)

    # Pelvis: iliac wings (rings) and the sacrum below L5.
    pel_y = bottom + rng.uniform(0.03, 0.06) * H
    sac = (np.abs(xx - cx[-1]) < (0.06 * W) * np.clip(1 - (yy - bottom) / (0.14 * H), 0, 1)) & (yy > bottom)
    pelvis = 0.4 * sac.astype(np.float32)
    for side in (-1, 1):
        ex, ey = cx[-1] + side * 0.2 * W, pel_y + 0.02 * H
        r = np.sqrt(((xx - ex) / (0.17 * W)) ** 2 + ((yy - ey) / (0.1 * H)) ** 2)
        pelvis += 0.35 * np.clip(1 - np.abs(r - 0.9) / 0.12, 0, 1) * (yy > ey - 0.08 * H) + 0.12 * (r < 0.9)

    # Soft tissue, lungs, and a bright mediastinum along the upper spine.
    body_w = rng.uniform(0.40, 0.46) * W
    torso = np.clip(1.2 - np.abs(xx - W / 2) / body_w, 0, 1) ** 0.5
    lungs = np.zeros((H, W), np.float32)
    for side in (-1, 1):
        lx, ly = cx[4] + side * rng.uniform(0.17, 0.21) * W, 0.32 * H
        lungs += np.clip(1.3 - np.sqrt(((xx - lx) / (0.13 * W)) ** 2 + ((yy - ly) / (0.22 * H)) ** 2), 0, 1)
    lungs = np.clip(lungs, 0, 1)
    heart = np.clip(1.2 - np.sqrt(((xx - W / 2 - 0.05 * W) / (0.14 * W)) ** 2 + ((yy - 0.5 * H) / (0.1 * H)) ** 2), 0, 1)
    soft = 0.32 * torso - 0.22 * lungs + 0.12 * heart + 0.05 * ndimage.gaussian_filter(rng.standard_normal((H, W)).astype(np.float32), 12 * sc)

    img = soft + bone * rng.uniform(0.7, 1.0) + ribs + clav + pelvis
    img = ndimage.gaussian_filter(img, rng.uniform(0.5, 1.3) * sc)

    # Whole-patient rotation on the film: every tilt changes alike, the Cobb angle does not.
    roll = rng.uniform(-4.0, 4.0)
    if abs(roll) > 0.1:
        img = ndimage.rotate(img, roll, reshape=False, order=1, mode="nearest")
        spine = ndimage.rotate(spine, roll, reshape=False, order=1, mode="constant")
        c0 = np.array([H / 2 - 0.5, W / 2 - 0.5])
        r = np.radians(roll)
        rot = np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])  # (row, col): counter-clockwise on screen, as scipy
        centres = (np.column_stack([cy, cx]) - c0) @ rot.T + c0
        tilts = tilts + roll
    else:
        centres = np.column_stack([cy, cx])

    # Exposure: contrast, gamma, quantum noise.
    img = np.clip((img - img.min()) / (np.ptp(img) + 1e-6), 0, 1)
    img = img ** rng.uniform(0.75, 1.35)
    img = img * rng.uniform(0.8, 1.0) + rng.uniform(0.0, 0.1)
    img = img + rng.normal(0, rng.uniform(0.01, 0.04), img.shape)
    img = np.clip(img, 0, 1).astype(np.float32)
    cobb = float(tilts.max() - tilts.min()) if cobb_deg > 0 else 0.0
    return SyntheticRadiograph(img, cobb, centres, tilts.astype(np.float64), spine > 0.5, seed)


def sample_cobb(rng: np.random.Generator, scoliosis: bool) -> float:
    """A Cobb angle for a generated case: 0-9.5 degrees for a normal spine (a third exactly straight),
    10-60 for scoliosis (milder curves more common, as in screening)."""
    if scoliosis:
        return float(10 + 50 * rng.beta(1.2, 2.2))
    return 0.0 if rng.random() < 1 / 3 else float(rng.uniform(0.5, 9.5))


def generated_split(n: int, prevalence: float, seed: int, size: int = 256, exact: bool = True):
    """``n`` generated radiographs at ``prevalence`` (exactly round(n * prevalence) positives when
    ``exact``), each with its own seed derived from ``seed``: a fixed, reproducible evaluation set."""
    rng = np.random.default_rng(seed)
    n_pos = int(round(n * prevalence)) if exact else int(rng.binomial(n, prevalence))
    labels = np.zeros(n, bool)
    labels[rng.choice(n, n_pos, replace=False)] = True
    for i, positive in enumerate(labels):
        yield generate_radiograph(sample_cobb(rng, bool(positive)), seed=int(rng.integers(2 ** 31)) + i, size=size)
