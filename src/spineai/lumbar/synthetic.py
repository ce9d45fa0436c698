"""Synthetic lumbar MR studies in the RSNA 2024 layout, with narrowing of known severity per level.

Each study is a small analytic lumbar spine in patient space (LPS mm): vertebral bodies and discs
along a lordotic curve, the dural sac, posterior elements, neural foramina with their nerve roots and
the subarticular recesses. At each disc level the grade of each condition sets how much of that space
is taken by disc and hypertrophied ligament / facet (dark on every sequence):
- spinal canal stenosis: the dural sac's antero-posterior size at the disc;
- neural foraminal narrowing (left / right): the foraminal fat around the nerve root;
- subarticular stenosis (left / right): the lateral recess of the canal just above the disc.
Three series are written as DICOM with pydicom (sagittal T1; sagittal T2 or STIR; axial T2) with
tissue contrasts of those sequences, noise and a bias field, plus ``train.csv``,
``train_series_descriptions.csv`` and ``train_label_coordinates.csv`` as the challenge gave them.
These images only resemble MR: a model trained on them is a demonstration of the pipeline.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from spineai.errors import SpineAIError
from spineai.lumbar import CONDITIONS, LEVELS, SERIES_DESCRIPTIONS, SEVERITIES, condition_title, target_columns

# tissue codes and their intensity per sequence
AIR, FAT, MUSCLE, MARROW, CORTEX, DISC, CSF, NERVE, HYPERTROPHY = range(9)
CONTRAST = {
    "T1": np.array([0.0, 0.90, 0.35, 0.65, 0.08, 0.35, 0.12, 0.35, 0.12]),
    "T2": np.array([0.0, 0.70, 0.25, 0.45, 0.08, 0.75, 0.95, 0.30, 0.12]),
    "STIR": np.array([0.0, 0.08, 0.22, 0.18, 0.05, 0.70, 0.95, 0.30, 0.12]),
}
# grade -> (canal antero-posterior loss, foramen fat size, recess size), each drawn around these
_CANAL_LOSS = ((0.0, 0.15), (0.40, 0.52), (0.66, 0.78))
_FORAMEN_SIZE = ((0.9, 1.05), (0.52, 0.64), (0.22, 0.34))
_RECESS_SIZE = ((0.9, 1.05), (0.50, 0.62), (0.18, 0.30))
CANAL_Y = 22.0  # canal centre, mm posterior of the disc centre (see preprocess.DISC_TO_CANAL_MM)


@dataclass
class Anatomy:
    grades: np.ndarray  # (5 conditions, 5 levels)
    shift: np.ndarray  # LPS offset of the L3/L4 disc centre
    level_mm: float  # distance between discs
    disc_mm: float
    lordosis: float  # mm of antero-posterior bow at 80 mm from L3/L4
    canal_loss: np.ndarray  # (5,)
    foramen: np.ndarray  # (2 sides, 5)
    recess: np.ndarray  # (2 sides, 5)

    def disc_z(self) -> np.ndarray:
        return self.shift[2] + self.level_mm * np.array([2.0, 1.0, 0.0, -1.0, -2.0])

    def curve(self, z) -> np.ndarray:
        return self.shift[1] + self.lordosis * ((z - self.shift[2]) / 80.0) ** 2

    def canal_point(self, level: int, side: float = 0.0, dz: float = 0.0) -> np.ndarray:
        z = self.disc_z()[level] + dz
        return np.array([self.shift[0] + side, self.curve(z) + CANAL_Y, z])


def draw_grades(rng: np.random.Generator) -> np.ndarray:
    """(5 conditions, 5 levels) grades with a study-wide degeneration and more at the lower levels;
    about 70 % Normal/Mild, 20 % Moderate, 10 % Severe overall."""
    age = rng.uniform(0, 1)
    level_bias = np.array([-0.9, -0.5, 0.0, 0.5, 0.4])
    score = rng.normal(0, 1, (5, 5)) + 1.6 * age + level_bias[None, :]
    score[1:3] += 0.5 * rng.normal(0, 1, 5)[None, :]  # left and right sides share their level's degeneration
    score[3:5] += 0.5 * rng.normal(0, 1, 5)[None, :]
    return np.digitize(score, [1.55, 2.45]).astype(int)


def draw_anatomy(rng: np.random.Generator, grades: Optional[np.ndarray] = None) -> Anatomy:
    g = draw_grades(rng) if grades is None else np.asarray(grades, int)
    u = lambda table, grade: rng.uniform(*table[grade])  # noqa: E731
    return Anatomy(
        g, np.array([rng.uniform(-3, 3), rng.uniform(-6, 6), rng.uniform(-8, 8)]), rng.uniform(33, 38),
        rng.uniform(8, 11), rng.uniform(-3, 9),
        np.array([u(_CANAL_LOSS, k) for k in g[0]]),
        np.array([[u(_FORAMEN_SIZE, k) for k in g[side]] for side in (1, 2)]),
        np.array([[u(_RECESS_SIZE, k) for k in g[side]] for side in (3, 4)]))


def tissue(a: Anatomy, p: np.ndarray) -> np.ndarray:
    """Tissue code at LPS points ``p`` (..., 3)."""
    x, z = p[..., 0] - a.shift[0], p[..., 2]
    y = p[..., 1] - a.curve(z)  # along the spine's own antero-posterior axis
    t = np.full(x.shape, AIR, np.int8)
    t[(x / 78) ** 2 + ((y - 12) / 68) ** 2 <= 1] = FAT
    t[(x / 68) ** 2 + ((y - 12) / 58) ** 2 <= 1] = MUSCLE
    dz = z[..., None] - a.disc_z()  # (..., 5)
    nearest = np.argmin(np.abs(dz), -1)
    d = np.take_along_axis(dz, nearest[..., None], -1)[..., 0]  # signed distance to the nearest disc
    in_disc = np.abs(d) < a.disc_mm / 2
    section = (np.abs(x) / 22) ** 2.5 + (np.abs(y) / 16) ** 2.5
    body = (section <= 1) & ~in_disc & (z < a.disc_z()[0] + 60)
    t[body] = CORTEX
    t[body & (section <= 0.8)] = MARROW
    t[(section <= 1.05) & in_disc] = DISC
    # posterior elements: pedicles away from the discs, lamina and spinous process, facets at the discs
    away = np.abs(d) > a.disc_mm / 2 + 5
    t[away & (np.abs(x) > 12) & (np.abs(x) < 19) & (y > 12) & (y < 26)] = MARROW
    t[(y > 30) & (y < 36) & (np.abs(x) < 18)] = MARROW
    t[(y > 36) & (y < 58) & (np.abs(x) < 4) & away] = MARROW
    facet = (np.abs(x) > 13) & (np.abs(x) < 21) & (y > 26) & (y < 35) & (np.abs(d) < 9)
    t[facet] = CORTEX
    # dural sac with its epidural fat, narrowed at each disc by its canal grade
    loss = np.take(a.canal_loss, nearest) * np.exp(-(d / 5.5) ** 2)
    full = (x / 12.5) ** 2 + ((y - CANAL_Y) / 8.5) ** 2 <= 1
    t[full] = FAT
    sac_ap = 7.0 * (1 - loss)
    sac_centre = CANAL_Y + 7.0 * loss * 0.6  # the disc pushes from the front, the ligament from behind
    t[full & (np.abs(d) < 12) & (np.exp(-(d / 5.5) ** 2) > 0.15) & (loss > 0.05)] = HYPERTROPHY
    t[(x / 11) ** 2 + ((y - sac_centre) / np.maximum(sac_ap, 0.5)) ** 2 <= 1] = CSF
    # subarticular recesses (left = +x) and neural foramina, per side
    for s, sign in enumerate((1.0, -1.0)):
        recess = np.take(a.recess[s], nearest)
        box = (sign * x > 6.5) & (sign * x < 14) & (y > 19) & (y < 31) & (np.abs(d + 2) < 8)
        t[box] = HYPERTROPHY
        t[box & (((sign * x - 10) / (3.6 * recess)) ** 2 + ((y - 25) / (3.6 * recess)) ** 2 + ((d + 2) / 7) ** 2 <= 1)] = CSF
        size = np.take(a.foramen[s], nearest)
        lateral = (sign * x > 14) & (sign * x < 26)
        around = lateral & (((y - 19) / 7) ** 2 + ((d - 3) / 10) ** 2 <= 1)
        t[around] = HYPERTROPHY
        t[around & (((y - 19) / (6 * size)) ** 2 + ((d - 3) / (9 * size)) ** 2 <= 1)] = FAT
        t[lateral & (((y - 19) / 2.2) ** 2 + ((d - 3 - 3 * size) / 2.2) ** 2 <= 1)] = NERVE
    return t


def render(a: Anatomy, points: np.ndarray, sequence: str, rng: np.random.Generator, disc_t2_loss=True) -> np.ndarray:
    """MR-like intensities (float, about 0-1) at ``points`` (k, j, i, 3): contrast, bias field, noise."""
    codes = tissue(a, points)
    table = CONTRAST[sequence]
    img = table[codes]
    if disc_t2_loss and sequence != "T1":  # degenerated discs lose water: darker on T2 and STIR
        dz = points[..., 2][..., None] - a.disc_z()
        nearest = np.argmin(np.abs(dz), -1)
        img = np.where(codes == DISC, img - 0.13 * np.take(a.grades[0], nearest), img)
    centre = points.reshape(-1, 3).mean(0)
    bias = 1.0 + rng.uniform(-0.15, 0.15) * (points[..., 1] - centre[1]) / 80 + \
        rng.uniform(-0.15, 0.15) * (points[..., 2] - centre[2]) / 100
    img = img * bias * rng.uniform(0.9, 1.1)
    noise = rng.uniform(0.02, 0.05)
    img = np.sqrt((img + rng.normal(0, noise, img.shape)) ** 2 + rng.normal(0, noise, img.shape) ** 2)  # Rician
    return img.astype(np.float32)


@dataclass
class SeriesGeometry:
    origin: np.ndarray  # LPS of the first slice's first pixel
    row_dir: np.ndarray  # along a row (columns increase)
    col_dir: np.ndarray  # along a column (rows increase)
    spacing: tuple  # (column spacing, row spacing) mm
    shape: tuple  # (slices, rows, columns)
    step: float  # slice spacing mm

    def points(self) -> np.ndarray:
        k, j, i = (np.arange(n, dtype=np.float32) for n in self.shape)
        n = np.cross(self.row_dir, self.col_dir)
        return (self.origin + k[:, None, None, None] * self.step * n
                + j[None, :, None, None] * self.spacing[1] * self.col_dir
                + i[None, None, :, None] * self.spacing[0] * self.row_dir)

    def pixel(self, p: np.ndarray) -> tuple[int, float, float]:
        """(slice index, column x, row y) of an LPS point: the nearest slice."""
        n = np.cross(self.row_dir, self.col_dir)
        d = np.asarray(p, float) - self.origin
        return (int(np.clip(round(float(d @ n) / self.step), 0, self.shape[0] - 1)),
                float(d @ self.row_dir) / self.spacing[0], float(d @ self.col_dir) / self.spacing[1])


def series_geometry(a: Anatomy, role: str, rng: np.random.Generator) -> SeriesGeometry:
    z_top, z_bottom = a.disc_z()[0] + 35, a.disc_z()[4] - 35
    if role == "axial_t2":
        n = int((z_top - z_bottom) / 4.0) + 1
        # slices from inferior to superior (normal = +S); rows along P, columns along L
        return SeriesGeometry(np.array([a.shift[0] - 64.8, a.shift[1] - 45.0, z_bottom]), np.array([1.0, 0, 0]),
                              np.array([0, 1.0, 0]), (1.2, 1.2), (n, 108, 108), 4.0)
    step = 3.5
    centre = a.shift[2] + rng.uniform(-5, 5)
    # slices from left to right (normal = row x column = +R); columns along P, rows along I
    return SeriesGeometry(np.array([a.shift[0] + 8 * step + rng.uniform(-1, 1), a.shift[1] - 60.0, centre + 102.0]),
                          np.array([0, 1.0, 0]), np.array([0, 0, -1.0]), (1.2, 1.2), (17, 170, 125), step)


def write_dicom_series(folder: Path, pixels: np.ndarray, geo: SeriesGeometry, description: str, study_uid: str,
                       series_uid: str, series_number: int, patient_id: str) -> None:
    """One DICOM file per slice (``INSTANCE.dcm``, as the challenge named them), uint16 MR images."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    modern = int(pydicom.__version__.split(".")[0]) >= 3
    n = np.cross(geo.row_dir, geo.col_dir)
    scaled = np.clip(pixels * 1000.0, 0, 65535).astype(np.uint16)
    for k in range(geo.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{k + 1}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "MR", patient_id, "SYNTHETIC^LUMBAR"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = description, series_number, k + 1
        ds.ImagePositionPatient = [f"{v:.4f}" for v in geo.origin + k * geo.step * n]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in list(geo.row_dir) + list(geo.col_dir)]
        ds.PixelSpacing = [f"{geo.spacing[1]:.4f}", f"{geo.spacing[0]:.4f}"]
        ds.SliceThickness = f"{geo.step:.2f}"
        ds.Rows, ds.Columns = geo.shape[1], geo.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = scaled[k].tobytes()
        if modern:
            ds.save_as(str(folder / f"{k + 1}.dcm"), enforce_file_format=True)
        else:  # pydicom 2 (the last for Python 3.9): the encoding is set on the dataset
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(str(folder / f"{k + 1}.dcm"), write_like_original=False)


CSV_NAMES = ("{split}.csv", "{split}_series_descriptions.csv", "{split}_label_coordinates.csv")


def generate_study(root: Path, study_id: int, rng: np.random.Generator, split: str = "train",
                   roles=("sagittal_t1", "sagittal_t2", "axial_t2")) -> tuple[dict, list, list]:
    """Write one study's DICOM series under ``root/{split}_images/STUDY``; return its CSV rows
    (labels, series descriptions, label coordinates)."""
    from pydicom.uid import generate_uid

    a = draw_anatomy(rng)
    study_uid = generate_uid()
    descriptions, coords = [], []
    geos = {}
    for number, role in enumerate(roles, start=1):
        series_id = f"{study_id}{number:02d}"
        seq = {"sagittal_t1": "T1", "axial_t2": "T2"}.get(role) or ("STIR" if rng.random() < 0.25 else "T2")
        geo = series_geometry(a, role, rng)
        pixels = render(a, geo.points(), seq, rng)
        write_dicom_series(root / f"{split}_images" / str(study_id) / series_id, pixels, geo,
                           SERIES_DESCRIPTIONS[role], study_uid, generate_uid(), number, str(study_id))
        descriptions.append({"study_id": study_id, "series_id": series_id, "series_description": SERIES_DESCRIPTIONS[role]})
        geos[role] = (series_id, geo)
    where = {  # condition -> (series role, side offset mm, S-I offset mm), as the challenge's readers marked them
        CONDITIONS[0]: ("sagittal_t2", 0.0, 0.0), CONDITIONS[1]: ("sagittal_t1", 20.0, 3.0),
        CONDITIONS[2]: ("sagittal_t1", -20.0, 3.0), CONDITIONS[3]: ("axial_t2", 10.0, -2.0),
        CONDITIONS[4]: ("axial_t2", -10.0, -2.0)}
    for c, (role, side, dz) in where.items():
        if role not in geos:
            continue
        series_id, geo = geos[role]
        for li, level in enumerate(LEVELS):
            p = a.canal_point(li, side, dz)
            if c in CONDITIONS[1:3]:
                p[1] -= 3.0  # the foramen lies a little in front of the canal's centre
            k, x, y = geo.pixel(p)
            coords.append({"study_id": study_id, "series_id": series_id, "instance_number": k + 1,
                           "condition": condition_title(c), "level": level, "x": f"{x:.2f}", "y": f"{y:.2f}"})
    labels = {"study_id": study_id}
    labels.update({col: SEVERITIES[g] for col, g in zip(target_columns(), a.grades.ravel())})
    return labels, descriptions, coords


def generate_dataset(root: str | os.PathLike, studies: int, seed: int = 0, split: str = "train",
                     first_id: int = 1000, progress=None, overwrite: bool = False) -> Path:
    """``studies`` synthetic studies in the RSNA layout under ``root`` (seeded: same seed, same data)."""
    root = Path(root)
    if (root / f"{split}_images").exists() and not overwrite:
        raise SpineAIError(f"{root / f'{split}_images'} exists: choose another folder or pass overwrite")
    rows: tuple = ([], [], [])
    for n in range(studies):
        if progress:
            progress(n, studies, f"study {first_id + n}")
        out = generate_study(root, first_id + n, np.random.default_rng((seed, n)), split)
        rows[0].append(out[0])
        rows[1].extend(out[1])
        rows[2].extend(out[2])
    fields = (["study_id"] + target_columns(), ["study_id", "series_id", "series_description"],
              ["study_id", "series_id", "instance_number", "condition", "level", "x", "y"])
    for name, fieldnames, content in zip(CSV_NAMES, fields, rows):
        with open(root / name.format(split=split), "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(content)
    (root / MARKER).write_text(json.dumps({"studies": studies, "seed": seed, "split": split, "first_id": first_id}))
    if progress:
        progress(studies, studies, "done")
    return root


MARKER = "synthetic.json"


def ensure_dataset(root: str | os.PathLike, studies: int, seed: int = 0, progress=None) -> Path:
    """The synthetic dataset at ``root``: generated unless a complete one with the same settings is there."""
    root = Path(root)
    marker = root / MARKER
    if marker.exists():
        made = json.loads(marker.read_text())
        if made.get("studies") != studies or made.get("seed") != seed:
            raise SpineAIError(f"{root} holds a synthetic dataset of {made.get('studies')} studies with seed "
                               f"{made.get('seed')}, not {studies} with seed {seed}: use another --out")
        return root
    return generate_dataset(root, studies, seed, progress=progress, overwrite=True)
