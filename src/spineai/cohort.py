"""Feature extraction for a whole cohort, from a manifest CSV.

The manifest has one row per lesion: ``id``, ``image``, ``mask`` and optionally ``label`` (default
1). Relative paths are read from the manifest's folder. Several lesions may share an image or a
mask file (different labels): each file is read once.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from spineai.errors import SpineAIError
from spineai.progress import ProgressCallback, report

REQUIRED_COLUMNS = ("id", "image", "mask")


@dataclass(frozen=True)
class CohortCase:
    id: str
    image: Path
    mask: Path
    label: int = 1


@dataclass(frozen=True)
class CohortFailure:
    case: CohortCase
    error: str


def read_manifest(path: str | Path) -> list[CohortCase]:
    path = Path(path)
    if not path.is_file():
        raise SpineAIError(f"no such manifest file: {path}")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise SpineAIError(
                f"the manifest {path} lacks column(s) {', '.join(missing)}; it needs id, image, mask "
                f"and optionally label (columns found: {', '.join(columns) or 'none'})"
            )
        cases, seen = [], set()
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if not row["id"] or not row["image"] or not row["mask"]:
                raise SpineAIError(f"manifest {path}, line {line}: id, image and mask must all be filled in")
            if row["id"] in seen:
                raise SpineAIError(f"manifest {path}, line {line}: the id {row['id']!r} appears twice")
            seen.add(row["id"])
            try:
                label = int(row.get("label") or 1)
            except ValueError:
                raise SpineAIError(f"manifest {path}, line {line}: label must be an integer, got {row['label']!r}") from None
            cases.append(CohortCase(row["id"], path.parent / row["image"], path.parent / row["mask"], label))
    if not cases:
        raise SpineAIError(f"the manifest {path} lists no cases")
    return cases


def extract_cohort(
    cases: Sequence[CohortCase],
    params: str | Path | None = None,
    skip_failures: bool = False,
    progress: ProgressCallback | None = None,
    store: "CohortStore | None" = None,
):
    """Features of every case, in manifest order: ``(results, ids, failures)``.

    A failing case stops the run with its id in the message, unless ``skip_failures``: then it is
    recorded in ``failures`` and the others go on. With a ``store``, each finished case is saved
    durably as it finishes and cases the store already holds are not computed again.
    """
    from spineai.image import read_volume
    from spineai.radiomics import DEFAULT_PARAMETER_SET, extract_features, load_parameters

    params = params or DEFAULT_PARAMETER_SET
    load_parameters(params)  # a bad parameter set fails before any case is read
    cache: dict[Path, object] = {}
    done = store.finished(cases) if store is not None else {}

    def volume(path: Path):
        if path not in cache:
            if len(cache) > 4:  # manifests are usually grouped by image: keep a few, not the cohort
                cache.pop(next(iter(cache)))
            cache[path] = read_volume(path)
        return cache[path]

    results, ids, failures = [], [], []
    for n, case in enumerate(cases):
        report(progress, n, len(cases), case.id)
        if case.id in done:
            results.append(done[case.id])
            ids.append(case.id)
            continue
        try:
            result = extract_features(volume(case.image), volume(case.mask), case.label, params)
        except SpineAIError as exc:
            if not skip_failures:
                raise SpineAIError(f"case {case.id}: {exc}") from None
            failures.append(CohortFailure(case, str(exc)))
            continue
        except (OSError, RuntimeError, ValueError, MemoryError) as exc:  # a damaged file, SimpleITK, PyRadiomics
            if not skip_failures:
                raise
            failures.append(CohortFailure(case, f"{type(exc).__name__}: {exc}"))
            continue
        if store is not None:
            store.save(case, result)
        results.append(result)
        ids.append(case.id)
    report(progress, len(cases), len(cases), "done")
    return results, ids, failures


# ---- durable progress --------------------------------------------------------------------------

def progress_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".progress.sqlite")


def _file_stamp(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


class CohortStore:
    """Finished cases of a cohort run in a small SQLite file beside the output, one committed
    transaction per case, so a killed run loses at most the case it was computing.

    A case counts as done only while its image, mask and label are those it was computed from, and
    the store was made with the same parameter set; otherwise it is computed again.
    """

    def __init__(self, path: str | os.PathLike, params_sha256: str):
        import sqlite3

        self.path = Path(path)
        try:
            self.db = sqlite3.connect(str(self.path), isolation_level=None)
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("CREATE TABLE IF NOT EXISTS run (key TEXT PRIMARY KEY, value TEXT)")
            self.db.execute("CREATE TABLE IF NOT EXISTS cases (id TEXT PRIMARY KEY, image TEXT, mask TEXT, "
                            "label INTEGER, image_stamp TEXT, mask_stamp TEXT, feature_values TEXT, "
                            "provenance TEXT)")
            row = self.db.execute("SELECT value FROM run WHERE key = 'params_sha256'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise SpineAIError(f"{self.path} (the progress of an earlier cohort run) is damaged ({exc}): delete it, "
                               f"or pass --overwrite to start again") from None
        if row is None:
            self.db.execute("INSERT INTO run VALUES ('params_sha256', ?)", (params_sha256,))
        elif row[0] != params_sha256:
            self.db.close()
            raise SpineAIError(f"{self.path} holds the progress of a run with another parameter set: pass "
                               f"--overwrite to start again, or rerun with the same --params to finish it")

    def finished(self, cases: Sequence[CohortCase]) -> dict:
        from spineai.radiomics import FeatureResult

        stored = {r[0]: r[1:] for r in self.db.execute(
            "SELECT id, image, mask, label, image_stamp, mask_stamp, feature_values, provenance FROM cases")}
        done = {}
        for c in cases:
            r = stored.get(c.id)
            if r and r[:5] == (str(c.image), str(c.mask), c.label, _file_stamp(c.image), _file_stamp(c.mask)):
                done[c.id] = FeatureResult(json.loads(r[5]), json.loads(r[6]))
        return done

    def save(self, case: CohortCase, result) -> None:
        self.db.execute("INSERT OR REPLACE INTO cases VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (case.id, str(case.image), str(case.mask), case.label, _file_stamp(case.image),
                         _file_stamp(case.mask), json.dumps({k: float(v) for k, v in result.values.items()}),
                         json.dumps(result.provenance, default=_plain)))

    def close(self) -> None:
        self.db.close()


def _plain(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in the cohort progress")


@contextlib.contextmanager
def output_lock(out: str | os.PathLike):
    """Hold ``<out>.lock`` for the run: a second run on the same output is refused, not interleaved.
    The operating system releases the lock when a process dies, even by kill -9."""
    lock = Path(out).with_name(Path(out).name + ".lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _lock_fd(fd)
        except OSError:
            os.close(fd)
            raise SpineAIError(f"another spineai run is writing {out} (it holds {lock}); wait for it to finish, "
                               f"or choose another --out") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed by the run that just finished: lock the new one
    try:
        yield lock
    finally:
        try:
            lock.unlink()
        except OSError:
            pass
        os.close(fd)


def _lock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
