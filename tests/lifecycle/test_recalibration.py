"""The delay-rate correction's arithmetic: the shift's direction and size, the window, the recency weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from skyprophet.lifecycle import recalibration
from skyprophet.monitoring import realized
from skyprophet.science.fit import fit_model
from skyprophet.science.recipe import Recipe
from tests.factory import make_flights
from tests.monitoring.test_realized import labelled


@pytest.mark.parametrize("rate", [0.35, 0.1])
def test_the_correction_moves_the_mean_to_the_realized_rate(rate):
    p = np.random.default_rng(0).beta(2, 8, 5000)  # mean 0.2
    shift = recalibration.solve_shift(p, rate)
    assert (shift > 0) == (rate > p.mean()), f"rate {rate} vs mean {p.mean():.3f}: shift {shift}"
    assert recalibration.shifted(p, shift).mean() == pytest.approx(rate, abs=1e-3)
    assert np.array_equal(np.argsort(recalibration.shifted(p, shift)), np.argsort(p)), "ranking unchanged"
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        recalibration.solve_shift(p, 0.0)


def test_the_correction_on_generated_flights_follows_a_higher_delay_rate():
    """Trained on April-June, the flights of July (0.6 more log-odds of delay) are later than it predicts."""
    flights = labelled(make_flights(days=122, flights_per_day=40, seed=3, start="2017-04-01"))
    month = pd.to_datetime(flights["Fecha-I"]).dt.month
    fitted, _ = fit_model(flights[month < 7].reset_index(drop=True), Recipe.of(n_estimators=20, cv_folds=2))
    july = flights[month == 7].reset_index(drop=True)
    outcomes = realized.flown_outcomes(july)
    p = fitted.scores(july)
    known = ~np.isnan(p)
    y, p = outcomes["y"].to_numpy()[known], p[known]
    assert y.mean() > p.mean() + 0.05, f"July is later than the model thinks: {y.mean():.3f} vs {p.mean():.3f}"
    shift = recalibration.solve_shift(p, y.mean())
    assert shift > 0
    corrected = dataclasses.replace(fitted.spec, intercept_shift=shift)
    after = dataclasses.replace(fitted, spec=corrected).scores(july)[known]
    assert after.mean() == pytest.approx(y.mean(), abs=1e-3)
    before, fixed = realized.figures(y, p), realized.figures(y, after)
    assert fixed["ece"] < before["ece"], (before["ece"], fixed["ece"])
    assert fixed["roc_auc"] == pytest.approx(before["roc_auc"], abs=1e-9), "the ranking is the booster's"


def test_window_keeps_the_last_days_after_the_boosters_flights():
    times = pd.Series(pd.date_range("2017-07-01", "2017-07-20", freq="6h"))
    outcomes = pd.DataFrame({"time": times})
    kept = times[recalibration.window_of(outcomes, 7, pd.Timestamp("2017-07-15 12:00"))]
    assert kept.min() == pd.Timestamp("2017-07-15 18:00") and kept.max() == times.max()
    kept = times[recalibration.window_of(outcomes, 7, None)]
    assert kept.min() == pd.Timestamp("2017-07-14") and len(kept) == 7 * 4 - 3


def test_recency_weights_halve_every_half_life_before_the_end_of_the_last_flown_day():
    times = pd.Series(pd.to_datetime(["2017-07-10 23:00", "2017-07-08 11:00", "2017-07-05 23:00", "2017-07-06 00:00"]))
    w = recalibration.recency_weights(times, 2.5)
    end = pd.Timestamp("2017-07-11")
    expected = 0.5 ** ((end - times).dt.total_seconds().to_numpy() / 86400 / 2.5)
    assert np.allclose(w, expected)
    assert w[1] / w[0] == pytest.approx(0.5, rel=1e-9), "2.5 days older: half the weight"
    assert w[0] == pytest.approx(0.5 ** (1 / 24 / 2.5)), "the last flight, an hour before the day's end"
    assert np.array_equal(recalibration.recency_weights(times, 0.0), np.ones(4)), "0: all weigh the same"


def test_the_weighted_correction_follows_the_recent_days():
    """A rate rising from 0.2 to 0.4 within the window: the weighted shift goes further, to the recent rate."""
    rng = np.random.default_rng(1)
    days = np.repeat(pd.date_range("2017-07-01", periods=10, freq="D"), 400) + pd.Timedelta(hours=12)
    times = pd.Series(days)
    rate_of_day = np.repeat(np.linspace(0.2, 0.4, 10), 400)
    y = (rng.random(len(times)) < rate_of_day).astype(float)
    p = rng.beta(2, 8, len(times))  # mean 0.2: the model has not seen the rise
    w = recalibration.recency_weights(times, 2.5)
    w = w / w.sum()
    weighted_rate, flat_rate = float(w @ y), float(y.mean())
    assert weighted_rate > flat_rate + 0.03, (weighted_rate, flat_rate)
    weighted, flat = recalibration.solve_shift(p, weighted_rate, w), recalibration.solve_shift(p, flat_rate)
    assert weighted > flat > 0, (weighted, flat)
    assert w @ recalibration.shifted(p, weighted) == pytest.approx(weighted_rate, abs=1e-6)
    last_two = (times >= "2017-07-09").to_numpy()
    late = recalibration.shifted(p[last_two], weighted).mean()
    assert abs(late - y[last_two].mean()) < abs(recalibration.shifted(p[last_two], flat).mean() - y[last_two].mean())
