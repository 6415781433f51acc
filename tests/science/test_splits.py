"""splits: etl's day and latest-period splits, evaluate's forward split."""

import pandas as pd
import pytest

from skyprophet.science import splits
from skyprophet.science.splits import RawDataError
from tests.factory import make_flights


def test_day_split_keeps_days_whole_and_is_seeded():
    flights = make_flights(days=60, flights_per_day=20)
    holdout = splits.split_by_day(flights, 0.33, seed=42)
    days = flights["Fecha-I"].str[:10]
    assert not set(days[holdout]) & set(days[~holdout]), "no day is on both sides"
    assert days[holdout].nunique() == 20, "33 % of 60 days"
    assert holdout.equals(splits.split_by_day(flights, 0.33, seed=42)), "same seed, same split"
    assert not holdout.equals(splits.split_by_day(flights, 0.33, seed=7)), "another seed, another split"


def test_latest_split_holds_out_the_last_months_and_trains_on_what_came_before():
    flights = make_flights(days=90, flights_per_day=10)  # 2017-01-01 .. 2017-03-31
    holdout = splits.split_latest(flights, holdout_months=1)
    assert set(flights.loc[holdout, "Fecha-I"].str[:7]) == {"2017-03"}
    assert flights.loc[~holdout, "Fecha-I"].max() < flights.loc[holdout, "Fecha-I"].min(), "time-forward"
    two = splits.split_latest(flights, holdout_months=2)
    assert set(flights.loc[two, "Fecha-I"].str[:7]) == {"2017-02", "2017-03"}
    with pytest.raises(RawDataError, match="no month before the last 3 to train on"):
        splits.split_latest(flights, holdout_months=3)


def test_forward_split_is_nov_dec_on_a_calendar_year():
    flights = make_flights(days=365, flights_per_day=2)
    test = splits.forward_split(flights)
    months = pd.to_datetime(flights["Fecha-I"])[test].dt.month
    assert set(months) == {11, 12}, f"forward test months {sorted(set(months))}"
    assert not pd.to_datetime(flights["Fecha-I"])[~test].dt.month.isin([11, 12]).any()


def test_forward_split_falls_back_to_the_last_days_of_a_shorter_file():
    flights = make_flights(days=60, flights_per_day=3)
    test = splits.forward_split(flights)
    times = pd.to_datetime(flights["Fecha-I"])
    assert 0.1 < test.mean() < 0.25, f"last sixth of the days expected, got {test.mean():.2f} of flights"
    assert times[test].min() > times[~test].max(), "every test flight is after every training flight"
