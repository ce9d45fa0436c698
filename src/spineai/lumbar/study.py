"""Reading a lumbar MR study: the RSNA 2024 layout, or series given one by one.

RSNA layout (``root`` holds)::

    train.csv                       study_id + the 25 grade columns (Normal/Mild, Moderate, Severe; empty = not graded)
    train_series_descriptions.csv   study_id, series_id, series_description
    train_label_coordinates.csv     study_id, series_id, instance_number, condition, level, x, y
    train_images/STUDY/SERIES/*.dcm one folder of DICOM files per series

A study is read from what is there: a missing series, a series of an unknown type, a series that
cannot be read and damaged slice files each give a warning naming what is missing, never a failure;
only a study with no usable series at all is an error.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from spineai.errors import SpineAIError, warn
from spineai.image import Volume, read_volume
from spineai.lumbar import CONDITIONS, LEVELS, SERIES_DESCRIPTIONS, SERIES_ROLES, SEVERITIES, condition_title, target_columns


@dataclass
class Series:
    role: str
    volume: Volume
    description: str
    source: str
    # InstanceNumber -> (ImagePositionPatient, row direction, column direction, (column spacing, row spacing))
    instances: dict = field(default_factory=dict)

    def pixel_to_lps(self, instance: int, x: float, y: float) -> np.ndarray:
        """LPS point of pixel (x = column, y = row) of one instance (a DICOM slice)."""
        if instance not in self.instances:
            raise SpineAIError(f"{self.source} has no slice with instance number {instance}")
        pos, r, c, (sx, sy) = self.instances[instance]
        return pos + x * sx * r + y * sy * c


@dataclass
class Study:
    study_id: str
    series: dict  # role -> Series, present roles only
    levels: dict = field(default_factory=dict)  # level -> LPS point (mm) from the label coordinates
    labels: Optional[np.ndarray] = None  # (25,) grades 0/1/2, -1 = not graded; None = unknown
    warnings: list = field(default_factory=list)

    @property
    def missing(self) -> list:
        return [r for r in SERIES_ROLES if r not in self.series]

    def note(self, message: str) -> None:
        self.warnings.append(message)
        warn(f"study {self.study_id}: {message}")


def series_role(description: str) -> Optional[str]:
    """The role of a series from its description ('Sagittal T1', 'SAG T2 STIR', 'ax t2 fse' ...); None when unknown."""
    d = description.lower().replace("_", " ")
    words = set(d.replace("/", " ").replace("-", " ").split())
    sagittal = "sag" in d
    axial = "ax" in d or "tra" in words or "transverse" in d
    t1 = "t1" in d
    t2 = "t2" in d or "stir" in d
    if sagittal and t1 and not t2:
        return "sagittal_t1"
    if sagittal and t2:
        return "sagittal_t2"
    if axial and t2 and not t1:
        return "axial_t2"
    return None


# ---- DICOM --------------------------------------------------------------------------------------

def _pixels(path: Path, ds):
    try:
        return np.asarray(ds.pixel_array, dtype=np.float32)
    except Exception:  # a transfer syntax pydicom cannot decode here: GDCM (SimpleITK) may
        import SimpleITK as sitk

        return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32).reshape(int(ds.Rows), int(ds.Columns))


def read_dicom_series(folder: str | os.PathLike, role: str = "", description: str = "",
                      problems: Optional[list] = None) -> Series:
    """One series from a folder of DICOM slices. Damaged or unreadable files are skipped and named in
    ``problems``; a slice position they leave empty is filled from its neighbours (linear)."""
    import pydicom

    folder = Path(folder)
    problems = problems if problems is not None else []
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    slices, bad = [], []
    for path in files:
        try:
            ds = pydicom.dcmread(str(path))
            pixels = _pixels(path, ds)
            r = np.asarray(ds.ImageOrientationPatient[:3], float)
            c = np.asarray(ds.ImageOrientationPatient[3:], float)
            pos = np.asarray(ds.ImagePositionPatient, float)
            sy, sx = (float(v) for v in ds.PixelSpacing)
            pixels = pixels * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
            slices.append((int(getattr(ds, "InstanceNumber", len(slices) + 1)), pos, r, c, sx, sy, pixels))
        except Exception as exc:  # pydicom raises many kinds for a damaged file
            bad.append(f"{path.name} ({type(exc).__name__})")
    if bad:
        problems.append(f"{len(bad)} unreadable DICOM file(s) in {folder.name}: {', '.join(bad[:5])}")
    if not slices:
        raise SpineAIError(f"{folder} holds no readable DICOM slice")
    # Keep the largest stack of one orientation and pixel grid (a series can hold a localiser or several stacks).
    groups: dict = {}
    for s in slices:
        key = (tuple(np.round(np.concatenate([s[2], s[3]]), 2)), s[6].shape, round(s[4], 3), round(s[5], 3))
        groups.setdefault(key, []).append(s)
    stack = max(groups.values(), key=len)
    if len(groups) > 1:
        problems.append(f"{folder.name}: {len(slices) - len(stack)} slice(s) of another orientation or size left out")
    _, _, r, c, sx, sy, _ = stack[0]
    n = np.cross(r, c)
    stack.sort(key=lambda s: float(np.dot(n, s[1])))
    where = np.array([float(np.dot(n, s[1])) for s in stack])
    gaps = np.diff(where)
    if len(stack) < 2 or np.median(gaps) <= 0:
        raise SpineAIError(f"{folder}: a volume needs at least two slices at different positions")
    step = float(np.median(gaps[gaps > 1e-3]))
    index = np.round((where - where[0]) / step).astype(int)
    count = int(index[-1]) + 1
    array = np.zeros((count, *stack[0][6].shape), np.float32)
    have = np.zeros(count, bool)
    for k, s in zip(index, stack):
        if not have[k]:
            array[k], have[k] = s[6], True
    if not have.all():
        empty = np.flatnonzero(~have)
        for k in empty:  # linear between the nearest slices present on each side
            lo, hi = np.flatnonzero(have[:k]), np.flatnonzero(have[k:]) + k
            if len(lo) and len(hi):
                t = (k - lo[-1]) / (hi[0] - lo[-1])
                array[k] = (1 - t) * array[lo[-1]] + t * array[hi[0]]
            else:
                array[k] = array[lo[-1] if len(lo) else hi[0]]
        problems.append(f"{folder.name}: {len(empty)} slice position(s) without a readable file, filled from "
                        "the neighbouring slices")
    volume = Volume(array, (sx, sy, step), tuple(stack[0][1]), np.stack([r, c, n], 1))
    instances = {s[0]: (s[1], s[2], s[3], (s[4], s[5])) for s in slices}
    return Series(role, volume, description, str(folder), instances)


# ---- one study ----------------------------------------------------------------------------------

def read_study(series: dict, study_id: str = "study", levels: Optional[dict] = None,
               labels: Optional[np.ndarray] = None) -> Study:
    """A study from ``{role: folder, image file or Volume}`` (roles: sagittal_t1, sagittal_t2, axial_t2);
    a role may be absent or None. DICOM folders and NIfTI / NRRD files are both accepted."""
    unknown = [r for r in series if r not in SERIES_ROLES]
    if unknown:
        raise SpineAIError(f"unknown series role(s) {', '.join(map(repr, unknown))}; known: {', '.join(SERIES_ROLES)}")
    study = Study(str(study_id), {}, dict(levels or {}), labels)
    for role in SERIES_ROLES:
        path = series.get(role)
        if path is None:
            continue
        if isinstance(path, Volume):
            study.series[role] = Series(role, path, SERIES_DESCRIPTIONS[role], f"{SERIES_DESCRIPTIONS[role]} volume")
            continue
        _add_series(study, role, Path(path), SERIES_DESCRIPTIONS[role])
    _finish(study)
    return study


def _add_series(study: Study, role: str, path: Path, description: str) -> None:
    problems: list = []
    try:
        if not path.exists():
            raise SpineAIError(f"no such file or folder: {path}")
        if path.is_dir():
            s = read_dicom_series(path, role, description, problems)
        else:
            s = Series(role, read_volume(path), description, str(path))
    except SpineAIError as exc:
        study.note(f"{SERIES_DESCRIPTIONS[role]} series left out: {exc}")
        return
    for p in problems:
        study.note(p)
    if role in study.series:
        study.note(f"a second {SERIES_DESCRIPTIONS[role]} series ({path.name}) left out; using "
                   f"{Path(study.series[role].source).name}")
        return
    study.series[role] = s


def _finish(study: Study) -> None:
    if not study.series:
        raise SpineAIError(f"study {study.study_id}: no usable series (need at least one of "
                           f"{', '.join(SERIES_DESCRIPTIONS.values())})")
    if study.missing:
        present = ", ".join(SERIES_DESCRIPTIONS[r] for r in study.series)
        study.note(f"no {' / '.join(SERIES_DESCRIPTIONS[r] for r in study.missing)} series: graded from {present}")


# ---- RSNA layout --------------------------------------------------------------------------------

def _read_csv(path: Path) -> list:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def grade_index(text: str) -> int:
    """'Normal/Mild' -> 0, 'Moderate' -> 1, 'Severe' -> 2, '' -> -1 (not graded)."""
    text = (text or "").strip()
    if not text:
        return -1
    for n, s in enumerate(SEVERITIES):
        if text.lower() == s.lower():
            return n
    raise SpineAIError(f"unknown grade {text!r}; expected one of {', '.join(SEVERITIES)} or empty")


@dataclass
class RSNADataset:
    root: Path
    split: str
    labels: dict  # study_id -> (25,) grades
    descriptions: dict  # study_id -> [(series_id, description)]
    coordinates: dict  # study_id -> rows of the label-coordinates CSV

    @property
    def study_ids(self) -> list:
        folder = self.root / f"{self.split}_images"
        on_disk = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        return sorted(set(on_disk) | set(self.descriptions), key=lambda s: (len(s), s))


def open_rsna(root: str | os.PathLike, split: str = "train") -> RSNADataset:
    """The CSVs of an RSNA-layout folder; the images are read per study by ``read_rsna_study``."""
    root = Path(root)
    if not (root / f"{split}_images").is_dir():
        raise SpineAIError(f"{root} has no {split}_images folder: not an RSNA-layout dataset")
    labels = {}
    rows = _read_csv(root / f"{split}.csv")
    if rows:
        missing = [c for c in target_columns() if c not in rows[0]]
        if missing or "study_id" not in rows[0]:
            raise SpineAIError(f"{root / f'{split}.csv'} lacks column(s) {', '.join((['study_id'] if 'study_id' not in rows[0] else []) + missing[:5])}")
        for row in rows:
            try:
                labels[row["study_id"]] = np.array([grade_index(row[c]) for c in target_columns()])
            except SpineAIError as exc:
                raise SpineAIError(f"{split}.csv, study {row['study_id']}: {exc}") from None
    descriptions: dict = {}
    for row in _read_csv(root / f"{split}_series_descriptions.csv"):
        descriptions.setdefault(row["study_id"], []).append((row["series_id"], row["series_description"]))
    coordinates: dict = {}
    for row in _read_csv(root / f"{split}_label_coordinates.csv"):
        coordinates.setdefault(row["study_id"], []).append(row)
    return RSNADataset(root, split, labels, descriptions, coordinates)


def read_rsna_study(data: RSNADataset, study_id: str) -> Study:
    study_id = str(study_id)
    folder = data.root / f"{data.split}_images" / study_id
    if not folder.is_dir():
        raise SpineAIError(f"study {study_id} has no image folder ({folder})")
    study = Study(study_id, {}, {}, data.labels.get(study_id))
    described = dict(data.descriptions.get(study_id, []))
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        description = described.get(sub.name)
        if description is None:
            study.note(f"series {sub.name} is not in {data.split}_series_descriptions.csv: left out")
            continue
        role = series_role(description)
        if role is None:
            study.note(f"series {sub.name} has an unknown type {description!r}: left out")
            continue
        _add_series(study, role, sub, description)
    for series_id in described:
        if not (folder / series_id).is_dir():
            study.note(f"series {series_id} ({described[series_id]}) is listed but has no folder")
    _finish(study)
    study.levels = levels_from_coordinates(study, data.coordinates.get(study_id, []))
    return study


def levels_from_coordinates(study: Study, rows: list) -> dict:
    """Disc-level centres (LPS mm) from label-coordinate rows: the spinal-canal point where there is
    one, else the mean of the points of a left / right pair (the midline), else any point's mean."""
    by_series = {Path(s.source).name: s for s in study.series.values()}
    points: dict = {}
    for row in rows:
        s = by_series.get(str(row.get("series_id")))
        if s is None or not s.instances:
            continue
        try:
            p = s.pixel_to_lps(int(float(row["instance_number"])), float(row["x"]), float(row["y"]))
        except (SpineAIError, KeyError, ValueError):
            continue
        points.setdefault(row["level"], {}).setdefault(row["condition"], []).append(p)
    levels = {}
    canal = condition_title(CONDITIONS[0])
    for level in LEVELS:
        got = points.get(level)
        if not got:
            continue
        if canal in got:
            levels[level] = np.mean(got[canal], 0)
            continue
        pairs = [np.mean(got[left] + got[right], 0) for left, right in
                 ((condition_title(CONDITIONS[1]), condition_title(CONDITIONS[2])),
                  (condition_title(CONDITIONS[3]), condition_title(CONDITIONS[4])))
                 if left in got and right in got]
        levels[level] = pairs[0] if pairs else np.mean([p for v in got.values() for p in v], 0)
    return levels
