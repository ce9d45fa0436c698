"""The cohort manifest: one CSV row per case (lesion).

Columns (names are case-sensitive; relative paths are read from the manifest's folder):

- ``id`` (or ``case_id``): the case, unique;
- ``patient_id`` (optional, default the case id): cases of one patient stay on one side of every split;
- ``image``: the image the steps read (NIfTI / NRRD / MetaImage / DICOM folder); further images
  in ``image_<name>`` columns (e.g. ``image_t1``) are recorded with the case for other models;
- ``mask`` (a mask or label map on the image's grid) and / or ``seed`` (a click in RAS millimetres,
  ``x y z`` or ``x,y,z``, as Slicer's markups: the ``segment`` step grows the lesion from it);
- ``label``: the mask's label value of this lesion (default 1), as the earlier feature-only manifest;
- the outcome column (``--label-column``, default ``diagnosis``): the class label, optional;
- every other column is a clinical variable, kept as text (the fusion reads it as numbers).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from spineai.errors import SpineAIError

ID_COLUMNS = ("id", "case_id")
DEFAULT_LABEL_COLUMN = "diagnosis"
STRUCTURAL = {"id", "case_id", "patient_id", "image", "mask", "seed", "label"}


@dataclass(frozen=True)
class CohortCase:
    id: str
    image: Path
    mask: Path | None = None
    label: int = 1
    patient_id: str = ""
    seed: tuple | None = None  # RAS millimetres
    outcome: str = ""
    clinical: dict = field(default_factory=dict, compare=False, hash=False)
    images: dict = field(default_factory=dict, compare=False, hash=False)  # further images, by name

    @property
    def patient(self) -> str:
        return self.patient_id or self.id


def _seed(text: str, where: str) -> tuple:
    parts = text.replace(",", " ").replace(";", " ").split()
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise SpineAIError(f"{where}: seed must be three numbers (RAS mm, 'x y z' or 'x,y,z'), got {text!r}")
    return values


def read_manifest(path: str | Path, label_column: str = DEFAULT_LABEL_COLUMN) -> list[CohortCase]:
    path = Path(path)
    if not path.is_file():
        raise SpineAIError(f"no such manifest file: {path}")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        id_column = next((c for c in ID_COLUMNS if c in columns), None)
        missing = [c for c, ok in (("id", id_column), ("image", "image" in columns),
                                   ("mask", "mask" in columns or "seed" in columns)) if not ok]
        if missing:
            raise SpineAIError(
                f"the manifest {path} lacks column(s) {', '.join(missing)}; it needs id, image, and mask or seed, "
                f"optionally patient_id, label, {label_column} and clinical columns (columns found: "
                f"{', '.join(columns) or 'none'})")
        cases, seen = [], set()
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            where = f"manifest {path}, line {line}"
            cid, mask, seed = row[id_column], row.get("mask", ""), row.get("seed", "")
            if not cid or not row["image"] or not (mask or seed):
                raise SpineAIError(f"{where}: id, image and a mask or a seed must all be filled in")
            if cid in seen:
                raise SpineAIError(f"{where}: the id {cid!r} appears twice")
            seen.add(cid)
            try:
                label = int(row.get("label") or 1)
            except ValueError:
                raise SpineAIError(f"{where}: label must be an integer, got {row['label']!r}") from None
            images = {k[len("image_"):]: str(path.parent / v) for k, v in row.items() if k.startswith("image_") and v}
            clinical = {k: v for k, v in row.items()
                        if k not in STRUCTURAL and k != label_column and not k.startswith("image_")}
            cases.append(CohortCase(cid, path.parent / row["image"], path.parent / mask if mask else None, label,
                                    row.get("patient_id", ""), _seed(seed, where) if seed else None,
                                    row.get(label_column, ""), clinical, images))
    if not cases:
        raise SpineAIError(f"the manifest {path} lists no cases")
    return cases
