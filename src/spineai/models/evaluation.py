"""Honest evaluation: stratified (grouped) repeated k-fold CV, nested CV, bootstrap CIs,
calibration, decision curves, permutation importance.

Metrics are computed on out-of-fold probabilities (averaged over repeats); 95 % CIs come from a
bootstrap over lesions, or over patients when a group column is given. The bootstrap is written
as multinomial weights so all resamples of a metric are one matrix product (fast enough for the
96-run grid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from spineai.errors import SpineAIError

METRICS = ("auc", "accuracy", "f1", "sensitivity", "specificity", "brier")


def check_folds(y: np.ndarray, folds: int, groups: np.ndarray | None = None) -> None:
    if folds < 2:
        raise SpineAIError(f"cross-validation needs at least 2 folds, got {folds}")
    counts = np.bincount(y)
    if groups is not None:
        per_class = [len(set(groups[y == c].tolist())) for c in range(len(counts))]
        if min(per_class) < folds:
            raise SpineAIError(f"too few patients for {folds} folds: the smallest class has {min(per_class)} patients")
    elif counts.min() < folds:
        raise SpineAIError(
            f"too few samples for {folds}-fold cross-validation: the smallest class has {counts.min()} "
            f"samples; use --folds {max(2, int(counts.min()))} or fewer"
        )


def split_indices(y: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    check_folds(y, folds, groups)
    if groups is not None:
        cv = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        return [(tr, te) for tr, te in cv.split(np.zeros(len(y)), y, groups)]
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in cv.split(np.zeros(len(y)), y)]


# ------------------------------------------------------------------------------------------------
# Weighted metrics: every metric takes bootstrap weights W (B, n) and returns (B,)


def _auc_binary(score: np.ndarray, pos: np.ndarray, W: np.ndarray) -> np.ndarray:
    sp, sn = score[pos], score[~pos]
    C = (sp[:, None] > sn[None, :]).astype(float) + 0.5 * (sp[:, None] == sn[None, :])
    Wp, Wn = W[:, pos], W[:, ~pos]
    num = np.einsum("bi,ij,bj->b", Wp, C, Wn)
    den = Wp.sum(1) * Wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def weighted_metrics(probs: np.ndarray, y: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics for weights W (B, n). Binary: positive class = 1; more classes: macro averages (AUC
    one-vs-rest) of the per-class sensitivity / specificity / F1."""
    K = probs.shape[1]
    pred = probs.argmax(1)
    tot = W.sum(1)
    out = {"accuracy": (W * (pred == y)).sum(1) / tot}
    onehot = np.eye(K)[y]
    out["brier"] = (W * ((probs - onehot) ** 2).sum(1)).sum(1) / tot / (1 if K > 2 else 2)
    classes = [1] if K == 2 else list(range(K))
    aucs, sens, spec, f1 = [], [], [], []
    with np.errstate(invalid="ignore", divide="ignore"):
        for c in classes:
            pos = y == c
            aucs.append(_auc_binary(probs[:, c], pos, W))
            tp = (W * (pos & (pred == c))).sum(1)
            fn = (W * (pos & (pred != c))).sum(1)
            fp = (W * (~pos & (pred == c))).sum(1)
            tn = (W * (~pos & (pred != c))).sum(1)
            sens.append(tp / (tp + fn))
            spec.append(tn / (tn + fp))
            f1.append(2 * tp / (2 * tp + fp + fn))
    out["auc"] = np.mean(aucs, axis=0)
    out["sensitivity"] = np.mean(sens, axis=0)
    out["specificity"] = np.mean(spec, axis=0)
    out["f1"] = np.mean(f1, axis=0)
    return out


def bootstrap_weights(n: int, B: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=B).astype(float)
    uniq, inv = np.unique(groups, return_inverse=True)
    gw = rng.multinomial(len(uniq), np.full(len(uniq), 1.0 / len(uniq)), size=B).astype(float)
    return gw[:, inv]


def metrics_with_ci(probs: np.ndarray, y: np.ndarray, n_boot: int = 1000, seed: int = 0,
                    groups: np.ndarray | None = None, W: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """{metric: {"value", "ci_low", "ci_high"}} with percentile 95 % bootstrap intervals."""
    point = {k: float(v[0]) for k, v in weighted_metrics(probs, y, np.ones((1, len(y)))).items()}
    if W is None:
        W = bootstrap_weights(len(y), n_boot, seed, groups)
    boot = weighted_metrics(probs, y, W)
    out = {}
    for k in METRICS:
        lo, hi = np.nanpercentile(boot[k], [2.5, 97.5]) if n_boot > 0 else (np.nan, np.nan)
        out[k] = {"value": point[k], "ci_low": float(lo), "ci_high": float(hi)}
    return out


def confusion(probs: np.ndarray, y: np.ndarray) -> list[list[int]]:
    K = probs.shape[1]
    m = np.zeros((K, K), dtype=int)
    np.add.at(m, (y, probs.argmax(1)), 1)
    return m.tolist()


def calibration_curve(p: np.ndarray, pos: np.ndarray, bins: int = 10) -> dict[str, list]:
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    mp, fo, cnt = [], [], []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            mp.append(float(p[sel].mean())), fo.append(float(pos[sel].mean())), cnt.append(int(sel.sum()))
    return {"mean_predicted": mp, "observed_fraction": fo, "count": cnt}


def decision_curve(p: np.ndarray, pos: np.ndarray, thresholds: np.ndarray | None = None) -> dict[str, list]:
    """Net benefit of treating when p >= t, against treat-all and treat-none (Vickers & Elkin)."""
    if thresholds is None:
        thresholds = np.round(np.arange(0.05, 0.96, 0.01), 2)
    n = len(p)
    prev = pos.mean()
    nb, nb_all = [], []
    for t in thresholds:
        tp = np.sum((p >= t) & pos) / n
        fp = np.sum((p >= t) & ~pos) / n
        w = t / (1 - t)
        nb.append(float(tp - fp * w))
        nb_all.append(float(prev - (1 - prev) * w))
    return {"threshold": thresholds.tolist(), "net_benefit": nb, "treat_all": nb_all, "treat_none": [0.0] * len(thresholds)}


# ------------------------------------------------------------------------------------------------
# Cross-validation of a model factory


@dataclass
class CVResult:
    description: str
    probs: np.ndarray  # (n, K) out-of-fold, mean over repeats
    y: np.ndarray
    classes: list[str]
    metrics: dict[str, dict[str, float]]
    repeat_auc: list[float]
    folds: int
    repeats: int
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"description": self.description, "folds": self.folds, "repeats": self.repeats,
                "metrics": self.metrics, "repeat_auc": self.repeat_auc, "confusion_matrix": confusion(self.probs, self.y),
                **self.extra}


def cross_validate(fit_predict: Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray], X: np.ndarray,
                   y: np.ndarray, classes: Sequence[str], folds: int = 5, repeats: int = 1, seed: int = 0,
                   groups: np.ndarray | None = None, n_boot: int = 1000, description: str = "",
                   progress=None) -> CVResult:
    """``fit_predict(X_train, y_train, X_test, fold_seed) -> probs_test``, run on every fold."""
    from spineai.progress import report

    K = len(classes)
    all_probs = np.zeros((repeats, len(y), K))
    total = folds * repeats
    done = 0
    for r in range(repeats):
        for tr, te in split_indices(y, folds, seed + r, groups):
            all_probs[r, te] = fit_predict(X[tr], y[tr], X[te], seed + 1000 * r + done)
            done += 1
            report(progress, done, total, description)
    mean = all_probs.mean(0)
    rep_auc = [float(weighted_metrics(all_probs[r], y, np.ones((1, len(y))))["auc"][0]) for r in range(repeats)]
    return CVResult(description, mean, y, list(classes), metrics_with_ci(mean, y, n_boot, seed, groups),
                    rep_auc, folds, repeats)


def permutation_importance(predict_proba: Callable[[np.ndarray], np.ndarray], X: np.ndarray, y: np.ndarray,
                           names: Sequence[str], repeats: int = 5, seed: int = 0) -> list[tuple[str, float, float]]:
    """Mean and SD of the AUC drop when each column is shuffled: [(name, mean, sd)] sorted."""
    rng = np.random.default_rng(seed)
    ones = np.ones((1, len(y)))
    base = weighted_metrics(predict_proba(X), y, ones)["auc"][0]
    out = []
    for j, name in enumerate(names):
        drops = []
        for _ in range(repeats):
            Xp = X.copy()
            Xp[:, j] = rng.permutation(Xp[:, j])
            drops.append(base - weighted_metrics(predict_proba(Xp), y, ones)["auc"][0])
        out.append((name, float(np.mean(drops)), float(np.std(drops))))
    return sorted(out, key=lambda t: -t[1])


# ---- evaluation on few cases ------------------------------------------------------------------

MIN_CASES_PER_CLASS = 10


def small_sample_warnings(metrics: dict[str, dict[str, float]], y: np.ndarray, classes: list[str]) -> list[str]:
    """Warnings for metrics from few cases; marks CIs that cannot be estimated as undefined (NaN).

    A class with fewer than 10 cases makes every figure fragile. With fewer than 5, or with a
    bootstrap that returns a zero-width interval from fewer than 10, the resamples cannot estimate
    the spread: the CI is undefined rather than a reassuring [1.000, 1.000].
    """
    counts = np.bincount(np.asarray(y, dtype=int), minlength=len(classes))
    small = [f"{c} ({int(n)})" for c, n in zip(classes, counts) if n < MIN_CASES_PER_CLASS]
    if not small:
        return []
    out = [f"fewer than {MIN_CASES_PER_CLASS} cases in class {', '.join(small)}: these figures are not reliable"]
    undefined = []
    for k, m in metrics.items():
        lo, hi = m.get("ci_low", np.nan), m.get("ci_high", np.nan)
        if counts.min() < 5 or not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            m["ci_low"] = m["ci_high"] = float("nan")
            undefined.append(k)
    if undefined:
        out.append(f"the 95 % CI of {', '.join(undefined)} cannot be estimated from so few cases: shown as undefined")
    return out
