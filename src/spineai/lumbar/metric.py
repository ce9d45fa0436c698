"""The RSNA 2024 Lumbar Spine Degenerative Classification score, exactly as the challenge computed it.

For each condition group (spinal canal: 5 columns per study; neural foraminal: 10; subarticular: 10)
a sample-weighted log loss over every graded row of the group, with weight 1 / 2 / 4 for a row whose
true grade is Normal/Mild / Moderate / Severe. A fourth term, "any severe spinal", is a binary log
loss per study: the label is whether any spinal-canal level is Severe, the prediction the largest
P(Severe) over its spinal-canal levels, the weight the largest sample weight of its spinal-canal rows.
The score is the plain mean of the four terms (lower is better). Rows without a grade (-1) are not
scored, as in the challenge. Predictions are clipped to [eps, 1 - eps] with float64's eps, as
scikit-learn's log_loss does; each row is normalised to sum 1 first.
"""

from __future__ import annotations

import numpy as np

from spineai.errors import SpineAIError
from spineai.lumbar import CONDITIONS, LEVELS

SAMPLE_WEIGHTS = np.array([1.0, 2.0, 4.0])
GROUPS = {"spinal": ("spinal_canal_stenosis",),
          "foraminal": ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"),
          "subarticular": ("left_subarticular_stenosis", "right_subarticular_stenosis")}
TERMS = ("spinal", "foraminal", "subarticular", "any_severe_spinal")


def _columns(conditions) -> list:
    return [CONDITIONS.index(c) * len(LEVELS) + n for c in conditions for n in range(len(LEVELS))]


def check_inputs(labels, probabilities) -> tuple[np.ndarray, np.ndarray]:
    """labels (N, 25) ints in {-1, 0, 1, 2}; probabilities (N, 25, 3) non-negative, finite."""
    y = np.asarray(labels)
    p = np.asarray(probabilities, dtype=np.float64)
    n_out = len(CONDITIONS) * len(LEVELS)
    if y.ndim != 2 or y.shape[1] != n_out:
        raise SpineAIError(f"labels must be (studies, {n_out}), got shape {y.shape}")
    if p.shape != y.shape + (3,):
        raise SpineAIError(f"probabilities must be (studies, {n_out}, 3) to match the labels, got shape {p.shape}")
    if not np.isin(y, (-1, 0, 1, 2)).all():
        raise SpineAIError("labels must be 0 (Normal/Mild), 1 (Moderate), 2 (Severe) or -1 (not graded)")
    if not np.isfinite(p).all() or (p < 0).any():
        raise SpineAIError("probabilities must be finite and non-negative")
    sums = p.sum(-1, keepdims=True)
    if (sums <= 0).any():
        raise SpineAIError("a row of probabilities sums to 0")
    return y.astype(int), p / sums


def _weighted_log_loss(p_true: np.ndarray, weights: np.ndarray) -> float:
    eps = np.finfo(np.float64).eps
    return float(np.sum(weights * -np.log(np.clip(p_true, eps, 1 - eps))) / np.sum(weights))


def challenge_score(labels, probabilities) -> dict:
    """``{"spinal", "foraminal", "subarticular", "any_severe_spinal": loss, "score": mean of the four}``.

    A term with no graded row is NaN and left out of the mean (the challenge's data always had them).
    """
    y, p = check_inputs(labels, probabilities)
    out = {}
    for group, conditions in GROUPS.items():
        cols = _columns(conditions)
        yy, pp = y[:, cols].ravel(), p[:, cols].reshape(-1, 3)
        graded = yy >= 0
        out[group] = (_weighted_log_loss(pp[graded, yy[graded]], SAMPLE_WEIGHTS[yy[graded]])
                      if graded.any() else float("nan"))
    cols = _columns(GROUPS["spinal"])
    ys, ps = y[:, cols], p[:, cols, 2]
    studies = (ys >= 0).any(1)
    if studies.any():
        severe = np.array([(row[row >= 0] == 2).any() for row in ys[studies]])
        weight = np.array([SAMPLE_WEIGHTS[row[row >= 0]].max() for row in ys[studies]])
        pred = np.array([prow[row >= 0].max() for row, prow in zip(ys[studies], ps[studies])])
        out["any_severe_spinal"] = _weighted_log_loss(np.where(severe, pred, 1 - pred), weight)
    else:
        out["any_severe_spinal"] = float("nan")
    values = [out[t] for t in TERMS if np.isfinite(out[t])]
    out["score"] = float(np.mean(values)) if values else float("nan")
    return out


def class_frequencies(labels) -> np.ndarray:
    """(25, 3) frequency of each grade per output over the graded rows (+1 smoothing): the prior."""
    y = np.asarray(labels, int)
    counts = np.stack([(y == k).sum(0) for k in range(3)], -1).astype(float) + 1.0
    return counts / counts.sum(-1, keepdims=True)


def confusion_matrices(labels, probabilities) -> dict:
    """{condition: 3x3 counts, rows true grade, columns most likely predicted grade} over all levels."""
    y, p = check_inputs(labels, probabilities)
    pred = p.argmax(-1)
    out = {}
    for c in CONDITIONS:
        cols = _columns((c,))
        m = np.zeros((3, 3), int)
        for t, q in zip(y[:, cols].ravel(), pred[:, cols].ravel()):
            if t >= 0:
                m[t, q] += 1
        out[c] = m
    return out
