"""What the grader sees: intensity-normalised series and, for each disc level, a stack of 2D crops
resampled in patient space (slice selection by millimetre offsets, whatever the scan's orientation,
spacing or slice thickness). Also: clinical tabular data with explicit imputation and one-hot encoding.

Crops are centred on the level's point in the spinal canal (where the RSNA coordinates put the
spinal-canal label); a disc centre from the localiser is moved ``DISC_TO_CANAL_MM`` posteriorly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from spineai.errors import SpineAIError
from spineai.image import Volume
from spineai.lumbar import LEVELS, SERIES_ROLES

CROP_PIXELS = 32
DISC_TO_CANAL_MM = 22.0  # disc centre -> spinal canal centre, along the posterior direction
PERCENTILES = (1.0, 99.0)


@dataclass(frozen=True)
class CropSpec:
    """Patch axes (columns = patch x, y, slice normal, in LPS), in-plane spacing and slice offsets (mm)."""
    rotation: tuple
    spacing_mm: float
    offsets_mm: tuple


_SAGITTAL = ((0, 1, 0), (0, 0, -1), (1, 0, 0))  # x: anterior -> posterior, y: superior -> inferior, normal: L
_AXIAL = ((-1, 0, 0), (0, 1, 0), (0, 0, 1))  # x: patient right on the image left (radiological), y: A -> P, normal: S
CROPS = {
    # Sagittal T2: the canal (midline) and the subarticular recesses (about 10 mm either side).
    "sagittal_t2": CropSpec(_SAGITTAL, 1.5, (-9.0, -6.0, -3.0, 0.0, 3.0, 6.0, 9.0)),
    # Sagittal T1: the neural foramina, 15-27 mm either side of the midline.
    "sagittal_t1": CropSpec(_SAGITTAL, 1.5, (-26.0, -21.0, -16.0, 0.0, 16.0, 21.0, 26.0)),
    # Axial T2: canal, recesses and foramina, slices through the disc and 6 mm either side.
    "axial_t2": CropSpec(_AXIAL, 1.75, (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0)),
}
SLICES = 7


def normalise(array: np.ndarray, percentiles: Sequence[float] = PERCENTILES) -> np.ndarray:
    """Intensities scaled so that the given percentiles of the non-zero voxels map to 0 and 1 (clipped)."""
    a = np.asarray(array, dtype=np.float32)
    nz = a[a != 0]
    if nz.size == 0:
        return np.zeros_like(a)
    lo, hi = np.percentile(nz[:: max(1, nz.size // 200000)], percentiles)
    if hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def equalise(array: np.ndarray, bins: int = 256) -> np.ndarray:
    """Histogram equalisation to [0, 1] (the cumulative histogram of the non-zero voxels); zeros stay 0."""
    a = np.asarray(array, dtype=np.float32)
    nz = a[a != 0]
    if nz.size == 0:
        return np.zeros_like(a)
    hist, edges = np.histogram(nz, bins=bins)
    cdf = np.cumsum(hist).astype(np.float64)
    cdf /= cdf[-1]
    out = np.interp(a, edges[1:], cdf).astype(np.float32)
    out[a == 0] = 0.0
    return out


def prepare_volume(volume: Volume, histogram_equalisation: bool = False) -> Volume:
    arr = normalise(volume.array)
    if histogram_equalisation:
        arr = equalise(arr)
    return volume.with_array(arr.astype(np.float32))


def level_crops(volume: Volume, role: str, centre_lps, jitter_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """(SLICES, CROP_PIXELS, CROP_PIXELS) float32 crops of a prepared volume around one level.
    NaN where the crop has no image at all (the series does not cover the level)."""
    from spineai.deep.patches import PatchGrid, sample_patch

    spec = CROPS[role]
    rot = np.asarray(spec.rotation, float).T  # columns = patch axes
    centre = np.asarray(centre_lps, float) + np.asarray(jitter_mm, float)
    out = np.zeros((SLICES, CROP_PIXELS, CROP_PIXELS), np.float32)
    covered = 0.0
    for n, off in enumerate(spec.offsets_mm):
        grid = PatchGrid(tuple(centre + off * rot[:, 2]), (1, CROP_PIXELS, CROP_PIXELS), spec.spacing_mm, rot)
        values, inside = sample_patch(volume, grid)
        out[n] = values[0].numpy()
        covered += float(inside.mean())
    if covered / SLICES < 0.25:
        out[:] = np.nan
    return out


def study_crops(volumes: dict, levels: dict, rng: Optional[np.random.Generator] = None,
                jitter_mm: float = 0.0) -> np.ndarray:
    """(levels, roles, SLICES, H, W) for ``volumes`` {role: prepared Volume}; NaN for a missing series
    or level: the network's presence mask."""
    out = np.full((len(LEVELS), len(SERIES_ROLES), SLICES, CROP_PIXELS, CROP_PIXELS), np.nan, np.float32)
    for li, level in enumerate(LEVELS):
        if level not in levels:
            continue
        for ri, role in enumerate(SERIES_ROLES):
            if role in volumes:
                j = rng.uniform(-jitter_mm, jitter_mm, 3) if rng is not None and jitter_mm else (0.0, 0.0, 0.0)
                out[li, ri] = level_crops(volumes[role], role, levels[level], j)
    return out


def canal_points_from_discs(discs: dict, posterior_lps=(0.0, 1.0, 0.0)) -> dict:
    """Level points in the canal from disc centres (``locate_discs``' output)."""
    p = np.asarray(posterior_lps, float)
    return {lv: np.asarray(xyz, float) + DISC_TO_CANAL_MM * p / np.linalg.norm(p) for lv, xyz in discs.items()}


# ---- clinical tabular data ----------------------------------------------------------------------

IMPUTERS = ("median", "iterative", "random-forest")


class ClinicalEncoder:
    """Numeric columns imputed (median, iterative regression or random-forest iterative: named, never
    implicit) and standardised; categorical columns one-hot encoded, with an explicit 'missing'
    category (an unseen category at transform time counts as missing). Fitted on training rows: the
    iterative imputers are fitted on the training table only, never on the rows being transformed."""

    def __init__(self, numeric: Sequence[str] = (), categorical: Sequence[str] = (), imputer: str = "median",
                 seed: int = 0):
        if imputer not in IMPUTERS:
            raise SpineAIError(f"unknown imputer {imputer!r}; choose one of {', '.join(IMPUTERS)}")
        self.numeric, self.categorical, self.imputer, self.seed = list(numeric), list(categorical), imputer, seed

    @staticmethod
    def _number(value) -> float:
        if value is None or (isinstance(value, str) and value.strip() == ""):
            return np.nan
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SpineAIError(f"clinical value {value!r} is not a number") from None

    def _numeric_matrix(self, rows: list) -> np.ndarray:
        missing = [c for c in self.numeric + self.categorical if rows and c not in rows[0]]
        if missing:
            raise SpineAIError(f"clinical table lacks column(s) {', '.join(missing)}")
        return np.array([[self._number(r.get(c)) for c in self.numeric] for r in rows], float).reshape(len(rows), -1)

    def fit(self, rows: list) -> "ClinicalEncoder":
        x = self._numeric_matrix(rows)
        if self.numeric and np.isnan(x).all(0).any():
            empty = [c for c, e in zip(self.numeric, np.isnan(x).all(0)) if e]
            raise SpineAIError(f"clinical column(s) {', '.join(empty)} have no value in any training row")
        self.train_numeric_ = x
        self.medians_ = np.nanmedian(x, 0) if self.numeric else np.zeros(0)
        filled = self._impute(x)
        self.mean_ = filled.mean(0)
        self.std_ = np.where(filled.std(0) > 0, filled.std(0), 1.0)
        self.categories_ = {c: sorted({str(r.get(c) or "").strip() or "missing" for r in rows} | {"missing"})
                            for c in self.categorical}
        return self

    def _impute(self, x: np.ndarray) -> np.ndarray:
        if not np.isnan(x).any():
            return x
        if self.imputer == "median":
            return np.where(np.isnan(x), self.medians_, x)
        from sklearn.experimental import enable_iterative_imputer  # noqa: F401
        from sklearn.impute import IterativeImputer

        estimator = None
        if self.imputer == "random-forest":
            from sklearn.ensemble import RandomForestRegressor

            estimator = RandomForestRegressor(n_estimators=50, random_state=self.seed)
        imp = IterativeImputer(estimator=estimator, random_state=self.seed, max_iter=10)
        imp.fit(self.train_numeric_)
        return imp.transform(x)

    @property
    def feature_names(self) -> list:
        return list(self.numeric) + [f"{c}={v}" for c in self.categorical for v in self.categories_[c]]

    def transform(self, rows: list) -> np.ndarray:
        x = (self._impute(self._numeric_matrix(rows)) - self.mean_) / self.std_
        hot = []
        for c in self.categorical:
            cats = self.categories_[c]
            block = np.zeros((len(rows), len(cats)))
            for n, r in enumerate(rows):
                v = str(r.get(c) or "").strip() or "missing"
                block[n, cats.index(v) if v in cats else cats.index("missing")] = 1.0
            hot.append(block)
        return np.concatenate([x] + hot, 1).astype(np.float32)
