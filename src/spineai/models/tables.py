"""Feature tables (CSV / XLSX): reading, matching feature columns by name, NaN and label checks."""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from spineai.errors import SpineAIError
from spineai.featureset import FEATURES_31, LIFEX_31, LIFEX_TO_ENGINE

ID_COLUMNS = ("lesion_id", "case_id", "id", "ID", "name", "case")
GROUP_COLUMNS = ("patient_id", "patient", "PatientID", "subject_id")
# Order used when a table's labels are the study's diagnoses; other labels are sorted.
KNOWN_CLASS_ORDER = ("SD", "MET", "STB")
ENGINE_TO_LIFEX = {v: k for k, v in LIFEX_TO_ENGINE.items()}


@dataclass
class Table:
    """A table read as text cells: ``columns`` and ``rows`` (lists of strings), from ``source``."""

    columns: list[str]
    rows: list[list[str]]
    source: str = "<table>"

    def column(self, name: str) -> list[str]:
        if name not in self.columns:
            raise SpineAIError(f"{self.source} has no column {name!r}; its columns are: {', '.join(self.columns)}")
        j = self.columns.index(name)
        return [row[j] for row in self.rows]

    def numeric(self, name: str) -> np.ndarray:
        return np.array([_to_float(v) for v in self.column(name)], dtype=np.float64)

    def is_numeric(self, name: str) -> bool:
        vals = [v for v in self.column(name) if v.strip() not in ("", "nan", "NaN", "NA", "N/A")]
        try:
            [float(v) for v in vals]
        except ValueError:
            return False
        return True

    def row_ids(self, id_column: str | None = None) -> list[str]:
        col = id_column or next((c for c in ID_COLUMNS if c in self.columns), None)
        if col is None:
            return [f"row {i + 1}" for i in range(len(self.rows))]
        return self.column(col)

    def __len__(self) -> int:
        return len(self.rows)


def _to_float(text) -> float:
    if text is None:
        return math.nan
    if isinstance(text, (int, float)):
        return float(text)
    t = str(text).strip()
    if t in ("", "nan", "NaN", "NA", "N/A", "null", "None"):
        return math.nan
    try:
        return float(t)
    except ValueError:
        return math.nan


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return repr(v)
    return str(v)


def read_table(path: str | os.PathLike) -> Table:
    """Read a CSV or XLSX table (first sheet, first row = header)."""
    path = Path(path)
    if not path.is_file():
        raise SpineAIError(f"table {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        import openpyxl

        try:
            wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:
            raise SpineAIError(f"cannot read {path} as an XLSX workbook: {exc}") from None
        rows = [list(r) for r in wb.worksheets[0].iter_rows(values_only=True)]
        wb.close()
        rows = [r for r in rows if any(v is not None and str(v).strip() != "" for v in r)]
        if not rows:
            raise SpineAIError(f"{path} is empty")
        header = [str(v).strip() if v is not None else "" for v in rows[0]]
        body = [[_cell(v) for v in r] for r in rows[1:]]
    elif suffix in (".csv", ".tsv", ".txt"):
        text = _decode_text(path)
        if not text.strip():
            raise SpineAIError(f"{path} is empty")
        dialect = csv.excel_tab if suffix == ".tsv" else csv.excel
        if suffix != ".tsv":
            try:
                dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
        rows = [r for r in csv.reader(text.splitlines(), dialect) if any(c.strip() for c in r)]
        header = [c.strip() for c in rows[0]]
        body = rows[1:]
        if dialect.delimiter != ",":
            # A semicolon or tab table from a European spreadsheet writes 0,5 for 0.5.
            body = [[_DECIMAL_COMMA.sub(r"\1.\2", c) for c in r] for r in body]
    else:
        raise SpineAIError(f"unknown table format for {path}: use .csv, .tsv or .xlsx")
    width = len(header)
    if "" in header:
        raise SpineAIError(f"{path}: column {header.index('') + 1} has no name in the header row")
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise SpineAIError(f"{path}: duplicate column names: {', '.join(dup)}")
    for i, r in enumerate(body):
        if len(r) > width and any(c.strip() for c in r[width:]):
            raise SpineAIError(f"{path}: row {i + 2} has {len(r)} cells but the header has {width} columns")
    body = [(list(r) + [""] * width)[:width] for r in body]
    if not body:
        raise SpineAIError(f"{path} has a header but no rows")
    return Table(header, body, str(path))


_DECIMAL_COMMA = re.compile(r"^\s*([-+]?\d+),(\d+(?:[eE][-+]?\d+)?)\s*$")


def _decode_text(path: Path) -> str:
    """UTF-8 (with or without BOM) or UTF-16 with its BOM, as spreadsheets save them; anything
    else is named rather than guessed."""
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SpineAIError(f"{path} is not {encoding.upper().replace('-SIG', '')} text (byte {exc.start} is "
                           f"{data[exc.start:exc.start + 1]!r}): save it as 'CSV UTF-8'") from None


def table_from_records(records: Sequence[Mapping[str, float]], ids: Sequence[str] | None = None) -> Table:
    columns = list(records[0].keys()) if records else []
    rows = [[_cell(rec.get(c)) for c in columns] for rec in records]
    if ids is not None:
        columns = ["id"] + columns
        rows = [[str(i)] + r for i, r in zip(ids, rows)]
    return Table(columns, rows, "<records>")


def feature_columns_for_training(table: Table, label_column: str, exclude: Sequence[str] = ()) -> list[str]:
    """Feature columns of a training table: the 31 study features when present, else every
    numeric column that is not the label, an id, a group or an excluded column."""
    for known in (LIFEX_31, FEATURES_31):
        if all(c in table.columns for c in known):
            return list(known)
    skip = {label_column, *exclude, *ID_COLUMNS, *GROUP_COLUMNS}
    cols = [c for c in table.columns if c not in skip and table.is_numeric(c)]
    if not cols:
        raise SpineAIError(f"{table.source} has no numeric feature columns besides the label {label_column!r}")
    return cols


def match_features(table: Table, feature_names: Sequence[str], allow_alias: bool = True) -> tuple[list[str], bool]:
    """Map the bundle's feature names onto the table's columns.

    Returns (table column for each feature, whether the other naming convention was used: LIFEx
    names for an engine-named model or the reverse). Refuses with the missing / extra names.
    """
    cols = set(table.columns)
    if all(f in cols for f in feature_names):
        return list(feature_names), False
    if allow_alias:
        alias = [LIFEX_TO_ENGINE.get(f) or ENGINE_TO_LIFEX.get(f) for f in feature_names]
        if all(a is not None and a in cols for a in alias):
            return alias, True
    missing = [f for f in feature_names if f not in cols]
    known_other = set(ID_COLUMNS) | set(GROUP_COLUMNS)
    extra = [c for c in table.columns if c not in set(feature_names) and c not in known_other and table.is_numeric(c)]
    raise SpineAIError(
        f"the columns of {table.source} do not match the model's {len(feature_names)} features: "
        f"missing {len(missing)}: {', '.join(missing)}"
        + (f"; extra {len(extra)}: {', '.join(extra)}" if extra else "; no extra numeric columns")
    )


# No radiomic feature comes near this; beyond it squares and sums overflow to infinity.
MAX_ABS_VALUE = 1e100


def drop_duplicate_rows(table: Table, feature_columns: Sequence[str], label_column: str) -> Table:
    """Training rows that repeat inflate cross-validation (the copy lands in the test fold): a row
    repeated whole, or the same features and label under another id, is dropped with a warning; an
    id or a feature vector that appears with different contents or labels is refused."""
    from spineai.errors import warn

    id_col = next((c for c in ID_COLUMNS if c in table.columns), None)
    ids = table.column(id_col) if id_col else [None] * len(table)
    label_j = table.columns.index(label_column)
    feat_j = [table.columns.index(c) for c in feature_columns]
    keep, seen_id, seen_features, dropped = [], {}, {}, []
    for i, row in enumerate(table.rows):
        rid = ids[i]
        if rid is not None and rid.strip() in seen_id:
            first = seen_id[rid.strip()]
            if table.rows[first] != row:
                raise SpineAIError(f"{table.source}: the {id_col} {rid!r} appears on rows {first + 2} and {i + 2} with "
                                   f"different values; one id, one row")
            dropped.append(i)
            continue
        key = tuple(_to_float(row[j]) for j in feat_j)
        if key in seen_features and all(np.isfinite(key)):
            first = seen_features[key]
            if table.rows[first][label_j].strip() != row[label_j].strip():
                raise SpineAIError(f"{table.source}: rows {first + 2} and {i + 2} have the same features but the labels "
                                   f"{table.rows[first][label_j]!r} and {row[label_j]!r}")
            dropped.append(i)
            continue
        if rid is not None:
            seen_id[rid.strip()] = i
        seen_features.setdefault(key, i)
        keep.append(row)
    if dropped:
        shown = ", ".join(str(i + 2) for i in dropped[:10]) + (f" and {len(dropped) - 10} more" if len(dropped) > 10 else "")
        warn(f"{table.source}: {len(dropped)} duplicated row(s) dropped (file rows {shown}): a repeated case would "
             f"sit in both training and test folds and inflate the scores")
    return Table(table.columns, keep, table.source)


def nan_report(X: np.ndarray, row_ids: Sequence[str], columns: Sequence[str], limit: int = 10,
               bad: np.ndarray | None = None, what: str = "missing or non-numeric values") -> str:
    bad = ~np.isfinite(X) if bad is None else bad
    rows = [row_ids[i] for i in np.flatnonzero(bad.any(axis=1))]
    cols = [columns[j] for j in np.flatnonzero(bad.any(axis=0))]
    more_r = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    more_c = f" and {len(cols) - limit} more" if len(cols) > limit else ""
    return (
        f"{int(bad.sum())} {what} in rows {', '.join(rows[:limit])}{more_r} "
        f"(columns {', '.join(cols[:limit])}{more_c})"
    )


def feature_matrix(
    table: Table,
    columns: Sequence[str],
    id_column: str | None = None,
    impute: Mapping[str, float] | None = None,
) -> np.ndarray:
    """(n, len(columns)) float64; NaN / empty / text cells are refused with their rows and columns
    unless ``impute`` (column -> value) is given explicitly."""
    X = np.column_stack([table.numeric(c) for c in columns]) if columns else np.zeros((len(table), 0))
    bad = ~np.isfinite(X)
    if bad.any():
        if impute is None:
            raise SpineAIError(
                f"{table.source}: {nan_report(X, table.row_ids(id_column), columns)}; fix them or choose "
                f"imputation explicitly (--impute median)"
            )
        for j, c in enumerate(columns):
            X[bad[:, j], j] = impute[c]
    huge = np.abs(X) > MAX_ABS_VALUE
    if huge.any():
        raise SpineAIError(f"{table.source}: {nan_report(X, table.row_ids(id_column), columns, bad=huge, what='values beyond ±1e100')}: "
                           f"no feature is that large; the table has an export or unit error")
    return X


@dataclass
class Labels:
    y: np.ndarray  # int class indices
    classes: list[str]
    counts: dict[str, int] = field(default_factory=dict)


def encode_labels(values: Sequence[str], source: str = "labels", min_per_class: int = 2) -> Labels:
    texts = [str(v).strip() for v in values]
    empty = [i + 1 for i, t in enumerate(texts) if t in ("", "nan", "NaN", "NA")]
    if empty:
        raise SpineAIError(f"{source}: {len(empty)} rows have no label (rows {', '.join(map(str, empty[:10]))})")
    texts = [_label_text(t) for t in texts]
    found = set(texts)
    _refuse_near_duplicate_labels(texts, source)
    if len(found) < 2:
        raise SpineAIError(f"{source}: a single class ({next(iter(found))!r}) in the labels; a classifier needs at least two")
    if found <= set(KNOWN_CLASS_ORDER):
        classes = [c for c in KNOWN_CLASS_ORDER if c in found]
    else:
        try:
            classes = sorted(found, key=float)
        except ValueError:
            classes = sorted(found)
    y = np.array([classes.index(t) for t in texts], dtype=np.int64)
    counts = {c: int((y == k).sum()) for k, c in enumerate(classes)}
    small = [f"{c} ({n})" for c, n in counts.items() if n < min_per_class]
    if small:
        raise SpineAIError(f"{source}: too few samples of class {', '.join(small)}: at least {min_per_class} per class "
                           f"needed (label counts: {label_counts_text(texts)})")
    return Labels(y, classes, counts)


def label_counts_text(texts: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for t in texts:
        counts[t] = counts.get(t, 0) + 1
    return ", ".join(f"{t!r} {n}" for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _refuse_near_duplicate_labels(texts: Sequence[str], source: str) -> None:
    """'Met' beside 'MET' (or 'MET ' / 'M E T') is a typo, not a third class."""
    groups: dict[str, set] = {}
    for t in texts:
        groups.setdefault(re.sub(r"[\s_.-]+", "", t).casefold(), set()).add(t)
    near = [sorted(g) for g in groups.values() if len(g) > 1]
    if near:
        raise SpineAIError(f"{source}: labels that differ only in case, spaces or punctuation: "
                           + "; ".join(" vs ".join(repr(t) for t in g) for g in near)
                           + f" (label counts: {label_counts_text(texts)}); make each class one spelling")


def _label_text(t: str) -> str:
    try:
        f = float(t)
        return str(int(f)) if f.is_integer() else t
    except ValueError:
        return t


def check_no_label_leak(table: Table, columns: Sequence[str], y: np.ndarray, label_column: str) -> None:
    """Refuse a feature column that is the label in another form (e.g. 'label' next to 'diagnosis')."""
    for c in columns:
        v = table.numeric(c)
        if not np.all(np.isfinite(v)):
            continue
        mapping: dict[float, set] = {}
        for a, b in zip(v, y):
            mapping.setdefault(float(a), set()).add(int(b))
        if len(mapping) == len(set(y.tolist())) and all(len(s) == 1 for s in mapping.values()):
            raise SpineAIError(
                f"column {c!r} encodes the label {label_column!r} exactly: it would leak the answer; "
                f"leave it out with --exclude {c}"
            )


def check_constant(X: np.ndarray, columns: Sequence[str], source: str) -> None:
    const = [c for j, c in enumerate(columns) if np.ptp(X[:, j]) == 0]
    if const:
        raise SpineAIError(f"{source}: constant feature columns carry no information: {', '.join(const)}; leave them out with --exclude")
