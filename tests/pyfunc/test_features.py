"""Feature engineering: the numpy calendar agrees with pandas'; holidays and their country; no date memory."""

import numpy as np
import pandas as pd
import pytest

from pyfunc import calendar_days
from pyfunc.calendar_days import HOLIDAY_HORIZON, calendar_fields
from pyfunc.features import FEATURE_NAMES, FeatureSpec, build_features, fit_feature_spec, infer_country, resolve_country
from pyfunc.schema import clean_flights
from tests.factory import make_flights


def test_calendar_fields_match_pandas_over_a_century():
    times = pd.Series(pd.date_range("1999-12-25", "2101-01-05", freq="97min"))  # every leap-year rule
    fields = calendar_fields(times)
    expected = {
        "day": (times.dt.normalize() - pd.Timestamp("1970-01-01")).dt.days,
        "hour": times.dt.hour,
        "minute_of_day": times.dt.hour * 60 + times.dt.minute,
        "weekday": times.dt.day_of_week,
        "month": times.dt.month,
        "month_day": times.dt.month * 100 + times.dt.day,
    }
    for name, values in expected.items():
        assert (fields[name] == values.to_numpy()).all(), f"{name} differs from pandas"


@pytest.mark.parametrize(
    "origins, country",
    [
        (["SCEL"], "CL"),
        (["SCEL", "SCIE"], "CL"),
        (["KMIA"], "US"),
        (["SCEL", "KMIA"], None),
        (["ZZOO"], None),
        ([], None),
    ],
)
def test_the_country_is_inferred_from_the_origin_only_when_unambiguous(origins, country):
    assert infer_country(origins) == country


def test_the_country_setting_overrides_or_switches_holidays_off():
    assert resolve_country("auto", ["SCEL"]) == "CL"
    assert resolve_country("ar", ["SCEL"]) == "AR", "a named country wins over the origin"
    assert resolve_country("none", ["SCEL"]) is None
    with pytest.raises(ValueError, match="not an ISO code"):
        resolve_country("Chile", ["SCEL"])


def features_of(times: list[str], country: str | None) -> pd.DataFrame:
    flights = make_flights(days=len(times), flights_per_day=1)
    flights["Fecha-I"] = times
    clean = clean_flights(flights)
    spec = fit_feature_spec(clean_flights(make_flights(days=30)))
    spec.country = country
    return pd.DataFrame(build_features(clean, spec), columns=FEATURE_NAMES)


def test_days_to_and_since_chilean_holidays():
    # 2017: Sep 18 and 19 are holidays (Independence Day, Army Day); the next is Oct 9.
    times = ["2017-09-15 10:00:00", "2017-09-18 10:00:00", "2017-09-19 23:55:00", "2017-09-21 10:00:00"]
    chile = features_of(times, "CL")
    assert chile["days_to_holiday"].tolist() == [3, 0, 0, HOLIDAY_HORIZON]
    assert chile["days_since_holiday"].tolist() == [HOLIDAY_HORIZON, 0, 0, 2]
    nowhere = features_of(times, None)
    assert (nowhere[["days_to_holiday", "days_since_holiday"]] == HOLIDAY_HORIZON).all().all(), "no country: no holiday"


def test_two_ordinary_days_alike_but_for_the_date_get_the_same_features():
    """No feature memorises a date: same weekday, month, hour and holiday distance give the same row."""
    times = ["2017-03-07 19:30:00", "2017-03-14 19:30:00", "2017-03-21 19:30:00"]  # Tuesdays, far from holidays
    rows = features_of(times, "CL")
    rows = rows.drop(columns=[c for c in rows.columns if c.endswith("_code")])  # the generator varies these
    assert (rows.nunique() == 1).all(), rows.T


def test_a_spec_saved_before_holidays_existed_loads_without_them():
    saved = fit_feature_spec(clean_flights(make_flights(days=10)), ["SCEL"]).to_dict()
    assert FeatureSpec.from_dict(saved).country == "CL"
    legacy = {k: v for k, v in saved.items() if k != "country"} | {"calendar": "date"}
    assert FeatureSpec.from_dict(legacy).country is None


def test_long_weekends_from_holidays_and_weekends():
    # Chile 2017: Fri Apr 14 and Sat Apr 15 are holidays, so Apr 14-16 is a long weekend; Thu Apr 13 is its eve.
    # Mon Jun 26 is a holiday: Sat Jun 24 - Mon Jun 26; Tue Jun 27 is back to work.
    times = ["2017-04-13 18:00:00", "2017-04-14 09:00:00", "2017-04-16 20:00:00", "2017-04-18 09:00:00"]
    times += ["2017-06-23 18:00:00", "2017-06-26 21:00:00", "2017-06-27 08:00:00", "2017-06-28 08:00:00"]
    chile = features_of(times, "CL")
    assert chile["days_off_in_a_row"].tolist() == [0, 3, 3, 0, 0, 3, 0, 0]
    assert chile["eve_of_long_weekend"].tolist() == [1, 0, 0, 0, 1, 0, 0, 0]
    assert chile["end_of_long_weekend"].tolist() == [0, 0, 1, 0, 0, 1, 0, 0]
    ordinary = features_of(["2017-03-10 18:00:00", "2017-03-11 10:00:00"], "CL")  # a Friday, a Saturday
    assert ordinary["days_off_in_a_row"].tolist() == [0, 2] and ordinary["eve_of_long_weekend"].sum() == 0
    assert (features_of(times, None)[["days_off_in_a_row", "eve_of_long_weekend"]] == 0).all().all()


def test_the_calendar_is_the_same_by_datetime_conversions_and_by_integer_arithmetic(monkeypatch):
    times = np.arange(np.datetime64("1999-12-01T00:00"), np.datetime64("2101-02-01T00:00"), np.timedelta64(997, "m"))
    by_arithmetic = calendar_fields(times.astype("datetime64[us]"))
    monkeypatch.setattr(calendar_days, "CALENDAR_ARITHMETIC_ROWS", len(times) + 1)
    by_conversions = calendar_fields(times.astype("datetime64[us]"))
    for name, values in by_conversions.items():
        assert by_arithmetic[name].dtype == values.dtype, name
        np.testing.assert_array_equal(by_arithmetic[name], values, err_msg=name)
