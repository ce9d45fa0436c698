"""Out-of-distribution check: is a case inside what the model was trained on?

A calibrated test, stored in the model card as plain numbers:

- score: the Mahalanobis distance to the training set in a log-scaled, standardised feature space
  (radiomic features span orders of magnitude) with a Ledoit-Wolf shrunk covariance (31 features,
  ~80 cases);
- calibration (cross-conformal): every training case's distance to a fit made *without* its fold.
  A new case's p-value is the share of those out-of-fold distances at least as large as its own
  (plus one, over n + 1); it is flagged when p <= alpha. Under exchangeability that flags about a
  fraction alpha of new in-distribution cases, and ``false_alarm_rate`` measures it by
  cross-validation (the card states the measured rate). The in-sample threshold this replaces was
  optimistic, and a +-5 % range rule made 16 % false alarms on the training lesions: features
  outside the training range are still *listed*, but no longer decide.
- a whole table is also tested (Fisher's combination of its rows' p-values): a table of cases that
  each look only slightly unusual, such as features computed with another definition (PyRadiomics
  values renamed to LIFEx columns), is flagged as a whole when that combined p-value is below
  ``TABLE_ALPHA``.

It says "unlike the training data", not "this prediction is wrong": on other data flagged cases were
not classified worse than unflagged ones, so it is no per-case error estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ALPHA = 0.05  # per case: with 80 training cases the smallest possible p-value is 1/81
TABLE_ALPHA = 0.001
FOLDS = 10


@dataclass
class OODResult:
    in_distribution: bool
    distance: float
    threshold: float  # the distance above which p <= alpha
    p_value: float | None = None
    alpha: float | None = None
    out_of_range: list[str] = field(default_factory=list)  # listed for information; they do not decide
    reasons: list[str] = field(default_factory=list)  # table-level findings (feature definition, whole-table test)

    def to_dict(self) -> dict:
        return {"in_distribution": self.in_distribution, "distance": self.distance, "threshold": self.threshold,
                "p_value": self.p_value, "alpha": self.alpha, "out_of_range": list(self.out_of_range),
                "reasons": list(self.reasons)}

    def message(self) -> str:
        p = "" if self.p_value is None else f"p = {self.p_value:.3f}, "
        if self.in_distribution:
            return f"inside the training data ({p}distance {self.distance:.2f} <= {self.threshold:.2f})"
        why = list(self.reasons)
        if self.distance > self.threshold:
            why.append(f"{p}distance {self.distance:.2f} > {self.threshold:.2f}"
                       + (f" (a {self.alpha:.0%} false-alarm level)" if self.alpha is not None else ""))
        if self.out_of_range:
            why.append(f"outside the training range: {', '.join(self.out_of_range[:6])}"
                       + (f" (+{len(self.out_of_range) - 6} more)" if len(self.out_of_range) > 6 else ""))
        return "OUT OF DISTRIBUTION: " + "; ".join(why) + ": do not trust this prediction"


def _space(X: np.ndarray, log_cols: np.ndarray) -> np.ndarray:
    T = X.astype(np.float64).copy()
    T[:, log_cols] = np.log(np.maximum(T[:, log_cols], 1e-300))
    return T


def _fit_stats(T: np.ndarray):
    from sklearn.covariance import LedoitWolf

    mu, sd = T.mean(0), T.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    prec = LedoitWolf().fit((T - mu) / sd).precision_
    return mu, sd, prec


def _dist(T, mu, sd, prec):
    Z = (T - mu) / sd
    return np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", Z, prec, Z), 0.0))


def _fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n) % min(folds, n)


def fit_ood(X: np.ndarray, feature_names: list[str], alpha: float = ALPHA, folds: int = FOLDS, seed: int = 0,
            measure: bool = True) -> dict:
    """Calibration of the check on the training matrix X; ``measure`` adds its cross-validated
    false-alarm rate (what the card states)."""
    log_cols = np.flatnonzero(X.min(0) > 0)
    T = _space(X, log_cols)
    fold_of = _fold_ids(len(X), folds, seed)
    oof = np.zeros(len(X))
    for f in np.unique(fold_of):
        te = fold_of == f
        oof[te] = _dist(T[te], *_fit_stats(T[~te]))
    mu, sd, prec = _fit_stats(T)
    cal = np.sort(oof)
    stats = {
        "method": "cross-conformal p-value of the Mahalanobis distance (Ledoit-Wolf) in log-scaled standardised "
                  f"feature space, calibrated on {folds}-fold out-of-fold training distances; flagged when "
                  f"p <= {alpha:g}; tables: Fisher's combination of their rows' p-values, flagged below {TABLE_ALPHA:g}",
        "feature_names": list(feature_names),
        "log_columns": log_cols.tolist(),
        "mean": mu.tolist(), "std": sd.tolist(), "precision": prec.tolist(),
        "calibration_distances": cal.tolist(),
        "alpha": float(alpha), "table_alpha": TABLE_ALPHA,
        "threshold": _threshold(cal, alpha),
        "train_min": X.min(0).tolist(), "train_max": X.max(0).tolist(),
    }
    if measure:
        stats["false_alarm"] = false_alarm_rate(X, feature_names, alpha, folds, seed)
    return stats


def _threshold(cal: np.ndarray, alpha: float) -> float:
    """Smallest calibration distance d with p(d) <= alpha: cases beyond it are flagged."""
    n = len(cal)
    k = int(np.floor(alpha * (n + 1)))  # p <= alpha needs at most k - 1 calibration distances >= d
    return float(cal[n - k]) if k >= 1 else float("inf")


def p_values(stats: dict, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distances, conformal p-values) of the rows of X."""
    T = _space(X, np.asarray(stats["log_columns"], dtype=np.int64))
    d = _dist(T, np.asarray(stats["mean"]), np.asarray(stats["std"]), np.asarray(stats["precision"]))
    cal = np.asarray(stats["calibration_distances"])
    ge = len(cal) - np.searchsorted(cal, d, side="left")
    return d, (1.0 + ge) / (len(cal) + 1.0)


def table_p_value(p: np.ndarray) -> float:
    """Fisher's combination of per-case p-values: small when the table as a whole does not fit."""
    from scipy.stats import chi2

    p = np.clip(np.asarray(p, dtype=np.float64), 1e-300, 1.0)
    return float(chi2.sf(-2.0 * np.log(p).sum(), 2 * len(p))) if len(p) else 1.0


def check_ood(stats: dict, X: np.ndarray) -> list[OODResult]:
    names = stats["feature_names"]
    lo, hi = np.asarray(stats["train_min"]), np.asarray(stats["train_max"])
    if "calibration_distances" in stats:
        d, p = p_values(stats, X)
        alpha = float(stats["alpha"])
        flagged = p <= alpha
    else:  # cards written before the calibrated check: their in-sample threshold decides
        T = _space(X, np.asarray(stats["log_columns"], dtype=np.int64))
        d = _dist(T, np.asarray(stats["mean"]), np.asarray(stats["std"]), np.asarray(stats["precision"]))
        p, alpha = [None] * len(X), None
        flagged = d > float(stats["threshold"])
    thr = float(stats["threshold"])
    out = []
    for i in range(len(X)):
        outside = [names[j] for j in np.flatnonzero((X[i] < lo) | (X[i] > hi))]
        out.append(OODResult(not bool(flagged[i]), float(d[i]), thr, None if p[i] is None else float(p[i]), alpha,
                             outside))
    return out


def false_alarm_rate(X: np.ndarray, feature_names: list[str], alpha: float = ALPHA, folds: int = FOLDS,
                     seed: int = 0) -> dict:
    """Share of training cases flagged when each fold is checked against a calibration fitted
    without it (nested: the calibration's own folds stay inside the training part)."""
    fold_of = _fold_ids(len(X), folds, seed + 1)
    flagged = np.zeros(len(X), dtype=bool)
    for f in np.unique(fold_of):
        te = fold_of == f
        st = fit_ood(X[~te], feature_names, alpha, folds, seed, measure=False)
        flagged[te] = [not r.in_distribution for r in check_ood(st, X[te])]
    return {"rate": float(flagged.mean()), "flagged": int(flagged.sum()), "n": int(len(X)), "alpha": float(alpha),
            "method": f"{folds}-fold cross-validation: each fold's cases checked against a calibration fitted on "
                      "the other folds"}

