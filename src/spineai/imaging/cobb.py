"""Cobb angle from a frontal radiograph: the spine's centre line, measured, and the angle between the
two most tilted vertebrae along it.

The centre line is found without a learned model: the vertebral column is the widest bright band
that runs the film's height, so a centre-minus-surround filter across the columns, smoothed over
about one vertebra down the rows, peaks on it; a dynamic-programming path picks the brightest
continuous line through that response (ribs and clavicles, thinner and fainter, lose to it), and
the rows where it stays strong are the spine. Each vertebra lies perpendicular to the centre line,
so the tilt of a vertebra is the tilt of the line where it sits: the Cobb angle is the largest tilt
minus the smallest, and the end vertebrae are where those two are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from spineai.errors import SpineAIError

# Below this, the "spine" is texture: generated films give 5-8, noise 2-3.
MIN_STRENGTH = 3.5


@dataclass(frozen=True)
class CobbMeasurement:
    angle_deg: float
    centre_line: np.ndarray  # (n, 2) (row, col) pixel coordinates, top to bottom
    tilts_deg: np.ndarray  # (n,) tilt of the line at each point (positive: counter-clockwise on screen)
    upper_end: int  # index into centre_line of the upper end vertebra
    lower_end: int  # ... and of the lower one
    strength: float  # median filter response along the line over its surroundings: low means no spine found

    def end_vertebra_lines(self, half_width: float) -> list[np.ndarray]:
        """Two (2, 2) (row, col) segments along the end vertebrae's endplates, for drawing."""
        out = []
        for i in (self.upper_end, self.lower_end):
            r, c = self.centre_line[i]
            a = np.radians(self.tilts_deg[i])
            d = np.array([-np.sin(a), np.cos(a)]) * half_width  # the endplate direction in (row, col)
            out.append(np.array([[r, c] - d, [r, c] + d]))
        return out


def _spine_response(img: np.ndarray, band: float) -> np.ndarray:
    """Bright bands about ``band`` pixels wide, running top to bottom: centre-minus-surround across
    the columns, smoothed down the rows over about one vertebra (so discs and ribs average out)."""
    lo, hi = np.percentile(img, [1, 99.5])
    x = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)
    x = ndimage.gaussian_filter1d(x, band * 0.6, axis=0)
    centre = ndimage.gaussian_filter1d(x, band * 0.35, axis=1)
    surround = ndimage.gaussian_filter1d(x, band * 1.5, axis=1)
    return centre - surround


def _brightest_path(resp: np.ndarray, lo: int, hi: int, max_step: int = 1) -> np.ndarray:
    """Column of the path from top to bottom, restricted to columns [lo, hi), with at most
    ``max_step`` columns of sideways move per row, maximising the summed response."""
    r = resp[:, lo:hi].astype(np.float64)
    H, W = r.shape
    score = r[0].copy()
    back = np.zeros((H, W), np.int32)
    offsets = range(-max_step, max_step + 1)
    for y in range(1, H):
        cands = np.stack([np.roll(score, o) if o else score for o in offsets])
        for n, o in enumerate(offsets):  # no wrap-around
            if o > 0:
                cands[n, :o] = -np.inf
            elif o < 0:
                cands[n, o:] = -np.inf
        best = np.argmax(cands, 0)
        back[y] = np.arange(W) - np.asarray(list(offsets))[best]
        score = cands[best, np.arange(W)] + r[y]
    path = np.zeros(H, np.int64)
    path[-1] = int(np.argmax(score))
    for y in range(H - 1, 0, -1):
        path[y - 1] = back[y, path[y]]
    return path + lo


def _body_midline(img: np.ndarray, path: np.ndarray, rows: np.ndarray, vert: float) -> np.ndarray:
    """Per row, the midpoint between the vertebral body's left edge (steepest rise) and right edge
    (steepest fall) within about a body's width of the coarse path: the path alone lags on curves,
    because its response is smoothed over a vertebra."""
    lo, hi = np.percentile(img, [1, 99.5])
    x = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)
    x = ndimage.gaussian_filter(x, (vert * 0.35, 1.0))
    grad = np.gradient(x, axis=1)
    reach = int(round(vert * 2.0))
    W = img.shape[1]
    out = np.empty(len(rows))
    for n, y in enumerate(rows):
        c = int(path[y])
        left = grad[y, max(c - reach, 0):c + 1]
        right = grad[y, c:min(c + reach + 1, W)]
        out[n] = 0.5 * ((max(c - reach, 0) + int(np.argmax(left))) + (c + int(np.argmin(right))))
    return out


def measure_cobb(image: np.ndarray, vertebra_px: float | None = None) -> CobbMeasurement:
    """The Cobb angle of a frontal radiograph (2D array, row 0 superior, bright = dense).

    ``vertebra_px`` is the height of one vertebra in pixels (default: the film's height / 22, a
    whole spine from T1 to the pelvis on the film)."""
    img = np.asarray(image, np.float32)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise SpineAIError(f"the Cobb angle needs a 2D radiograph, got an array of shape {img.shape}")
    if min(img.shape) < 64:
        raise SpineAIError(f"the radiograph is too small to measure a Cobb angle ({img.shape[1]} x {img.shape[0]} pixels)")
    if not np.isfinite(img).all():
        raise SpineAIError("the radiograph holds NaN or infinite values")
    H, W = img.shape
    vert = float(vertebra_px or H / 22.0)
    resp = _spine_response(img, band=vert * 1.6)
    path = _brightest_path(resp, int(0.15 * W), int(0.85 * W))
    along = resp[np.arange(H), path]
    # The spine: the longest run of rows where the path stays on a strong response.
    strong = ndimage.binary_opening(along > 0.35 * np.percentile(along, 90), iterations=2)
    runs, n = ndimage.label(strong)
    if n == 0:
        raise SpineAIError("no spine found on the radiograph (no bright column runs down the film)")
    sizes = ndimage.sum(strong, runs, range(1, n + 1))
    rows = np.flatnonzero(runs == 1 + int(np.argmax(sizes)))
    if len(rows) < 4 * vert:
        raise SpineAIError(f"the spine found on the radiograph is only {len(rows)} pixels long: too short for a Cobb angle")
    cols = _body_midline(img, path, rows, vert)
    cols = ndimage.gaussian_filter1d(ndimage.median_filter(cols, int(vert) | 1, mode="nearest"), vert * 0.7, mode="nearest")
    tilt = np.degrees(np.arctan(np.gradient(cols, rows.astype(np.float64))))
    inner = slice(int(1.5 * vert), len(rows) - int(1.5 * vert))  # the filters reach past the ends
    t_in = tilt[inner]
    i_max, i_min = int(np.argmax(t_in)) + inner.start, int(np.argmin(t_in)) + inner.start
    strength = float(np.median(along[rows]) / (float(np.median(np.abs(resp))) + 1e-6))
    if strength < MIN_STRENGTH:
        raise SpineAIError(f"no spine found on the radiograph: the brightest column stands only {strength:.1f} times "
                           f"above the film's texture (a spine stands {MIN_STRENGTH:g} or more)")
    return CobbMeasurement(float(tilt[i_max] - tilt[i_min]), np.column_stack([rows, cols]), tilt,
                           min(i_max, i_min), max(i_max, i_min), strength)
