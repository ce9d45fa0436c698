"""The vectorised grid trainer, the metrics / bootstrap, the study grid and its report."""

from __future__ import annotations

import numpy as np
import pytest

from spineai.models import gridtrain
from spineai.models.evaluation import (
    bootstrap_weights, decision_curve, metrics_with_ci, split_indices, weighted_metrics,
)


def test_fast_tanh_accuracy():
    x = np.linspace(-20, 20, 100001)
    assert np.abs(gridtrain.fast_tanh(x) - np.tanh(x)).max() < 3e-7


def _toy(n=40, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    y = (X[:, 0] + 0.3 * rng.random(n) > 0.6).astype(int)
    return X, y


@pytest.mark.skipif(not gridtrain.numba_available(), reason="numba is not installed: only the numpy path exists")
@pytest.mark.parametrize("sizes,K", [((5, 6, 1), 2), ((5, 7, 3, 1), 2), ((5, 4, 3), 3)])
def test_compiled_loop_equals_numpy_loop(sizes, K):
    X, y = _toy()
    Y = y[:, None].astype(float) if K == 2 else np.eye(3)[np.arange(len(y)) % 3]
    sets = [np.arange(0, 40, 2), np.arange(1, 37, 2)]  # two folds of different sizes
    R = 6
    args = dict(X=X, Y=Y, sizes=sizes, train_sets=sets, run_fold=np.array([0, 0, 0, 1, 1, 1]),
                init=gridtrain.glorot_init(sizes, 1), learning_rates=np.array([0.01, 0.05, 0.1] * 2),
                batch_sizes=np.array([1, 16, 1000] * 2), snapshot_epochs=np.array([1, 4]), seed=3, dtype=np.float64)
    a = gridtrain.train_runs(**args, use_numba=True)
    b = gridtrain.train_runs(**args, use_numba=False)
    assert a.snapshots.shape == (2, gridtrain.n_params(sizes), R)
    np.testing.assert_allclose(a.snapshots, b.snapshots, rtol=1e-9, atol=1e-11)


def test_plain_loop_matches_a_per_example_reference():
    """One stochastic run against a textbook per-example implementation (exact tanh aside)."""
    X, y = _toy(20, 4)
    sizes = (4, 3, 1)
    p0 = gridtrain.glorot_init(sizes, 2)
    res = gridtrain.train_runs(X, y[:, None].astype(float), sizes, [np.arange(20)], np.array([0]), p0,
                               np.array([0.1]), np.array([1]), np.array([3]), seed=5, use_numba=False)
    order = gridtrain.epoch_orders([np.arange(20)], 3, 5)[0]
    W1, b1 = p0[:12].reshape(3, 4).copy(), p0[12:15].copy()
    W2, b2 = p0[15:18].reshape(1, 3).copy(), p0[18:19].copy()
    for e in range(3):
        for s in order[e]:
            h = np.tanh(W1 @ X[s] + b1)
            p = 1 / (1 + np.exp(-(W2 @ h + b2)))
            d2 = p - y[s]
            d1 = (W2.T @ d2) * (1 - h ** 2)
            W2 -= 0.1 * np.outer(d2, h)
            b2 -= 0.1 * d2
            W1 -= 0.1 * np.outer(d1, X[s])
            b1 -= 0.1 * d1
    ref = np.concatenate([W1.ravel(), b1, W2.ravel(), b2])
    np.testing.assert_allclose(res.snapshots[-1, :, 0], ref, atol=1e-5)


def test_shorter_runs_are_snapshots_of_the_longer_one():
    X, y = _toy()
    sizes = (5, 6, 1)
    kw = dict(X=X, Y=y[:, None].astype(float), sizes=sizes, train_sets=[np.arange(40)], run_fold=np.array([0, 0]),
              init=gridtrain.glorot_init(sizes, 0), learning_rates=np.array([0.05, 0.05]), batch_sizes=np.array([1, 16]),
              seed=1, dtype=np.float64)
    long = gridtrain.train_runs(**kw, snapshot_epochs=np.array([3, 7]))
    short = gridtrain.train_runs(**kw, snapshot_epochs=np.array([3]))
    np.testing.assert_allclose(long.snapshots[0], short.snapshots[0], rtol=1e-12)


def test_weighted_metrics_match_sklearn():
    from sklearn.metrics import brier_score_loss, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p1 = np.clip(0.5 * y + 0.6 * rng.random(50) - 0.1, 0, 1)
    probs = np.column_stack([1 - p1, p1])
    m = weighted_metrics(probs, y, np.ones((1, 50)))
    assert m["auc"][0] == pytest.approx(roc_auc_score(y, p1))
    assert m["brier"][0] == pytest.approx(brier_score_loss(y, p1))
    assert m["f1"][0] == pytest.approx(f1_score(y, probs.argmax(1)))
    # weights = duplicated rows
    w = rng.integers(0, 3, 50).astype(float)
    rep = np.repeat(np.arange(50), w.astype(int))
    assert weighted_metrics(probs, y, w[None])["auc"][0] == pytest.approx(roc_auc_score(y[rep], p1[rep]))
    ci = metrics_with_ci(probs, y, 300, 0)
    for k, v in ci.items():
        assert v["ci_low"] <= v["value"] + 1e-9 and v["value"] <= v["ci_high"] + 1e-9, k


def test_grouped_splits_and_bootstrap_keep_patients_together():
    y = np.array([0, 0, 1, 1] * 10)
    groups = np.repeat(np.arange(20), 2)
    for tr, te in split_indices(y, 4, 0, groups):
        assert not set(groups[tr]) & set(groups[te])
    W = bootstrap_weights(40, 50, 0, groups)
    assert np.all(W[:, ::2] == W[:, 1::2])


def test_decision_curve_treat_all_and_perfect_model():
    pos = np.array([True] * 3 + [False] * 7)
    dc = decision_curve(pos.astype(float), pos, np.array([0.2, 0.5]))
    assert dc["net_benefit"] == pytest.approx([0.3, 0.3])
    assert dc["treat_all"] == pytest.approx([0.3 - 0.7 * 0.25, 0.3 - 0.7])


def test_study_grid_small_and_report(tmp_path, shared_data):
    from spineai.models.study import run_study

    s = run_study(shared_data("sdmet31", "train.csv"), "diagnosis", tmp_path / "study", folds=3, n_boot=100,
                  iterations=(20, 40), learning_rates=(0.01, 0.05))
    rows = s["grid"]["rows"]
    assert len(rows) == 2 * 3 * 2 * 2 == s["grid"]["runs"]
    assert {r["mode"] for r in rows} == {"batch", "stochastic", "minibatch"}
    out = tmp_path / "study"
    for f in ("report.html", "grid.csv", "study.json", "roc.png", "pr.png", "calibration.png", "decision_curve.png",
              "convergence.png"):
        assert (out / f).stat().st_size > 0, f
    html = (out / "report.html").read_text()
    assert "Original grid" in html and "improved mlp-b" in html and "xgboost" in html
    assert len((out / "grid.csv").read_text().splitlines()) == len(rows) + 1
    # comparators are honest and clearly better than chance on the study's table
    assert s["others"]["logreg"]["metrics"]["auc"]["value"] > 0.85
    # stochastic mode at the highest learning rate converges (held-out loss falls from its start)
    c = s["grid"]["curves"]["mlp-b|stochastic|0.05"]
    assert c["train_loss"][-1] < c["train_loss"][0]
