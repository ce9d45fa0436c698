"""The cohort database as one table (one row per completed case) in CSV or Parquet."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Sequence

from spineai.errors import SpineAIError
from spineai.cohort.store import CohortDB

FORMATS = (".csv", ".parquet")
PREDICTION_COLUMNS = {"classify": "", "classify-image": "image_"}  # step -> column prefix


def cohort_rows(db: CohortDB, steps: Sequence[str], case_ids: Sequence[str] | None = None,
                label_column: str = "diagnosis") -> tuple[list[str], list[dict]]:
    """(columns, rows) of the cases whose requested ``steps`` are all done, in manifest order:
    ``id``, ``patient_id`` and the label / clinical / annotation columns when the cohort has them,
    the features, the prediction (model, class, probabilities, in-distribution), the image model's
    (``image_model``, ``image_predicted_class``, ``image_p_<class>``), then ``prov_``
    provenance columns, as ``spineai features`` writes them."""
    from spineai.radiomics import ID_COLUMN, PROVENANCE_PREFIX

    ids = list(case_ids) if case_ids is not None else db.case_ids()
    state = db.steps()
    masks = db.mask_info()
    rows, clinical_cols, feature_cols, prov_cols, class_cols = [], [], [], [], {}
    optional = {"patient_id": False, label_column: False, "annotation": False}
    for cid in ids:
        case = db.case_row(cid)
        needed = [s for s in steps if not (s == "segment" and (case["mask"] or masks.get(cid, ("",))[0] == "annotation"))]
        if any(state.get((cid, s), ("",))[0] != "done" for s in needed):
            continue
        row = {ID_COLUMN: cid, "patient_id": case["patient_id"], label_column: case["outcome"]}
        optional["patient_id"] |= case["patient_id"] != cid
        optional[label_column] |= bool(case["outcome"])
        if case["annotation_status"] == "reviewed":
            optional["annotation"] = True
        row.update(annotation_status=case["annotation_status"], reviewer=case["reviewer"] or "",
                   annotation_label=case["annotation_label"] or "")
        for k, v in json.loads(case["clinical"] or "{}").items():
            clinical_cols += [k] if k not in clinical_cols else []
            row[k] = v
        f = db.features(cid)
        if f is not None:
            for k, v in f["values"].items():
                feature_cols += [k] if k not in feature_cols else []
                row[k] = v
            for k, v in f["provenance"].items():
                key = PROVENANCE_PREFIX + k
                prov_cols += [key] if key not in prov_cols else []
                row[key] = v if isinstance(v, str) or v is None else json.dumps(v)  # as spineai features writes it
        for step, prefix in PREDICTION_COLUMNS.items():
            p = db.prediction(cid, step) if step in steps else None
            if p is None:
                continue
            demonstration = " (DEMONSTRATION)" if p["demonstration"] else ""
            row[prefix + "model"] = f"{p['model_id']} {p['model_version']}{demonstration}"
            row[prefix + "predicted_class"] = p["predicted_class"]
            if p["in_distribution"] is not None:
                row[prefix + "in_distribution"] = p["in_distribution"]
            names = class_cols.setdefault(step, [])
            for c, v in p["probabilities"].items():
                names += [f"{prefix}p_{c}"] if f"{prefix}p_{c}" not in names else []
                row[f"{prefix}p_{c}"] = v
        rows.append(row)
    columns = [ID_COLUMN] + [c for c in ("patient_id", label_column) if optional[c]]
    if optional["annotation"]:
        columns += ["annotation_status", "reviewer", "annotation_label"]
    columns += clinical_cols + feature_cols
    if "classify" in class_cols:
        columns += ["model", "predicted_class"] + class_cols["classify"] + ["in_distribution"]
    if "classify-image" in class_cols:  # the image model has no out-of-distribution check
        columns += ["image_model", "image_predicted_class"] + class_cols["classify-image"]
    columns += prov_cols
    return columns, rows


def write_table(columns: Sequence[str], rows: Sequence[dict], path: str | os.PathLike, overwrite: bool = False) -> Path:
    """CSV or Parquet by the file's suffix, written and read back before it replaces anything."""
    from spineai.output import atomic_write, check_output_path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise SpineAIError(f"cannot export to {path.name}: the file name must end in {' or '.join(FORMATS)}")
    if not rows:
        raise SpineAIError("no case has finished every requested step: nothing to export")
    if suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise SpineAIError("Parquet export needs pyarrow, which is not installed (pip install pyarrow); "
                               "export to .csv instead") from None
        check_output_path(path, overwrite)
        table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])

        def verify(tmp: Path) -> None:
            back = pq.read_table(tmp)
            if back.num_rows != len(rows) or back.column_names != list(columns):
                raise ValueError("the Parquet file does not read back as written")

        return atomic_write(path, lambda tmp: pq.write_table(table, tmp), overwrite=overwrite, verify=verify)
    check_output_path(path, overwrite)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(columns)
            for r in rows:
                w.writerow([_cell(r.get(c)) for c in columns])

    return atomic_write(path, write, overwrite=overwrite)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)
