"""Cohorts: a manifest of cases taken through segmentation, features and classification by
worker processes or a Dask cluster, every result kept in one SQLite database (resumable,
transactional), exported to CSV / Parquet; per-case annotation status; late fusion of imaging and
clinical data (``spineai.cohort.fusion``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from spineai.cohort.lock import output_lock
from spineai.cohort.manifest import CohortCase, read_manifest
from spineai.cohort.runner import RunSummary, run_cohort
from spineai.cohort.steps import STEPS, parse_steps
from spineai.cohort.store import ANNOTATION_STATUSES, CohortDB
from spineai.errors import SpineAIError
from spineai.progress import ProgressCallback

__all__ = ["ANNOTATION_STATUSES", "CohortCase", "CohortDB", "RunSummary", "STEPS", "extract_cohort", "output_lock",
           "parse_steps", "progress_path", "read_manifest", "run_cohort"]


def progress_path(out) -> Path:
    """The database a run with ``--out OUT`` and no ``--db`` keeps beside its output until it succeeds."""
    out = Path(out)
    return out.with_name(out.name + ".progress.sqlite")


def extract_cohort(cases: Sequence[CohortCase], params=None, skip_failures: bool = False,
                   progress: ProgressCallback | None = None, db: CohortDB | None = None, workers: int = 1):
    """Features of every case, in manifest order: ``(results, ids, failures)`` with failures as
    ``(case, error)``. A failure raises SpineAIError naming the case unless ``skip_failures``.
    Without ``db`` the cases are computed in a throw-away in-memory database."""
    from spineai.radiomics import FeatureResult

    own = db is None
    db = CohortDB(":memory:") if own else db
    try:
        summary = run_cohort(db, cases, ["features"], params, workers=workers, progress=progress)
        if summary.failed and not skip_failures:
            cid, _, message = summary.failed[0]
            raise SpineAIError(f"case {cid}: {message}")
        failed = {f[0]: f[2] for f in summary.failed}
        results, ids, failures = [], [], []
        for c in cases:
            if c.id in failed:
                failures.append((c, failed[c.id]))
                continue
            f = db.features(c.id)
            results.append(FeatureResult(f["values"], f["provenance"]))
            ids.append(c.id)
        return results, ids, failures
    finally:
        if own:
            db.close()
