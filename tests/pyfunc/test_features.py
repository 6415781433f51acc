"""Feature engineering: the numpy calendar arithmetic agrees with pandas' own calendar."""

import pandas as pd

from pyfunc.features import calendar_fields


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
