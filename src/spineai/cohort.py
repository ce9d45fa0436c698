"""Feature extraction for a whole cohort, from a manifest CSV.

The manifest has one row per lesion: ``id``, ``image``, ``mask`` and optionally ``label`` (default
1). Relative paths are read from the manifest's folder. Several lesions may share an image or a
mask file (different labels): each file is read once.
"""

from __future__ import annotations

import csv
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
):
    """Features of every case, in manifest order: ``(results, ids, failures)``.

    A failing case stops the run with its id in the message, unless ``skip_failures``: then it is
    recorded in ``failures`` and the others go on.
    """
    from spineai.image import read_volume
    from spineai.radiomics import DEFAULT_PARAMETER_SET, extract_features, load_parameters

    params = params or DEFAULT_PARAMETER_SET
    load_parameters(params)  # a bad parameter set fails before any case is read
    cache: dict[Path, object] = {}

    def volume(path: Path):
        if path not in cache:
            if len(cache) > 4:  # manifests are usually grouped by image: keep a few, not the cohort
                cache.pop(next(iter(cache)))
            cache[path] = read_volume(path)
        return cache[path]

    results, ids, failures = [], [], []
    for n, case in enumerate(cases):
        report(progress, n, len(cases), case.id)
        try:
            results.append(extract_features(volume(case.image), volume(case.mask), case.label, params))
            ids.append(case.id)
        except SpineAIError as exc:
            if not skip_failures:
                raise SpineAIError(f"case {case.id}: {exc}") from None
            failures.append(CohortFailure(case, str(exc)))
    report(progress, len(cases), len(cases), "done")
    return results, ids, failures
