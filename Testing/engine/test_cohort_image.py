"""The cohort's classify-image step: the lesion image model on each case (its mask, else its seed),
stored with the model's provenance, resumable, exported; and schema-1 databases keep their predictions."""

from __future__ import annotations

import csv
import sqlite3

import numpy as np
import pytest

from spineai.cli import main
from spineai.cohort import CohortDB, read_manifest
from spineai.cohort.synthetic import write_synthetic_cohort
from spineai.image import read_volume



@pytest.fixture
def image_model_packages():
    pytest.importorskip("torch", reason="the image classifier needs torch (not installed on this Python)")
    pytest.importorskip("monai", reason="the image classifier needs MONAI (not installed on this Python)")


def _runs(db):
    with sqlite3.connect(str(db)) as con:
        return con.execute("SELECT steps, cases_done, cases_failed FROM runs ORDER BY run_id").fetchall()


def test_classify_image_step_stores_provenance_resumes_and_follows_a_reviewed_mask(tmp_path, image_model_packages):
    from spineai.imaging.lesion import DEFAULT_MODEL, classify_lesion, load_image_model

    manifest = write_synthetic_cohort(tmp_path / "c", 2, seed=3)  # case000: seed only, case001: a mask file
    db, out = tmp_path / "r.sqlite", tmp_path / "r.csv"
    args = ["cohort", str(manifest), "--steps", "classify-image", "--db", str(db), "--workers", "1"]
    assert main(args + ["--out", str(out)]) == 0
    seeded, masked = read_manifest(manifest)
    bundle = load_image_model(DEFAULT_MODEL)
    image0, image1 = read_volume(seeded.image), read_volume(masked.image)
    expected = {seeded.id: classify_lesion(image0, seed=seeded.seed),
                masked.id: classify_lesion(image1, mask=read_volume(masked.mask))}
    with CohortDB(db) as d:
        for cid, direct in expected.items():
            p = d.prediction(cid, "classify-image")
            assert (p["model_id"], p["model_version"]) == (bundle.card["id"], bundle.card["version"])
            assert p["model_sha256"] == bundle.sha256 and len(p["model_sha256"]) == 64
            assert p["demonstration"] is True and p["in_distribution"] is None
            assert p["predicted_class"] == direct.predicted
            assert p["probabilities"] == pytest.approx(direct.probabilities, abs=1e-6)
            assert sum(p["probabilities"].values()) == pytest.approx(1.0)
            assert "DEMONSTRATION MODEL" in p["warnings"][0]
            assert d.prediction(cid) is None  # no radiomic classify step ran
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert [r["id"] for r in rows] == [seeded.id, masked.id]
    assert rows[0]["image_model"].endswith("(DEMONSTRATION)")
    assert rows[1]["image_predicted_class"] == expected[masked.id].predicted
    classes = bundle.card["classes"]
    assert [float(rows[1][f"image_p_{c}"]) for c in classes] == \
        pytest.approx([expected[masked.id].probabilities[c] for c in classes], abs=1e-6)
    assert "model" not in rows[0] and "in_distribution" not in rows[0]

    assert main(args) == 0  # resumed: nothing to redo
    assert _runs(db)[-1] == ("classify-image", 0, 0)
    # a reviewed mask for the seed-only case: only that case's image prediction is recomputed, on the mask
    mask = (read_volume(masked.mask).array > 0).astype(np.uint8)  # same grid size: the phantoms share it
    assert mask.shape == image0.array.shape
    with CohortDB(db) as d:
        before = d.prediction(masked.id, "classify-image")
        d.save_annotation(seeded.id, mask, "SD", "Dr Reviewer")
    assert main(args) == 0
    assert _runs(db)[-1] == ("classify-image", 1, 0)
    with CohortDB(db) as d:
        assert d.prediction(masked.id, "classify-image") == before
        redone = d.prediction(seeded.id, "classify-image")["probabilities"]
    direct = classify_lesion(image0, mask=image0.with_array(mask)).probabilities
    assert redone == pytest.approx(direct, abs=1e-6)


def test_a_seed_outside_the_image_fails_only_its_case(tmp_path, image_model_packages):
    manifest = write_synthetic_cohort(tmp_path / "c", 2, seed=3, masks="none")
    text = manifest.read_text().splitlines()
    header, row = text[0].split(","), text[1].split(",")
    row[header.index("seed")] = "5000 0 0"
    manifest.write_text("\n".join([text[0], ",".join(row), text[2]]) + "\n")
    db = tmp_path / "r.sqlite"
    code = main(["cohort", str(manifest), "--steps", "classify-image", "--db", str(db), "--workers", "1"])
    with CohortDB(db) as d:
        assert d.prediction("case001", "classify-image") is not None
        assert d.prediction("case000", "classify-image") is None
    with sqlite3.connect(str(db)) as con:
        (step, message), = con.execute("SELECT step, message FROM errors WHERE case_id = 'case000'").fetchall()
    assert code == 2 and step == "classify-image" and "lies outside the image" in message, message


def test_a_schema_1_database_keeps_its_predictions(tmp_path):
    path = tmp_path / "old.sqlite"
    CohortDB(path).close()
    with sqlite3.connect(str(path)) as con:  # the predictions table as schema 1 made it, with one result
        con.execute("DROP TABLE predictions")
        con.execute("CREATE TABLE predictions (case_id TEXT PRIMARY KEY, model_id TEXT, model_version TEXT, "
                    "model_sha256 TEXT, demonstration INTEGER, probabilities TEXT, predicted_class TEXT, "
                    "in_distribution INTEGER, warnings TEXT)")
        con.execute("INSERT INTO predictions VALUES ('c1', 'm', '1.0', 'abc', 1, '{\"SD\": 0.75, \"MET\": 0.25}', "
                    "'SD', 1, '[]')")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    with CohortDB(path) as d:
        p = d.prediction("c1")
        assert (p["step"], p["model_id"], p["probabilities"], p["in_distribution"]) == \
            ("classify", "m", {"SD": 0.75, "MET": 0.25}, True)
    with sqlite3.connect(str(path)) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
