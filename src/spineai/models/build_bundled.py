"""Rebuild the two bundled models in spineai/resources/models and their registry entries.

    python -m spineai.models.build_bundled [--data ../shared/data] [--only reference|demo]

1. ``sdmet31-reference``: ``auto`` (log-loss over repeated CV with the one-standard-error rule among
   the comparators, the two network shapes with SpineAI's switches and a soft-vote ensemble;
   reported by nested CV) on the study's 80 lesions (sdmet31/train.csv, LIFEx features, SD vs MET).
2. ``spineai-demo-phantom``: a logistic regression on SpineAI's own 31 PyRadiomics features of
   synthetic phantom lesions (SD / MET / STB), marked as a demonstration.

Deterministic given the same library versions: bundles are zips with fixed timestamps, so an
unchanged model gives the same sha256 (apart from the card's creation time, which is pinned here).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from spineai.models.registry import BUNDLED_DIR, BUNDLED_REGISTRY

REFERENCE_ID, REFERENCE_VERSION = "sdmet31-reference", "1.0.0"
DEMO_ID, DEMO_VERSION = "spineai-demo-phantom", "1.0.0"
PINNED_CREATED = "2025-01-01T00:00:00+00:00"
# The phantom's default geometry, as `spineai demo` uses: size-dependent features (non-uniformities,
# coarseness) of a lesion imaged at another resolution fall outside the training range.
PHANTOM_SHAPE, PHANTOM_SPACING = (192, 256, 24), (0.9, 0.9, 3.0)


def phantom_feature_table(n_per_kind: int = 20, seed0: int = 1000, progress=None):
    """Features of ``n_per_kind`` phantom lesions of each kind: (Table, seconds)."""
    from spineai.models.tables import Table
    from spineai.phantom import LESION_KINDS, LEVELS, make_spine_phantom
    from spineai.radiomics import extract_features

    rows, cols = [], None
    rng = np.random.default_rng(seed0)
    total = n_per_kind * len(LESION_KINDS)
    for i in range(n_per_kind):
        for kind in LESION_KINDS:
            seed = seed0 + len(rows)
            ph = make_spine_phantom(seed=seed, shape_ijk=PHANTOM_SHAPE, spacing=PHANTOM_SPACING, lesion_kind=kind,
                                    lesion_level=LEVELS[int(rng.integers(1, 4))],
                                    lesion_radius_mm=float(rng.uniform(8.0, 12.0)), noise=float(rng.uniform(0.015, 0.04)))
            fr = extract_features(ph.image, ph.lesion_mask)
            cols = list(fr.values)
            rows.append([f"phantom-{seed}", kind] + [repr(float(v)) for v in fr.values.values()])
            if progress:
                progress(len(rows), total, "phantoms")
    return Table(["lesion_id", "diagnosis"] + cols, rows, "synthetic phantom lesions")


def _pin_and_write(card_path_zip: Path, model_id: str, version: str):
    """Reload a just-trained bundle and rewrite it with a pinned creation date (reproducible bytes)."""
    from spineai.models.bundle import _read_files, bundle_from_files, save_bundle, sha256_file

    b = bundle_from_files(_read_files(card_path_zip), str(card_path_zip))
    card = dict(b.card)
    card["created"] = PINNED_CREATED
    card["training_data"].pop("seconds", None)  # wall time varies; keep the bytes reproducible
    card["id"], card["version"] = model_id, version
    card.pop("model", None)
    save_bundle(card, b.model, card_path_zip, overwrite=True)
    return sha256_file(card_path_zip), card


def build_reference(data: Path, out_dir: Path = BUNDLED_DIR) -> dict:
    from spineai.models.training import train_bundle

    table = data / "sdmet31" / "train.csv"
    target = out_dir / f"{REFERENCE_ID}-{REFERENCE_VERSION}.zip"
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td) / "b.zip"
        train_bundle(table, "diagnosis", "auto", tmp, exclude=["label"], seed=0, n_boot=1000, model_id=REFERENCE_ID,
                     version=REFERENCE_VERSION,
                     description="SD vs MET on 31 LIFEx texture features; chosen by auto (repeated-CV log-loss, "
                                 "one-standard-error rule) on the study's 80 lesions (sdmet31), performance by nested "
                                 "CV. Only for LIFEx-compatible feature values.")
        sha, card = _pin_and_write(tmp, REFERENCE_ID, REFERENCE_VERSION)
        os.replace(tmp, target)
    return _entry(REFERENCE_ID, REFERENCE_VERSION, target, sha, card)


def build_demo(out_dir: Path = BUNDLED_DIR, n_per_kind: int = 20) -> dict:
    from spineai.models.training import train_bundle

    table = phantom_feature_table(n_per_kind)
    target = out_dir / f"{DEMO_ID}-{DEMO_VERSION}.zip"
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td) / "b.zip"
        train_bundle(table, "diagnosis", "logreg", tmp, seed=0, n_boot=1000, model_id=DEMO_ID, version=DEMO_VERSION,
                     demonstration=True, overrides={"C": 1.0},
                     description=f"DEMONSTRATION: SD / MET / STB on SpineAI's 31 PyRadiomics features of "
                                 f"{3 * n_per_kind} synthetic phantom lesions; meaningless for real patients.")
        sha, card = _pin_and_write(tmp, DEMO_ID, DEMO_VERSION)
        os.replace(tmp, target)
    return _entry(DEMO_ID, DEMO_VERSION, target, sha, card)


def _entry(mid, version, path: Path, sha: str, card: dict) -> dict:
    auc = card["evaluation"]["metrics"]["auc"]
    return {"id": mid, "version": version, "url": path.name, "sha256": sha, "description": card["description"],
            "demonstration": card["demonstration"], "feature_definition": card["features"]["definition"],
            "classes": card["classes"], "cv_auc": [round(auc["value"], 4), round(auc["ci_low"], 4), round(auc["ci_high"], 4)],
            "engine_version": card["engine_version"]}


def write_registry(entries: list[dict], path: Path = BUNDLED_REGISTRY) -> None:
    old = json.loads(path.read_text())["models"] if path.exists() else []
    ids = {e["id"] for e in entries}
    models = [e for e in old if e["id"] not in ids] + entries
    path.write_text(json.dumps({"schema": 1, "models": sorted(models, key=lambda e: e["id"])}, indent=2) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("SPINEAI_TEST_DATA", "../shared/data"))
    ap.add_argument("--only", choices=["reference", "demo"])
    ap.add_argument("--n-per-kind", type=int, default=20)
    a = ap.parse_args(argv)
    entries = []
    if a.only in (None, "reference"):
        entries.append(build_reference(Path(a.data)))
    if a.only in (None, "demo"):
        entries.append(build_demo(n_per_kind=a.n_per_kind))
    write_registry(entries)
    for e in entries:
        print(f"{e['id']} {e['version']}: CV AUC {e['cv_auc']} sha256 {e['sha256']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
