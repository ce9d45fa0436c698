"""The train / predict / evaluate / study / models commands, through argparse as spineai/cli.py wires them."""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest

from spineai.errors import SpineAIError
from spineai.models.cli import add_commands


def run(argv):
    parser = argparse.ArgumentParser(prog="spineai")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def toy_csv(path, n=60, seed=0, scale=None, nan_at=None):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = np.exp(rng.normal(size=(n, 5)) * 0.3)
    X[:, 0] += 1.2 * y
    if scale is not None:
        X = X * scale
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["lesion_id", "a", "b", "c", "d", "e", "diagnosis"])
        for i in range(n):
            vals = [f"{v:.6g}" for v in X[i]]
            if nan_at and i in nan_at:
                vals[nan_at[i]] = ""
            w.writerow([f"L{i:03d}", *vals, "MET" if y[i] else "SD"])
    return path


def test_train_predict_evaluate(tmp_path, capsys):
    table = toy_csv(tmp_path / "t.csv")
    assert run(["train", table, "--label-column", "diagnosis", "--model", "logreg", "--out", tmp_path / "m.zip",
                "--folds", "3", "--bootstrap", "100", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "auc" in out and "bundle ->" in out
    with pytest.raises(SpineAIError, match="already exists"):
        run(["train", table, "--label-column", "diagnosis", "--model", "logreg", "--out", tmp_path / "m.zip", "--quiet"])
    assert run(["predict", tmp_path / "m.zip", table, "--out", tmp_path / "p.csv"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 60
    assert list(rows[0])[:4] == ["case_id", "p_SD", "p_MET", "predicted_class"]
    assert {"in_distribution", "ood_distance", "out_of_range_features", "top_features"} <= set(rows[0])
    assert rows[0]["case_id"] == "L000"
    assert abs(float(rows[0]["p_SD"]) + float(rows[0]["p_MET"]) - 1) < 1e-5
    acc = np.mean([r["predicted_class"] == ("MET" if i % 2 else "SD") for i, r in enumerate(rows)])
    assert acc > 0.75
    # a table from "another scanner": every feature rescaled -> flagged, in the file and on screen
    shifted = toy_csv(tmp_path / "s.csv", seed=1, scale=np.array([2.5, 2.5, 0.3, 3.0, 1.0]))
    capsys.readouterr()
    run(["predict", tmp_path / "m.zip", shifted, "--out", tmp_path / "ps.csv"])
    assert "OUT OF DISTRIBUTION" in capsys.readouterr().out
    flags = [r["in_distribution"] for r in csv.DictReader(open(tmp_path / "ps.csv"))]
    assert flags.count("false") >= 55
    assert run(["evaluate", tmp_path / "m.zip", table, "--label-column", "diagnosis", "--out", tmp_path / "ev",
                "--bootstrap", "50"]) == 0
    assert (tmp_path / "ev" / "report.html").exists() and (tmp_path / "ev" / "roc.png").exists()


def test_predict_refuses_mismatched_columns_and_leaves_no_file(tmp_path):
    table = toy_csv(tmp_path / "t.csv")
    run(["train", table, "--label-column", "diagnosis", "--model", "xgboost", "--out", tmp_path / "m", "--folds", "3",
         "--bootstrap", "20", "--n-estimators", "20", "--quiet"])
    other = tmp_path / "o.csv"
    other.write_text("lesion_id,a,b,c,x,y\nL1,1,2,3,4,5\n")
    with pytest.raises(SpineAIError, match="missing 2: d, e; extra 2: x, y"):
        run(["predict", tmp_path / "m", other, "--out", tmp_path / "p.csv"])
    assert not (tmp_path / "p.csv").exists()
    nan = toy_csv(tmp_path / "n.csv", nan_at={3: 1, 7: 4})
    with pytest.raises(SpineAIError, match=r"rows L003, L007 \(columns b, e\)"):
        run(["predict", tmp_path / "m", nan, "--out", tmp_path / "p.csv"])
    assert not (tmp_path / "p.csv").exists()
    assert run(["predict", tmp_path / "m", nan, "--out", tmp_path / "p.csv", "--impute", "median"]) == 0


def test_train_errors_leave_nothing(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("lesion_id,a,b,diagnosis\n" + "".join(f"L{i},{i},{i % 3},SD\n" for i in range(10)))
    with pytest.raises(SpineAIError, match="a single class"):
        run(["train", one, "--label-column", "diagnosis", "--model", "logreg", "--out", tmp_path / "m.zip"])
    few = toy_csv(tmp_path / "few.csv", n=8)
    with pytest.raises(SpineAIError, match="too few samples for 5-fold"):
        run(["train", few, "--label-column", "diagnosis", "--model", "logreg", "--out", tmp_path / "m.zip"])
    with pytest.raises(SpineAIError, match="auto chooses the settings itself"):
        run(["train", few, "--label-column", "diagnosis", "--model", "auto", "--out", tmp_path / "m.zip",
             "--learning-rate", "0.1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.csv", "one.csv"]


def test_models_list_and_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPINEAI_HOME", str(tmp_path / "home"))
    assert run(["models"]) == 0
    out = capsys.readouterr().out
    assert "sdmet31-reference" in out and "spineai-demo-phantom" in out and "demonstration" in out
    assert run(["models", "install", "spineai-demo-phantom", "--quiet"]) == 0
    assert "installed spineai-demo-phantom 1.0.0" in capsys.readouterr().out


def test_auto_writes_its_choice_and_stability(tmp_path, monkeypatch):
    """`train --model auto` end to end on a small table, with a cheap candidate list."""
    from spineai.models import load_bundle, training
    from spineai.models.estimators import default_config

    cheap = [default_config("logreg", C=0.1), default_config("logreg"), default_config("rf", n_estimators=20),
             default_config("mlp-a", iterations=50), default_config("ensemble", iterations=50, n_estimators=20)]
    monkeypatch.setattr(training, "auto_candidates", lambda K: cheap)
    run(["train", toy_csv(tmp_path / "t.csv"), "--label-column", "diagnosis", "--model", "auto", "--folds", "3",
         "--out", tmp_path / "auto.zip", "--bootstrap", "100", "--quiet"])
    sel = load_bundle(tmp_path / "auto.zip").card["selection"]
    assert sel["chosen"] in [c.describe() for c in cheap]
    assert len(sel["stability"]["outer_fold_choices"]) == 3
    assert 0 < sel["stability"]["modal_share"] <= 1
    scores = {s["config"]: s for s in sel["final_scores"]}
    assert len(scores) == 5 and all(s["log_loss"] > 0 and s["se"] >= 0 for s in scores.values())
    best = min(s["log_loss"] for s in scores.values())
    chosen = scores[sel["chosen"]]
    assert chosen["log_loss"] <= best + min(s["se"] for s in scores.values() if s["best"]) + 1e-12
