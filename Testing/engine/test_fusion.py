"""`spineai fuse`: late fusion of imaging and clinical data on synthetic cohorts whose truth is known."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from spineai.cli import main
from spineai.cohort.fusion import FusionData, fusion_data, patient_split, run_fusion
from spineai.errors import SpineAIError
from spineai.models.tables import read_table

CLINICAL = "age,crp,sex"


def _cohort_csv(path, n=300, seed=0, clinical_signal=1.0, imaging_signal=1.0, noise_features=5):
    """Two cases per patient, MET (positive) or SD; imaging feature f0 and clinical age / crp shift
    with the class by the given effect sizes, independently of each other; the rest is noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(rng.integers(0, 2, n // 2), 2)  # a patient's two lesions share the diagnosis
    X = rng.normal(size=(n, noise_features))
    X[:, 0] += imaging_signal * y
    age = rng.normal(60, 10, n) + 10 * clinical_signal * y
    crp = rng.normal(20, 8, n) + 8 * clinical_signal * y
    sex = rng.choice(["F", "M"], n)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "patient_id", "diagnosis"] + [f"f{j}" for j in range(noise_features)] + ["age", "crp", "sex"])
        for i in range(n):
            w.writerow([f"c{i}", f"P{i // 2}", "MET" if y[i] else "SD"] + [repr(float(v)) for v in X[i]] +
                       [f"{age[i]:.0f}", "" if i % 11 == 4 else f"{crp[i]:.1f}", "" if i % 13 == 6 else sex[i]])
    return path


def _fuse(table, out, *extra):
    assert main(["fuse", str(table), "--clinical", CLINICAL, "--imaging-features", "f0,f1,f2,f3,f4",
                 "--bootstrap", "300", "--out", str(out), *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_independent_signals_the_fused_model_beats_both_branches(tmp_path, capsys):
    table = _cohort_csv(tmp_path / "t.csv", clinical_signal=0.6, imaging_signal=0.9)
    blanks = sum(r[c] == "" for r in csv.DictReader(open(table)) for c in ("crp", "sex"))
    m = _fuse(table, tmp_path / "rep")
    cv = m["cv"]["scores"]
    for branch in ("imaging", "clinical network", "clinical XGBoost"):
        assert cv["fused"]["auroc"]["value"] > cv[branch]["auroc"]["value"] + 0.02, (branch, cv)
        assert cv["fused"]["auprc"]["value"] > cv[branch]["auprc"]["value"], (branch, cv)
        assert cv[f"fused - {branch}"]["auroc"]["ci_low"] > 0  # paired bootstrap: the gain is not chance
    assert 0.6 < cv["imaging"]["auroc"]["value"] < 0.85 and 0.6 < cv["clinical XGBoost"]["auroc"]["value"] < 0.85
    assert m["n_patients"] == 150 and m["imputed_cells_cv"] == blanks == 50  # each blank imputed once, in its test fold
    assert m["inputs"] == ["age", "crp", "crp missing", "sex=F", "sex=M", "sex missing", "imaging probability",
                           "imaging log-odds (base margin)"]
    contrib = m["split"]["mean_abs_contribution"]
    assert contrib["imaging log-odds (base margin)"] > contrib["sex=F"] and contrib["age"] > contrib["sex=M"]
    files = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {"report.html", "roc.png", "pr.png", "calibration.png", "decision_curve.png", "contributions.png",
            "predictions.csv", "contributions.csv", "metrics.json"} <= files
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "pred_contribs" in page and "70 / 15 / 15 split" in page and "research software" in page
    assert "fused" in capsys.readouterr().out


def test_clinical_noise_the_fused_model_stays_with_the_imaging_branch(tmp_path):
    m = _fuse(_cohort_csv(tmp_path / "t.csv", seed=1, clinical_signal=0.0, imaging_signal=1.2), tmp_path / "rep")
    cv = m["cv"]["scores"]
    assert cv["imaging"]["auroc"]["value"] > 0.7
    assert cv["fused - imaging"]["auroc"]["ci_high"] >= 0  # not below the imaging branch beyond the CI
    assert cv["fused"]["auroc"]["value"] >= cv["imaging"]["auroc"]["ci_low"]
    assert cv["clinical XGBoost"]["auroc"]["ci_low"] < 0.5 < cv["clinical XGBoost"]["auroc"]["ci_high"] + 0.05


def test_nothing_leaks_noise_features_score_chance_even_with_a_flexible_model(tmp_path):
    table = read_table(_cohort_csv(tmp_path / "t.csv", n=200, seed=2, clinical_signal=0.0, imaging_signal=0.0,
                                   noise_features=20))
    data = fusion_data(table, "diagnosis", CLINICAL.split(","), [f"f{j}" for j in range(20)])
    r = run_fusion(data, imaging_model="xgboost", n_boot=200)
    for branch in ("imaging", "fused"):  # trained on the test labels these would be near 1
        assert r["cv"]["scores"][branch]["auroc"]["value"] < 0.65, r["cv"]["scores"]
    # exact tree SHAP: each test case's contributions add up to the fused model's log-odds
    p = r["split"]["probabilities"]["fused"]
    np.testing.assert_allclose(r["split"]["contributions"].sum(1), np.log(p / (1 - p)), atol=1e-4)


def test_patient_split_is_stratified_seeded_and_keeps_patients_whole():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(100), 2)
    y = np.repeat(rng.integers(0, 2, 100), 2)
    tr, va, te = patient_split(y, groups, seed=4)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(200))
    assert not (set(groups[tr]) & set(groups[va]) or set(groups[tr]) & set(groups[te]) or set(groups[va]) & set(groups[te]))
    assert abs(len(tr) / 200 - 0.7) < 0.03 and abs(len(te) / 200 - 0.15) < 0.03
    for part in (tr, va, te):
        assert abs(y[part].mean() - y.mean()) < 0.06
    assert all(np.array_equal(a, b) for a, b in zip(patient_split(y, groups, seed=4), (tr, va, te)))


def test_fusion_input_errors_name_the_problem(tmp_path):
    table = read_table(_cohort_csv(tmp_path / "t.csv", n=40))
    with pytest.raises(SpineAIError, match="lacks clinical column\\(s\\) bmi"):
        fusion_data(table, "diagnosis", ["age", "bmi"], ["f0"])
    with pytest.raises(SpineAIError, match="either as features .* or as out-of-fold probabilities"):
        fusion_data(table, "diagnosis", ["age"], ["f0"], imaging_probability="f1")
    with pytest.raises(SpineAIError, match="cannot be clinical inputs"):
        fusion_data(table, "diagnosis", ["age", "f0"], ["f0"])
    with pytest.raises(SpineAIError, match="must hold a probability in \\[0, 1\\]"):
        fusion_data(table, "diagnosis", ["age"], imaging_probability="f1")
    with pytest.raises(SpineAIError, match="--positive 'STB' is not a value"):
        fusion_data(table, "diagnosis", ["age"], ["f0"], positive="STB")
    rows = list(csv.reader(open(tmp_path / "t.csv")))
    rows[1][2] = "STB"
    with open(tmp_path / "three.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(SpineAIError, match="has 3 classes \\(MET, SD, STB\\); choose one with --positive"):
        fusion_data(read_table(tmp_path / "three.csv"), "diagnosis", ["age"], ["f0"])
    data = FusionData(np.array([0, 1] * 30), ["a", "b"], np.arange(60).astype(str), [str(i) for i in range(60)],
                      {"ward": [f"w{i}" for i in range(60)]}, np.zeros((60, 1)))
    from spineai.cohort.fusion import ClinicalEncoder

    with pytest.raises(SpineAIError, match="'ward' has 60 different texts"):
        ClinicalEncoder(data.clinical)


def test_fuse_reads_a_cohort_database(tmp_path):
    """The cohort database's features and clinical columns feed `spineai fuse` directly."""
    from pathlib import Path

    from spineai.cohort import CohortCase, CohortDB
    from spineai.featureset import FEATURES_31

    rng = np.random.default_rng(3)
    db_path = tmp_path / "r.sqlite"
    n = 80
    y = rng.integers(0, 2, n)
    cases = [CohortCase(f"c{i}", Path(f"/images/c{i}.nii.gz"), Path(f"/images/c{i}_mask.nii.gz"), 1, f"P{i // 2}",
                        outcome="MET" if y[i] else "SD", clinical={"age": f"{rng.normal(60, 10) + 8 * y[i]:.0f}"})
             for i in range(n)]
    with CohortDB(db_path) as db:
        db.register(cases)
        run = db.start_run(steps=["features"])
        for i, c in enumerate(cases):
            values = {f: float(rng.normal()) for f in FEATURES_31}
            values[FEATURES_31[0]] += 3.0 * y[i]
            db.record({"id": c.id, "features": {"values": values, "provenance": {"parameter_set": "spineai31-v1"},
                                                "parameter_set": "spineai31-v1", "parameter_sha256": "x"},
                       "steps": [{"step": "features", "status": "done", "key": "k", "seconds": 0.1}]}, run)
    m = _fuse_db(db_path, tmp_path / "rep")
    assert m["clinical_columns"] == ["age"] and m["n_cases"] == n and m["n_patients"] == 40
    assert "31 imaging features" in m["imaging_source"]
    assert m["cv"]["scores"]["imaging"]["auroc"]["value"] > 0.7


def _fuse_db(db, out):
    assert main(["fuse", str(db), "--positive", "MET", "--bootstrap", "100", "--folds", "3", "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())
