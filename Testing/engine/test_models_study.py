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
    assert dc["treat_none"] == [0.0, 0.0] and dc["prevalence"] == pytest.approx(0.3)


def test_decision_curve_at_a_stated_prevalence_with_bands():
    rng = np.random.default_rng(0)
    pos = np.arange(100) % 2 == 0
    p = np.clip(0.5 + 0.3 * (pos - 0.5) + 0.2 * rng.standard_normal(100), 0, 1)
    dc = decision_curve(p, pos, np.array([0.1, 0.3]), prevalence=0.1, n_boot=200)
    sens, fpr = (p[pos] >= 0.3).mean(), (p[~pos] >= 0.3).mean()
    assert dc["prevalence"] == 0.1 and dc["prevalence_source"] == "user"
    assert dc["net_benefit"][1] == pytest.approx(sens * 0.1 - fpr * 0.9 * 0.3 / 0.7)
    assert dc["treat_all"][0] == pytest.approx(0.1 - 0.9 * 0.1 / 0.9)
    assert all(lo <= v <= hi for lo, v, hi in zip(dc["ci_low"], dc["net_benefit"], dc["ci_high"]))


def test_calibration_intercept_and_slope():
    from spineai.models.evaluation import calibration_stats

    rng = np.random.default_rng(1)
    lp = rng.normal(0, 1.5, 4000)
    pos = rng.random(4000) < 1 / (1 + np.exp(-lp))
    good = calibration_stats(1 / (1 + np.exp(-lp)), pos)
    assert good["slope"]["ci_low"] < 1 < good["slope"]["ci_high"]
    assert abs(good["intercept"]["value"]) < 0.15
    assert good["intercept"]["ci_high"] - good["intercept"]["ci_low"] == pytest.approx(2 * 1.96 * 0.0376, rel=0.2)
    extreme = calibration_stats(1 / (1 + np.exp(-2 * lp)), pos)  # overconfident: slope about 0.5
    assert extreme["slope"]["value"] == pytest.approx(0.5, abs=0.08) and extreme["slope"]["ci_high"] < 1


# --- the original study's recipe -----------------------------------------------------------------


def test_study_grid_is_the_write_up_s():
    from spineai.models.study import ITERATIONS, LEARNING_RATES

    assert ITERATIONS == (5000, 10000, 20000, 50000)
    assert LEARNING_RATES == (0.001, 0.005, 0.0075, 0.01)


def test_study_init_and_shuffles_are_the_originals():
    sizes = (31, 7, 3, 1)
    p = gridtrain.study_init(sizes)
    np.random.seed(14)
    ref = [np.random.randn(7, 31), np.zeros(7), np.random.randn(3, 7), np.zeros(3), np.random.randn(1, 3), np.zeros(1)]
    np.testing.assert_array_equal(p, np.concatenate([a.ravel() for a in ref]))
    ix = np.arange(5, 69)
    order = gridtrain.study_epoch_orders([ix, ix[:50]], 3)
    for e in (1, 2, 3):
        np.random.seed(10 + e)
        np.testing.assert_array_equal(order[0, e - 1], ix[np.random.permutation(64)])
    assert (order[1, :, 50:] == -1).all()


def test_study_normalisation_is_l2_of_30_columns_per_table():
    from spineai.models.study import _recipe_scaled

    X = np.random.default_rng(0).random((20, 31)) * 50
    tr, te = np.arange(15), np.arange(15, 20)
    Z = _recipe_scaled(X, tr, te, "study")
    np.testing.assert_allclose(np.linalg.norm(Z[tr, :30], axis=0), 1.0)
    np.testing.assert_allclose(np.linalg.norm(Z[te, :30], axis=0), 1.0)  # its own norms: transductive
    np.testing.assert_array_equal(Z[:, 30], X[:, 30])  # the 31st column stays raw


def test_study_arithmetic_matches_the_original_loop_and_reports_nan():
    """Mini-batches of the original (complete ones, then a partial one), its output gradient;
    a run pushed to saturation becomes NaN instead of being silently repaired."""
    X, y = _toy(21, 4)
    sizes = (4, 3, 1)
    p0 = gridtrain.study_init(sizes)
    order = gridtrain.study_epoch_orders([np.arange(21)], 2)
    res = gridtrain.train_runs(X, y[:, None].astype(float), sizes, [np.arange(21)], np.array([0]), p0, np.array([0.5]),
                               np.array([8]), np.array([2]), seed=0, order=order, exact=True)
    W1, b1 = p0[:12].reshape(3, 4).copy(), p0[12:15].copy()
    W2, b2 = p0[15:18].reshape(1, 3).copy(), p0[18:19].copy()
    for e in range(2):
        idx = order[0, e]
        for s in range(0, 21, 8):  # 8, 8, then 5
            b = idx[s:s + 8]
            A1 = np.tanh(X[b] @ W1.T + b1)
            A2 = 1 / (1 + np.exp(-(A1 @ W2.T + b2)))
            dZ2 = -(y[b, None] / A2 - (1 - y[b, None]) / (1 - A2)) * A2 * (1 - A2)
            dZ1 = (dZ2 @ W2) * (1 - A1 ** 2)
            W2, b2 = W2 - 0.5 * dZ2.T @ A1 / len(b), b2 - 0.5 * dZ2.mean(0)
            W1, b1 = W1 - 0.5 * dZ1.T @ X[b] / len(b), b1 - 0.5 * dZ1.mean(0)
    np.testing.assert_allclose(res.snapshots[-1, :, 0], np.concatenate([W1.ravel(), b1, W2.ravel(), b2]), atol=1e-5)
    Xs = np.vstack([np.full((10, 4), 3.0), np.full((10, 4), -3.0)])
    ys = np.r_[np.ones(10), np.zeros(10)]
    big = gridtrain.train_runs(Xs, ys[:, None], sizes, [np.arange(20)], np.array([0]), p0 * 10, np.array([50.0]),
                               np.array([1]), np.array([5, 200]), seed=0,
                               order=gridtrain.study_epoch_orders([np.arange(20)], 200), exact=True)
    assert np.isnan(big.snapshots[-1]).any()


def test_seed_stability_compares_the_recipes(shared_data):
    from spineai.models.study import seed_stability
    from spineai.models.training import load_dataset

    ds = load_dataset(shared_data("sdmet31", "train.csv"), "diagnosis", exclude=["label"])
    st = seed_stability(ds.X, ds.y, 2, folds=3, seeds=range(3), iterations=100)
    assert set(st["recipes"]) == {"study", "improved"}
    study, improved = st["recipes"]["study"]["auc"], st["recipes"]["improved"]["auc"]
    assert len(study) == len(improved) == 3
    assert len(set(study)) == 3  # the original start changes the result with its seed
    assert all(0.5 < a <= 1 for a in improved)


def test_study_grid_small_and_report(tmp_path, shared_data):
    pytest.importorskip("torch", reason="the report's 'improved' network B trains with torch (pip install 'spineai[deep]')")
    from spineai.models.study import run_study

    s = run_study(shared_data("sdmet31", "train.csv"), "diagnosis", tmp_path / "study", folds=3, n_boot=100,
                  iterations=(20, 40), learning_rates=(0.01, 0.05), recipe="study", prevalence=0.3,
                  stability_seeds=2, stability_iterations=30, exclude=["label"])
    rows = s["grid"]["rows"]
    assert len(rows) == 2 * 3 * 2 * 2 == s["grid"]["runs"]
    assert {r["mode"] for r in rows} == {"batch", "stochastic", "minibatch"}
    out = tmp_path / "study"
    for f in ("report.html", "grid.csv", "study.json", "roc.png", "pr.png", "calibration.png", "decision_curve.png",
              "convergence.png"):
        assert (out / f).stat().st_size > 0, f
    html = (out / "report.html").read_text()
    assert "Original grid" in html and "improved mlp-b" in html and "xgboost" in html
    assert "transductive" in html and "Reporting summary (TRIPOD+AI items)" in html
    assert "Nothing here is externally validated" in html and "per feature" in html
    assert "Seed stability" in html and "prevalence of 30%" in html
    assert len((out / "grid.csv").read_text().splitlines()) == len(rows) + 1
    curves = s["curves"]
    best = next(k for k in curves["decision_curve"] if k.startswith("grid best of 24 (optimistic"))
    dc = curves["decision_curve"][best]
    assert dc["prevalence"] == 0.3 and "treat_all" in dc and "ci_low" in dc
    cal = curves["calibration"]["logreg: logreg (standard, C=1.0)"]
    assert {"intercept", "slope"} <= set(cal) and sum(cal["bins"]["count"]) == 80
    # "logreg" is one model: the README's and `train --model logreg`'s (C = 1)
    assert s["others"]["logreg"]["description"] == "logreg (standard, C=1.0)"
    assert s["others"]["logreg"]["metrics"]["auc"]["value"] > 0.85
    c = s["grid"]["curves"]["mlp-b|stochastic|0.05"]
    assert c["train_loss"][-1] < c["train_loss"][0]
    conv = __import__("re").findall(r"CV test folds", html)
    assert conv
