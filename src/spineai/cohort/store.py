"""The cohort database: one SQLite file (no server) holding every case, step, mask, feature vector,
prediction, error, annotation, run, engine and model version and timing.

Keep the database on a local disk of the machine that runs the command (images may be on shared
storage). Only the process that runs the cohort writes it, one transaction per finished case (workers, local
or on Dask, return plain results), so a crash, kill -9 or Ctrl-C loses at most the cases in flight.
A step counts as done while its input key (the files' size and mtime, the seed, the parameter set's
and the model's sha256, the mask it read) is unchanged; a rerun computes only what is not done.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sqlite3
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from spineai import __version__
from spineai.errors import SpineAIError
from spineai.cohort.manifest import CohortCase

SCHEMA_VERSION = "2"  # 2: predictions keyed by (case, step): classify and classify-image
ANNOTATION_STATUSES = ("to do", "segmented", "reviewed")

PREDICTIONS_TABLE = """CREATE TABLE IF NOT EXISTS predictions (case_id TEXT, step TEXT, model_id TEXT,
    model_version TEXT, model_sha256 TEXT, demonstration INTEGER, probabilities TEXT, predicted_class TEXT,
    in_distribution INTEGER, warnings TEXT, PRIMARY KEY (case_id, step))"""
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (run_id INTEGER PRIMARY KEY, started TEXT, finished TEXT, engine_version TEXT,
    steps TEXT, executor TEXT, workers INTEGER, manifest TEXT, parameter_set TEXT, model TEXT,
    cases_done INTEGER, cases_failed INTEGER, seconds REAL);
CREATE TABLE IF NOT EXISTS cases (case_id TEXT PRIMARY KEY, position INTEGER, patient_id TEXT, image TEXT,
    images TEXT, mask TEXT, seed TEXT, mask_label INTEGER, outcome TEXT, clinical TEXT,
    annotation_status TEXT NOT NULL DEFAULT 'to do', reviewer TEXT, annotation_label TEXT, annotated_at TEXT);
CREATE TABLE IF NOT EXISTS steps (case_id TEXT, step TEXT, status TEXT, input_key TEXT, engine_version TEXT,
    run_id INTEGER, seconds REAL, finished_at TEXT, detail TEXT, PRIMARY KEY (case_id, step));
CREATE TABLE IF NOT EXISTS masks (case_id TEXT PRIMARY KEY, source TEXT, shape TEXT, data BLOB, sha256 TEXT,
    voxels INTEGER, saved_at TEXT);
CREATE TABLE IF NOT EXISTS features (case_id TEXT PRIMARY KEY, parameter_set TEXT, parameter_sha256 TEXT,
    feature_values TEXT, provenance TEXT);
CREATE TABLE IF NOT EXISTS errors (error_id INTEGER PRIMARY KEY AUTOINCREMENT, case_id TEXT, step TEXT,
    run_id INTEGER, message TEXT, at TEXT, engine_version TEXT);
""" + PREDICTIONS_TABLE + ";\n"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def file_stamp(path) -> str:
    try:
        st = Path(path).stat()
    except (OSError, TypeError):
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def key_of(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def pack_mask(mask: np.ndarray) -> tuple[list, bytes, str, int]:
    """A binary mask as (shape, zlib-compressed bits, sha256 of those bytes, voxel count)."""
    bits = np.asarray(mask).astype(bool)
    data = zlib.compress(np.packbits(bits.ravel()).tobytes(), 6)
    return list(bits.shape), data, hashlib.sha256(data).hexdigest(), int(bits.sum())


def unpack_mask(shape: Sequence[int], data: bytes) -> np.ndarray:
    n = int(np.prod(shape))
    bits = np.unpackbits(np.frombuffer(zlib.decompress(data), dtype=np.uint8), count=n)
    return bits.reshape(tuple(shape)).astype(np.uint8)


def remove_database(path) -> None:
    """Delete a closed database with its write-ahead log: a stale log beside a new database of the
    same name would be replayed into it."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)


class CohortDB:
    """The database of one cohort (``path``), created when absent. Use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30)
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables:  # someone else's database: add nothing to it
                self.db.close()
                raise SpineAIError(f"{self.path} is an SQLite database but not a SpineAI cohort database (it has "
                                   f"no meta table): choose another --db; it was left unchanged")
            # Write-ahead log: one fsync per committed case instead of three, and Slicer can read
            # while a run writes. It needs a local disk (not NFS / SMB) for the database itself.
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise SpineAIError(f"{self.path} is not a SpineAI cohort database or is damaged ({exc}): choose another "
                               f"--db, or delete it to start again") from None
        if row is not None and row[0] == "1":
            self._migrate_from_1()
        elif row is None:
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (now(),))
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('created_by', ?)", (f"spineai {__version__}",))
        elif row[0] != SCHEMA_VERSION:
            self.close()
            raise SpineAIError(f"{self.path} has cohort database schema {row[0]}; this SpineAI reads schema "
                               f"{SCHEMA_VERSION}: use the SpineAI version that made it")

    def _migrate_from_1(self) -> None:
        # Schema 1 kept one prediction per case (the classify step's): re-key it by step, keep every row.
        columns = [r[1] for r in self.db.execute("PRAGMA table_info(predictions)")]
        with self.transaction():
            if "step" not in columns:
                self.db.execute("ALTER TABLE predictions RENAME TO predictions_schema1")
                self.db.execute(PREDICTIONS_TABLE)
                self.db.execute("INSERT INTO predictions SELECT case_id, 'classify', model_id, model_version, "
                                "model_sha256, demonstration, probabilities, predicted_class, in_distribution, "
                                "warnings FROM predictions_schema1")
                self.db.execute("DROP TABLE predictions_schema1")
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.db.close()

    def transaction(self):
        return _Transaction(self.db)

    # ---- cases ----------------------------------------------------------------------------
    def register(self, cases: Sequence[CohortCase]) -> None:
        """Add or update the manifest's cases; annotations already made are kept."""
        with self.transaction():
            for n, c in enumerate(cases):
                self.db.execute(
                    "INSERT INTO cases (case_id, position, patient_id, image, images, mask, seed, mask_label, outcome, "
                    "clinical) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(case_id) DO UPDATE SET "
                    "position=excluded.position, patient_id=excluded.patient_id, image=excluded.image, "
                    "images=excluded.images, mask=excluded.mask, seed=excluded.seed, mask_label=excluded.mask_label, "
                    "outcome=excluded.outcome, clinical=excluded.clinical",
                    (c.id, n, c.patient, str(c.image), json.dumps(c.images), str(c.mask) if c.mask else None,
                     json.dumps(list(c.seed)) if c.seed else None, c.label, c.outcome, json.dumps(c.clinical)))

    def case_ids(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT case_id FROM cases ORDER BY position, case_id")]

    def case_row(self, case_id: str) -> dict:
        cur = self.db.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,))
        row = cur.fetchone()
        if row is None:
            raise SpineAIError(f"{self.path} has no case {case_id!r}")
        return dict(zip([d[0] for d in cur.description], row))

    def steps(self) -> dict[tuple[str, str], tuple[str, str]]:
        """{(case, step): (status, input key)}"""
        return {(r[0], r[1]): (r[2], r[3]) for r in self.db.execute("SELECT case_id, step, status, input_key FROM steps")}

    # ---- masks ----------------------------------------------------------------------------
    def mask_info(self) -> dict[str, tuple[str, str]]:
        """{case: (source, sha256)} of every stored mask."""
        return {r[0]: (r[1], r[2]) for r in self.db.execute("SELECT case_id, source, sha256 FROM masks")}

    def mask(self, case_id: str) -> np.ndarray | None:
        row = self.db.execute("SELECT shape, data FROM masks WHERE case_id = ?", (case_id,)).fetchone()
        return None if row is None else unpack_mask(json.loads(row[0]), row[1])

    def prediction(self, case_id: str, step: str = "classify") -> dict | None:
        """A case's stored prediction from ``step`` (classify or classify-image), or None."""
        cur = self.db.execute("SELECT * FROM predictions WHERE case_id = ? AND step = ?", (case_id, step))
        row = cur.fetchone()
        if row is None:
            return None
        out = dict(zip([d[0] for d in cur.description], row))
        out.update(probabilities=json.loads(out["probabilities"]), warnings=json.loads(out["warnings"]),
                   demonstration=bool(out["demonstration"]), in_distribution=_flag(out["in_distribution"], bool))
        return out

    def mask_record(self, case_id: str) -> dict | None:
        row = self.db.execute("SELECT shape, data FROM masks WHERE case_id = ?", (case_id,)).fetchone()
        return None if row is None else {"shape": json.loads(row[0]), "data": row[1]}

    def features(self, case_id: str) -> dict | None:
        row = self.db.execute("SELECT feature_values, provenance FROM features WHERE case_id = ?", (case_id,)).fetchone()
        return None if row is None else {"values": json.loads(row[0]), "provenance": json.loads(row[1])}

    # ---- runs -----------------------------------------------------------------------------
    def start_run(self, **info) -> int:
        cur = self.db.execute(
            "INSERT INTO runs (started, engine_version, steps, executor, workers, manifest, parameter_set, model, "
            "cases_done, cases_failed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0)",
            (now(), __version__, ",".join(info.get("steps", ())), info.get("executor"), info.get("workers"),
             info.get("manifest"), info.get("parameter_set"), info.get("model")))
        return int(cur.lastrowid)

    def finish_run(self, run_id: int, seconds: float) -> None:
        """The run's end; its case counts grow with each case's own transaction (``record``), so an
        interrupt between a case's commit and the caller's count cannot make them disagree."""
        self.db.execute("UPDATE runs SET finished = ?, seconds = ? WHERE run_id = ?", (now(), seconds, run_id))

    def record(self, result: dict, run_id: int) -> None:
        """Store everything one case's worker returned, in one transaction."""
        cid, at = result["id"], now()
        with self.transaction():
            if result.get("mask") is not None:
                m = result["mask"]
                self.db.execute("INSERT OR REPLACE INTO masks VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (cid, m["source"], json.dumps(m["shape"]), m["data"], m["sha256"], m["voxels"], at))
                self.db.execute("UPDATE cases SET annotation_status = 'segmented' WHERE case_id = ? AND "
                                "annotation_status = 'to do'", (cid,))
            if result.get("features") is not None:
                f = result["features"]
                self.db.execute("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?)",
                                (cid, f["parameter_set"], f["parameter_sha256"], json.dumps(f["values"]),
                                 json.dumps(f["provenance"], default=_plain)))
            for step, p in (result.get("predictions") or {}).items():
                self.db.execute("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                (cid, step, p["model_id"], p["model_version"], p["model_sha256"],
                                 int(p["demonstration"]), json.dumps(p["probabilities"]), p["predicted_class"],
                                 _flag(p["in_distribution"]), json.dumps(p["warnings"])))
            for s in result["steps"]:
                self.db.execute("INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                (cid, s["step"], s["status"], s["key"], __version__, run_id, s["seconds"], at,
                                 json.dumps(s.get("detail") or {}, default=_plain)))
                if s["status"] == "failed":
                    self.db.execute("INSERT INTO errors (case_id, step, run_id, message, at, engine_version) "
                                    "VALUES (?, ?, ?, ?, ?, ?)", (cid, s["step"], run_id, s["error"], at, __version__))
            column = "cases_failed" if any(s["status"] == "failed" for s in result["steps"]) else "cases_done"
            self.db.execute(f"UPDATE runs SET {column} = {column} + 1 WHERE run_id = ?", (run_id,))

    # ---- annotation -----------------------------------------------------------------------
    def next_to_annotate(self, after: str | None = None, reviewer: str | None = None) -> str | None:
        """The next case in manifest order (after ``after``, wrapping round) not yet reviewed."""
        rows = list(self.db.execute("SELECT case_id, annotation_status FROM cases ORDER BY position, case_id"))
        ids = [r[0] for r in rows]
        start = ids.index(after) + 1 if after in ids else 0
        for cid, status in rows[start:] + rows[:start]:
            if status != "reviewed" and cid != after:
                return cid
        return None

    def save_annotation(self, case_id: str, mask: np.ndarray | None = None, label: str | None = None,
                        reviewer: str | None = None, status: str = "reviewed") -> None:
        """A person's segmentation (on the case image's grid) and / or class label. The mask replaces
        the stored one; the next run recomputes the features and predictions that read it."""
        if status not in ANNOTATION_STATUSES:
            raise SpineAIError(f"annotation status must be one of {', '.join(ANNOTATION_STATUSES)}, got {status!r}")
        if status == "reviewed" and not reviewer:
            raise SpineAIError("a reviewed case needs the reviewer's name")
        self.case_row(case_id)
        with self.transaction():
            if mask is not None:
                if not np.asarray(mask).any():
                    raise SpineAIError(f"the segmentation of case {case_id!r} is empty: nothing to save")
                shape, data, sha, voxels = pack_mask(mask)
                self.db.execute("INSERT OR REPLACE INTO masks VALUES (?, 'annotation', ?, ?, ?, ?, ?)",
                                (case_id, json.dumps(shape), data, sha, voxels, now()))
            self.db.execute("UPDATE cases SET annotation_status = ?, reviewer = ?, annotation_label = "
                            "COALESCE(?, annotation_label), annotated_at = ? WHERE case_id = ?",
                            (status, reviewer, label, now(), case_id))

    def annotation_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ANNOTATION_STATUSES, 0)
        for status, n in self.db.execute("SELECT annotation_status, count(*) FROM cases GROUP BY annotation_status"):
            counts[status] = n
        return counts


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (Ctrl-C included)."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, exc, tb):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        return False


def _flag(value, kind=int):
    """A yes / no that may be unknown (None: the image model has no out-of-distribution check)."""
    return None if value is None else kind(value)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in the cohort database")
