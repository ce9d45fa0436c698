"""Honest evaluation: stratified (grouped) repeated k-fold CV, nested CV, bootstrap CIs,
calibration, decision curves, permutation importance.

Metrics are computed on out-of-fold probabilities, per repeat of the CV and then averaged; 95 % CIs
come from a bootstrap over lesions, or over patients when a group column is given, spread over the
repeats' refitted models. The bootstrap is written
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
    """{metric: {"value", "ci_low", "ci_high"}} with percentile 95 % bootstrap intervals.

    ``probs`` (R, n, K) holds R repeats of cross-validation, each with its own refitted models: the
    value is the mean of the per-repeat metrics, and bootstrap resample b is scored on repeat b mod R,
    so the interval holds the refitting variation as well as the sampling one (pooling the repeats'
    probabilities first would score an implicit ensemble, with intervals too narrow)."""
    P = probs[None] if probs.ndim == 2 else probs
    R = len(P)
    ones = np.ones((1, len(y)))
    per = [weighted_metrics(P[r], y, ones) for r in range(R)]
    point = {k: float(np.mean([m[k][0] for m in per])) for k in per[0]}
    if W is None:
        W = bootstrap_weights(len(y), n_boot, seed, groups)
    parts = [weighted_metrics(P[r], y, W[r::R]) for r in range(R) if len(W[r::R])]
    boot = {k: np.concatenate([b[k] for b in parts]) for k in parts[0]} if parts else weighted_metrics(P[0], y, W)
    out = {}
    for k in METRICS:
        lo, hi = np.nanpercentile(boot[k], [2.5, 97.5]) if n_boot > 0 else (np.nan, np.nan)
        out[k] = {"value": point[k], "ci_low": float(lo), "ci_high": float(hi)}
    return out


def _ranked_counts(score: np.ndarray, pos: np.ndarray, W: np.ndarray):
    """Weighted true/false positives (B, t) at each distinct score taken as threshold (``>= t``),
    highest first, and those thresholds."""
    order = np.argsort(-score, kind="stable")
    s, p, w = score[order], pos[order], W[:, order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each tie group
    tp = np.cumsum(w * p, 1)[:, last]
    fp = np.cumsum(w * ~p, 1)[:, last]
    return tp, fp, s[last]


def average_precision(score: np.ndarray, pos: np.ndarray, W: np.ndarray | None = None) -> np.ndarray:
    """Area under the precision-recall curve as average precision (step-wise, no interpolation:
    scikit-learn's definition), for bootstrap weights W (B, n); (B,). The metric to read beside ROC
    AUC when positives are rare: its chance level is the prevalence, not 0.5."""
    pos = np.asarray(pos, bool)
    W = np.ones((1, len(score))) if W is None else W
    tp, fp, _ = _ranked_counts(np.asarray(score, float), pos, W)
    npos = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
        recall = tp / npos
        gain = np.diff(np.concatenate([np.zeros((len(W), 1)), recall], 1), axis=1)
        return np.where(npos[:, 0] > 0, np.nansum(gain * precision, 1), np.nan)


def precision_recall_curve(score: np.ndarray, pos: np.ndarray) -> dict[str, list]:
    """Precision and recall at each distinct score as threshold (predict positive when score >= t)."""
    pos = np.asarray(pos, bool)
    tp, fp, thr = _ranked_counts(np.asarray(score, float), pos, np.ones((1, len(score))))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"threshold": thr.tolist(), "precision": (tp[0] / (tp[0] + fp[0])).tolist(),
                "recall": (tp[0] / max(pos.sum(), 1)).tolist()}


THRESHOLD_RULES = ("youden", "f1", "recall", "precision")


def choose_threshold(score: np.ndarray, pos: np.ndarray, rule: str = "youden",
                     target: float | None = None) -> dict[str, float]:
    """The decision threshold on ``score`` (predict positive when ``score >= threshold``) chosen by:
    ``youden`` (max sensitivity + specificity - 1), ``f1`` (max F1), ``recall`` (the highest threshold
    whose recall is at least ``target``: fewest false positives at that sensitivity) or ``precision``
    (the lowest threshold whose precision is at least ``target``: most positives found at that
    precision). Returns the threshold and the sensitivity, specificity, precision and F1 it gives on
    these data. Choose it on data the model was not tested on."""
    score, pos = np.asarray(score, float), np.asarray(pos, bool)
    if rule not in THRESHOLD_RULES:
        raise SpineAIError(f"unknown threshold rule {rule!r} (choose from {', '.join(THRESHOLD_RULES)})")
    if pos.all() or not pos.any():
        raise SpineAIError("choosing a threshold needs both positive and negative cases")
    if rule in ("recall", "precision") and (target is None or not 0 < target <= 1):
        raise SpineAIError(f"the {rule!r} threshold rule needs a target in (0, 1], got {target}")
    tp, fp, thr = _ranked_counts(score, pos, np.ones((1, len(score))))
    tp, fp = tp[0], fp[0]
    npos, nneg = pos.sum(), (~pos).sum()
    sens, spec = tp / npos, 1 - fp / nneg
    prec = tp / (tp + fp)
    f1 = 2 * tp / (tp + fp + npos)
    if rule == "youden":
        i = int(np.argmax(sens + spec))
    elif rule == "f1":
        i = int(np.argmax(f1))
    elif rule == "recall":
        i = int(np.flatnonzero(sens >= target - 1e-12)[0])
    else:
        ok = np.flatnonzero(prec >= target - 1e-12)
        if not len(ok):
            raise SpineAIError(f"no threshold reaches precision {target} on these data (best {prec.max():.3f})")
        i = int(ok[-1])
    return {"rule": rule, "target": target, "threshold": float(thr[i]), "sensitivity": float(sens[i]),
            "specificity": float(spec[i]), "precision": float(prec[i]), "f1": float(f1[i])}


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


def smoothed_calibration(p: np.ndarray, pos: np.ndarray, grid: np.ndarray | None = None,
                         bandwidth: float = 0.1) -> dict[str, list]:
    """Observed fraction against predicted probability, Gaussian-kernel smoothed (no bins)."""
    if grid is None:
        grid = np.linspace(max(0.0, p.min()), min(1.0, p.max()), 50)
    w = np.exp(-0.5 * ((grid[:, None] - p[None, :]) / bandwidth) ** 2)
    return {"predicted": grid.tolist(), "observed": ((w @ pos.astype(float)) / np.maximum(w.sum(1), 1e-12)).tolist()}


def _logistic_irls(D: np.ndarray, y: np.ndarray, offset: np.ndarray, iters: int = 100):
    """Unpenalised logistic regression (design D, offset) by Newton steps: (coefficients, covariance)
    or NaNs when it does not converge (perfect separation)."""
    beta = np.zeros(D.shape[1])
    for _ in range(iters):
        mu = 1.0 / (1.0 + np.exp(-np.clip(D @ beta + offset, -35, 35)))
        H = D.T @ (D * (mu * (1 - mu))[:, None])
        try:
            step = np.linalg.solve(H, D.T @ (y - mu))
        except np.linalg.LinAlgError:
            break
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            return beta, np.linalg.inv(H)
    return np.full(D.shape[1], np.nan), np.full((D.shape[1], D.shape[1]), np.nan)


def calibration_stats(p: np.ndarray, pos: np.ndarray) -> dict[str, dict[str, float]]:
    """Calibration intercept (calibration-in-the-large: logit(P(y)) = a + logit(p)) and slope
    (logit(P(y)) = a + b logit(p)), each with a Wald 95 % CI. Ideal: intercept 0, slope 1; a slope
    below 1 means predictions too extreme (overfitting)."""
    lp = np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
    y = pos.astype(float)
    out = {}
    (a,), cov = _logistic_irls(np.ones((len(y), 1)), y, lp)
    out["intercept"] = {"value": float(a), "ci_low": float(a - 1.96 * np.sqrt(cov[0, 0])),
                        "ci_high": float(a + 1.96 * np.sqrt(cov[0, 0]))}
    (_, b), cov = _logistic_irls(np.column_stack([np.ones(len(y)), lp]), y, np.zeros(len(y)))
    out["slope"] = {"value": float(b), "ci_low": float(b - 1.96 * np.sqrt(cov[1, 1])),
                    "ci_high": float(b + 1.96 * np.sqrt(cov[1, 1]))}
    return out


def decision_curve(p: np.ndarray, pos: np.ndarray, thresholds: np.ndarray | None = None,
                   prevalence: float | None = None, n_boot: int = 0, seed: int = 0,
                   groups: np.ndarray | None = None) -> dict[str, list]:
    """Net benefit of treating when p >= t, against treat-all and treat-none (Vickers & Elkin), at
    ``prevalence`` (default: the sample's): NB = sens * prev - (1 - spec) * (1 - prev) * t / (1 - t).
    With ``n_boot``, 95 % bootstrap bands of the model's net benefit."""
    if thresholds is None:
        thresholds = np.round(np.arange(0.05, 0.96, 0.01), 2)
    prev = float(pos.mean() if prevalence is None else prevalence)
    W = np.ones((1, len(p)))
    if n_boot:
        W = np.vstack([W, bootstrap_weights(len(p), n_boot, seed, groups)])
    with np.errstate(invalid="ignore", divide="ignore"):
        npos, nneg = (W * pos).sum(1), (W * ~pos).sum(1)
        nb = np.array([((W * ((p >= t) & pos)).sum(1) / npos) * prev
                       - ((W * ((p >= t) & ~pos)).sum(1) / nneg) * (1 - prev) * t / (1 - t) for t in thresholds])
    out = {"threshold": thresholds.tolist(), "prevalence": prev,
           "prevalence_source": "sample" if prevalence is None else "user",
           "net_benefit": nb[:, 0].tolist(),
           "treat_all": [float(prev - (1 - prev) * t / (1 - t)) for t in thresholds],
           "treat_none": [0.0] * len(thresholds)}
    if n_boot:
        lo, hi = np.nanpercentile(nb[:, 1:], [2.5, 97.5], axis=1)
        out["ci_low"], out["ci_high"] = lo.tolist(), hi.tolist()
    return out


# ------------------------------------------------------------------------------------------------
# Cross-validation of a model factory


@dataclass
class CVResult:
    description: str
    probs: np.ndarray  # (n, K) out-of-fold probabilities of the first repeat (one set of fitted models)
    y: np.ndarray
    classes: list[str]
    metrics: dict[str, dict[str, float]]
    repeat_auc: list[float]
    folds: int
    repeats: int
    extra: dict = field(default_factory=dict)
    repeat_probs: np.ndarray | None = None  # (R, n, K) every repeat's out-of-fold probabilities

    def summary(self) -> dict:
        return {"description": self.description, "folds": self.folds, "repeats": self.repeats,
                "metrics": self.metrics, "repeat_auc": self.repeat_auc, "confusion_matrix": confusion(self.probs, self.y),
                **self.extra}


def cross_validate(fit_predict: Callable[..., np.ndarray], X: np.ndarray,
                   y: np.ndarray, classes: Sequence[str], folds: int = 5, repeats: int = 1, seed: int = 0,
                   groups: np.ndarray | None = None, n_boot: int = 1000, description: str = "",
                   progress=None) -> CVResult:
    """``fit_predict(X_train, y_train, X_test, fold_seed, groups_train) -> probs_test``, run on
    every fold; the training part's patient groups go along so that inner splits keep them."""
    from spineai.progress import report

    K = len(classes)
    all_probs = np.zeros((repeats, len(y), K))
    total = folds * repeats
    done = 0
    for r in range(repeats):
        for tr, te in split_indices(y, folds, seed + r, groups):
            all_probs[r, te] = fit_predict(X[tr], y[tr], X[te], seed + 1000 * r + done,
                                           None if groups is None else groups[tr])
            done += 1
            report(progress, done, total, description)
    rep_auc = [float(weighted_metrics(all_probs[r], y, np.ones((1, len(y))))["auc"][0]) for r in range(repeats)]
    return CVResult(description, all_probs[0], y, list(classes), metrics_with_ci(all_probs, y, n_boot, seed, groups),
                    rep_auc, folds, repeats, repeat_probs=all_probs)


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
