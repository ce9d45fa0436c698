"""Out-of-distribution check: is a case inside what the model was trained on?

Two signals, both stored in the model card as plain numbers:
- a Mahalanobis distance to the training set in a log-scaled, standardised feature space (radiomic
  features span orders of magnitude) with a Ledoit-Wolf shrunk covariance (31 features, ~80 cases);
  its threshold is calibrated on the training set itself, as the 99th percentile of *out-of-fold*
  distances (each training case measured against a fit that did not see it, so the threshold is not
  the optimistic in-sample one);
- per feature, values outside the training range widened by 5 % of that range.
A case is in distribution only when both say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RANGE_MARGIN = 0.05


@dataclass
class OODResult:
    in_distribution: bool
    distance: float
    threshold: float
    out_of_range: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"in_distribution": self.in_distribution, "distance": self.distance, "threshold": self.threshold,
                "out_of_range": list(self.out_of_range)}

    def message(self) -> str:
        if self.in_distribution:
            return f"inside the training data (distance {self.distance:.2f} <= {self.threshold:.2f})"
        why = []
        if self.distance > self.threshold:
            why.append(f"distance {self.distance:.2f} > {self.threshold:.2f}")
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
    Z = (T - mu) / sd
    prec = LedoitWolf().fit(Z).precision_
    return mu, sd, prec


def _dist(T, mu, sd, prec):
    Z = (T - mu) / sd
    return np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", Z, prec, Z), 0.0))


def fit_ood(X: np.ndarray, feature_names: list[str], quantile: float = 0.99, folds: int = 5, seed: int = 0) -> dict:
    log_cols = np.flatnonzero(X.min(0) > 0)
    T = _space(X, log_cols)
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(len(X)) % folds
    oof = np.zeros(len(X))
    for f in range(folds):
        te = fold_of == f
        mu, sd, prec = _fit_stats(T[~te])
        oof[te] = _dist(T[te], mu, sd, prec)
    mu, sd, prec = _fit_stats(T)
    lo, hi = X.min(0), X.max(0)
    margin = RANGE_MARGIN * (hi - lo)
    return {
        "method": "Mahalanobis distance (Ledoit-Wolf) on log-scaled standardised features; threshold = "
                  f"{quantile:.0%} quantile of {folds}-fold out-of-fold training distances; range margin {RANGE_MARGIN:.0%}",
        "feature_names": list(feature_names),
        "log_columns": log_cols.tolist(),
        "mean": mu.tolist(), "std": sd.tolist(), "precision": prec.tolist(),
        "threshold": float(np.quantile(oof, quantile)),
        "train_min": lo.tolist(), "train_max": hi.tolist(), "margin": margin.tolist(),
        "oof_distance_median": float(np.median(oof)),
    }


def check_ood(stats: dict, X: np.ndarray) -> list[OODResult]:
    T = _space(X, np.asarray(stats["log_columns"], dtype=np.int64))
    d = _dist(T, np.asarray(stats["mean"]), np.asarray(stats["std"]), np.asarray(stats["precision"]))
    lo = np.asarray(stats["train_min"]) - np.asarray(stats["margin"])
    hi = np.asarray(stats["train_max"]) + np.asarray(stats["margin"])
    names = stats["feature_names"]
    thr = float(stats["threshold"])
    out = []
    for i in range(len(X)):
        bad = [names[j] for j in np.flatnonzero((X[i] < lo) | (X[i] > hi))]
        out.append(OODResult(bool(d[i] <= thr and not bad), float(d[i]), thr, bad))
    return out
