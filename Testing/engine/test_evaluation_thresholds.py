"""Precision-recall, average precision and the threshold chooser against hand-computed values."""

import numpy as np
import pytest

from spineai.errors import SpineAIError
from spineai.models.evaluation import average_precision, bootstrap_weights, choose_threshold, precision_recall_curve

SCORE = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2])
POS = np.array([1, 0, 1, 1, 0, 0, 1, 0], bool)


def test_average_precision_by_hand_and_against_scikit_learn():
    from sklearn.metrics import average_precision_score

    # positives at ranks 1, 3, 4, 7: AP = (1/1 + 2/3 + 3/4 + 4/7) / 4
    assert average_precision(SCORE, POS)[0] == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 7) / 4)
    rng = np.random.default_rng(0)
    s, p = rng.random(200).round(2), rng.random(200) < 0.1  # ties and rare positives
    assert average_precision(s, p)[0] == pytest.approx(average_precision_score(p, s))
    W = bootstrap_weights(200, 50, 1)
    boot = average_precision(s, p, W)
    i = 7
    idx = np.repeat(np.arange(200), W[i].astype(int))
    assert boot[i] == pytest.approx(average_precision_score(p[idx], s[idx]))


def test_precision_recall_curve_points():
    curve = precision_recall_curve(SCORE, POS)
    assert curve["threshold"][:3] == [0.9, 0.8, 0.7]
    assert curve["precision"][:3] == pytest.approx([1.0, 0.5, 2 / 3])
    assert curve["recall"][-1] == 1.0


def test_threshold_rules_by_hand():
    # thresholds (>=): 0.9 -> tp1 fp0; 0.8 -> 1,1; 0.7 -> 2,1; 0.6 -> 3,1; 0.55 -> 3,2; 0.4 -> 3,3; 0.3 -> 4,3
    y = choose_threshold(SCORE, POS, "youden")
    assert y["threshold"] == 0.6 and y["sensitivity"] == 0.75 and y["specificity"] == 0.75
    assert choose_threshold(SCORE, POS, "f1")["threshold"] == 0.6  # F1 6/8
    r = choose_threshold(SCORE, POS, "recall", 1.0)
    assert r["threshold"] == 0.3 and r["precision"] == pytest.approx(4 / 7)
    p = choose_threshold(SCORE, POS, "precision", 0.75)
    assert p["threshold"] == 0.6 and p["precision"] == 0.75


def test_threshold_errors_named():
    with pytest.raises(SpineAIError, match="unknown threshold rule 'best'"):
        choose_threshold(SCORE, POS, "best")
    with pytest.raises(SpineAIError, match="needs a target"):
        choose_threshold(SCORE, POS, "recall")
    with pytest.raises(SpineAIError, match="both positive and negative"):
        choose_threshold(SCORE, np.ones(8, bool))
    with pytest.raises(SpineAIError, match="no threshold reaches precision 1.0"):
        choose_threshold(np.array([0.9, 0.8]), np.array([False, True]), "precision", 1.0)
