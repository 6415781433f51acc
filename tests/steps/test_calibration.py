"""Centred isotonic calibration: calibrated like isotonic, but keeps the booster's ranking."""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score

from steps.metrics import expected_calibration_error
from steps.train import centred_isotonic


def _overconfident_scores(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores that rank well but are badly calibrated (true rate = score squared)."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.0, 1.0, rows)
    return scores, (rng.uniform(0.0, 1.0, rows) < scores**2).astype(int)


def test_centred_isotonic_calibrates_unseen_scores():
    scores, target = _overconfident_scores(20_000, seed=0)
    x, y = centred_isotonic(scores, target)
    new_scores, new_target = _overconfident_scores(20_000, seed=1)
    calibrated = np.interp(new_scores, x, y)
    assert expected_calibration_error(new_target, new_scores) > 0.1
    assert expected_calibration_error(new_target, calibrated) < 0.02


def test_centred_isotonic_is_strictly_increasing_and_keeps_the_ranking():
    scores, target = _overconfident_scores(20_000, seed=0)
    x, y = centred_isotonic(scores, target)
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)
    new_scores, new_target = _overconfident_scores(5_000, seed=1)
    inside = (new_scores > x[0]) & (new_scores < x[-1])
    calibrated = np.interp(new_scores[inside], x, y)
    assert np.array_equal(np.argsort(calibrated, kind="stable"), np.argsort(new_scores[inside], kind="stable"))
    # Plain isotonic ties whole ranges of scores, which costs precision-recall ranking.
    isotonic = IsotonicRegression(out_of_bounds="clip").fit(scores, target).predict(new_scores)
    assert len(np.unique(isotonic)) < len(np.unique(calibrated)) / 10
    assert average_precision_score(new_target, np.interp(new_scores, x, y)) > average_precision_score(
        new_target, isotonic
    )
