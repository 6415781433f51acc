"""Feature engineering: the numpy calendar agrees with pandas'; the ``calendar`` choice does what it says."""

import numpy as np
import pandas as pd
import pytest

from pyfunc.features import DATE_FEATURES, FEATURE_NAMES, FeatureSpec, build_features, calendar_fields, fit_feature_spec
from pyfunc.schema import clean_flights
from tests.factory import make_flights


def test_calendar_fields_match_pandas_over_a_century():
    times = pd.Series(pd.date_range("1999-12-25", "2101-01-05", freq="97min"))  # every leap-year rule
    fields = calendar_fields(times)
    expected = {
        "hour": times.dt.hour,
        "minute_of_day": times.dt.hour * 60 + times.dt.minute,
        "weekday": times.dt.day_of_week,
        "month": times.dt.month,
        "day_of_month": times.dt.day,
        "day_of_year": times.dt.day_of_year,
    }
    for name, values in expected.items():
        assert (fields[name] == values.to_numpy()).all(), f"{name} differs from pandas"


def test_season_calendar_holds_the_date_features_constant_and_keeps_the_rest():
    flights = clean_flights(make_flights(days=60, seed=1))
    by_date = fit_feature_spec(flights, "date")
    by_season = fit_feature_spec(flights, "season")
    date_features, season_features = build_features(flights, by_date), build_features(flights, by_season)
    for position, name in enumerate(FEATURE_NAMES):
        if name in DATE_FEATURES:
            assert len(np.unique(date_features[:, position])) > 1, f"{name} varies under calendar=date"
            assert (season_features[:, position] == 0).all(), f"{name} is constant under calendar=season"
        else:
            assert np.array_equal(date_features[:, position], season_features[:, position]), name


def test_a_spec_saved_before_the_calendar_existed_loads_as_date():
    saved = fit_feature_spec(clean_flights(make_flights(days=10)), "season").to_dict()
    assert FeatureSpec.from_dict(saved).calendar == "season"
    del saved["calendar"]
    assert FeatureSpec.from_dict(saved).calendar == "date"


def test_an_unknown_calendar_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="calendar must be one of date, season, got 'weekly'"):
        fit_feature_spec(clean_flights(make_flights(days=10)), "weekly")
