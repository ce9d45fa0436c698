"""`auto` as a procedure: proper scoring over repeated CV, the one-standard-error rule, the
ensemble candidate, patient groups in the inner loop, and per-repeat CV figures."""

from __future__ import annotations

import numpy as np
import pytest

from spineai.models import training
from spineai.models.estimators import default_config
from spineai.models.training import Dataset, choose_config, nested_cv


def toy(n=60, seed=0, groups=False):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = np.exp(rng.normal(size=(n, 5)) * 0.3)
    X[:, 0] += 0.8 * y
    g = np.repeat(np.arange(n // 2), 2) if groups else None
    if groups:
        y = np.repeat(np.arange(n // 2) % 2, 2)  # both lesions of a patient share the diagnosis
        X[:, 0] = np.exp(rng.normal(size=n) * 0.3) + 0.8 * y
    return Dataset(X, y, ["SD", "MET"], list("abcde"), g, [f"L{i}" for i in range(n)], "toy.csv", "diagnosis", "custom")


CHEAP = [default_config("logreg", C=0.01), default_config("logreg"), default_config("rf", n_estimators=20),
         default_config("mlp-a", iterations=40), default_config("ensemble", iterations=40, n_estimators=20)]


def test_one_standard_error_rule_prefers_the_simpler_model():
    ds = toy()
    cfg, scores = choose_config(ds.X, ds.y, 2, CHEAP, folds=3, seed=0, repeats=2)
    best = min(scores, key=lambda s: s["log_loss"])
    chosen = next(s for s in scores if s["chosen"])
    assert chosen["log_loss"] <= best["log_loss"] + best["se"]
    # nothing simpler than the chosen one is within the band
    for s in scores[: scores.index(chosen)]:
        assert s["log_loss"] > best["log_loss"] + best["se"]
    assert cfg.describe() == chosen["config"]
    # the ensemble is scored from its members' out-of-fold probabilities: the mean of theirs
    assert any(s["config"].startswith("ensemble (soft vote of logreg") for s in scores)


def test_ensemble_scored_from_members_equals_refitting_it():
    from spineai.models.evaluation import cross_validate
    from spineai.models.training import fit_predict_fn

    ds = toy()
    ens = CHEAP[-1]
    _, scores = choose_config(ds.X, ds.y, 2, CHEAP, folds=3, seed=0, repeats=1)
    direct = cross_validate(fit_predict_fn(ens, 2), ds.X, ds.y, ["0", "1"], 3, 1, 0, None, n_boot=0).repeat_probs[0]
    ll = -np.log(np.clip(direct[np.arange(len(ds.y)), ds.y], 1e-15, 1)).mean()
    assert next(s for s in scores if s["config"] == ens.describe())["log_loss"] == pytest.approx(ll, rel=1e-9)


def test_inner_loop_keeps_patient_groups(monkeypatch):
    """Every split inside nested CV is grouped by patient (it was not: the inner loop dropped them)."""
    from spineai.models import evaluation

    ds = toy(groups=True)
    seen = []
    real = evaluation.split_indices

    def spy(y, folds, seed, groups=None):
        splits = real(y, folds, seed, groups)
        seen.append(groups is not None)
        if groups is not None:
            for tr, te in splits:
                assert not set(groups[tr]) & set(groups[te])
        return splits

    monkeypatch.setattr(evaluation, "split_indices", spy)
    monkeypatch.setattr(training, "split_indices", spy)
    nested_cv(ds, CHEAP[:2], outer_folds=3, inner_folds=2, n_boot=0, inner_repeats=1)
    assert len(seen) > 3 and all(seen)


def test_repeats_report_per_repeat_means_not_pooled_probabilities():
    from spineai.models.training import evaluate_config

    ds = toy()
    r = evaluate_config(ds, default_config("rf", n_estimators=20), folds=3, repeats=4, n_boot=200)
    assert r.metrics["auc"]["value"] == pytest.approx(np.mean(r.repeat_auc))
    pooled = training.weighted_metrics(r.repeat_probs.mean(0), ds.y, np.ones((1, len(ds.y))))["auc"][0]
    assert r.metrics["auc"]["value"] != pytest.approx(pooled)
    lo, hi = r.metrics["auc"]["ci_low"], r.metrics["auc"]["ci_high"]
    assert lo < min(r.repeat_auc) <= max(r.repeat_auc) < hi


def test_outer_fold_choices_and_stability():
    ds = toy()
    res, chosen = nested_cv(ds, CHEAP[:3], outer_folds=3, inner_folds=2, n_boot=0, inner_repeats=1)
    st = training.choice_stability(chosen, chosen[0])
    assert len(st["outer_fold_choices"]) == 3 and sum(st["counts"].values()) == 3
    assert 1 / 3 <= st["modal_share"] <= 1 and st["final_choice_share"] >= 1 / 3
