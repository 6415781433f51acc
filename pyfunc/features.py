"""Feature engineering from what is known when a flight is scheduled, shared by training and serving.

``fit_feature_spec`` learns everything data-dependent (category vocabularies, flight keys, how
busy the schedule typically is) from the training flights only; ``build_features`` turns
validated flights into the numeric matrix the booster reads. Both run unchanged on any
airport's file of this schema.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from pyfunc.schema import CATEGORY_COLUMNS, FLIGHT_NUMBER, SCHEDULED_TIME

# Flight keys (airline + flight number) seen fewer times than this share one "rare" code.
MIN_FLIGHT_KEY_COUNT = 5
# High season as the airline defines it: Dec 15 - Mar 3, Jul 15 - 31, Sep 11 - 30.
HIGH_SEASON = ((1215, 1231), (101, 303), (715, 731), (911, 930))

FEATURE_NAMES = (
    "hour",
    "minute_of_day",
    "weekday",
    "month",
    "day_of_month",
    "day_of_year",
    "high_season",
    "typical_flights_in_hour",
    "typical_flights_in_day",
    *(f"{column}_code" for column in CATEGORY_COLUMNS),
    "flight_key_code",
)
# What the calendar may tell the model (train's ``calendar`` parameter):
#   date: also the day of month and day of year. Best between days the training file covers (SCL's
#     day-grouped holdout: ROC AUC 0.721 -> 0.738), but it learns the training year's particular
#     dates: on days past the file's end it does worse (forward split 0.672 -> 0.639).
#   season: month, weekday and high season only; for scoring dates beyond the training file.
CALENDARS = ("date", "season")
DATE_FEATURES = ("day_of_month", "day_of_year")
# Codes of high-cardinality columns (destinations, flight keys: hundreds at a busy airport) are
# split on as ordered numbers: XGBoost's partition search over their categories costs about 7x the
# training time for the same holdout AUC (measured on SCL 2017, see README "Model quality").
ORDERED_CODES = ("Des-I_code", "SIGLADES_code", "flight_key_code")
# XGBoost feature types: "c" = categorical code, "q" = quantitative.
FEATURE_TYPES = tuple("c" if name.endswith("_code") and name not in ORDERED_CODES else "q" for name in FEATURE_NAMES)


@dataclass
class FeatureSpec:
    """What feature engineering learned from the training flights (JSON-serialisable)."""

    vocabulary: dict[str, list[str]]
    flight_keys: list[str]
    flights_per_weekday_hour: list[list[float]]
    flights_per_weekday: list[float]
    calendar: str = "date"  # one of CALENDARS; specs saved before it existed used "date"

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        """Inverse of ``to_dict``."""
        return cls(**data)


def flight_key(flights: Mapping) -> pd.Series | np.ndarray:
    """Airline code and flight number together identify a scheduled service.

    Works on a DataFrame and on the serving fast path's columns (numpy arrays of ``str``) alike.
    """
    return flights["Emp-I"] + "|" + flights[FLIGHT_NUMBER]


def check_calendar(calendar: str) -> None:
    """Refuse a ``calendar`` the features do not know, naming the ones they do."""
    if calendar not in CALENDARS:
        raise ValueError(f"calendar must be one of {', '.join(CALENDARS)}, got {calendar!r}")


def fit_feature_spec(flights: pd.DataFrame, calendar: str = "date") -> FeatureSpec:
    """Learn vocabularies and schedule density from validated training flights."""
    check_calendar(calendar)
    vocabulary = {c: sorted(flights[c].dropna().unique().tolist()) for c in CATEGORY_COLUMNS}
    key_counts = flight_key(flights).value_counts()
    flight_keys = sorted(key_counts[key_counts >= MIN_FLIGHT_KEY_COUNT].index.tolist())
    times = flights[SCHEDULED_TIME]
    per_day_hour = (
        pd.DataFrame({"date": times.dt.date, "weekday": times.dt.weekday, "hour": times.dt.hour})
        .groupby(["date", "weekday", "hour"])
        .size()
    )
    days = pd.DataFrame({"date": times.dt.date, "weekday": times.dt.weekday}).drop_duplicates()
    days_per_weekday = days.groupby("weekday").size().reindex(range(7), fill_value=0)
    # Mean departures per (weekday, hour) over the training days of that weekday.
    totals = per_day_hour.groupby(level=["weekday", "hour"]).sum()
    grid = totals.unstack("hour").reindex(index=range(7), columns=range(24)).fillna(0.0)
    per_weekday_hour = grid.div(days_per_weekday.replace(0, np.nan), axis=0).fillna(0.0)
    per_weekday = per_weekday_hour.sum(axis=1)
    return FeatureSpec(
        vocabulary=vocabulary,
        flight_keys=flight_keys,
        flights_per_weekday_hour=per_weekday_hour.round(4).values.tolist(),
        flights_per_weekday=per_weekday.round(4).tolist(),
        calendar=calendar,
    )


class CodeTable:
    """Categories and their integer codes, built once when a model is loaded for serving.

    A dict answers a handful of values (a one-flight request) in microseconds where a pandas
    lookup costs tens; a pandas Index answers thousands of values faster than a Python loop.
    """

    DICT_MAX_VALUES = 64

    def __init__(self, categories: Sequence[str], index: pd.Index) -> None:
        self.index = index
        self.codes = {value: float(code) for code, value in enumerate(categories)}

    def __len__(self) -> int:
        return len(self.codes)

    def lookup(self, values: Sequence[str]) -> np.ndarray:
        """Code of each value; values outside get ``len(self)``."""
        if len(values) > self.DICT_MAX_VALUES:
            return _codes(values, self.index)
        outside = float(len(self.codes))
        return np.array([self.codes.get(value, outside) for value in values], dtype=np.float32)


def _codes(values: Sequence[str], categories: list[str] | pd.Index | CodeTable) -> np.ndarray:
    """Integer code of each value in ``categories``; values outside get ``len(categories)``."""
    if isinstance(categories, CodeTable):
        return categories.lookup(values)
    index = categories if isinstance(categories, pd.Index) else pd.Index(categories)
    codes = index.get_indexer(values).astype(np.float32)  # about twice as fast as pd.Categorical
    codes[codes < 0] = len(index)
    return codes


def calendar_fields(times: pd.Series | np.ndarray) -> dict[str, np.ndarray]:
    """Hour, minute of day, weekday (Monday 0), month, day of month and day of year, with numpy.

    One conversion to minutes and integer arithmetic: pandas' ``.dt`` accessors cost about as
    much each on a one-flight request as the whole XGBoost prediction.
    """
    minutes = np.asarray(times, dtype="datetime64[m]")
    days = minutes.astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    minute_of_day = (minutes - days).astype(np.int64)
    return {
        "hour": minute_of_day // 60,
        "minute_of_day": minute_of_day,
        "weekday": (days.astype(np.int64) + 3) % 7,  # 1970-01-01 was a Thursday
        "month": months.astype(np.int64) % 12 + 1,
        "day_of_month": (days - months).astype(np.int64) + 1,
        "day_of_year": (days - days.astype("datetime64[Y]")).astype(np.int64) + 1,
    }


def build_features(flights: Mapping, spec: FeatureSpec) -> np.ndarray:
    """Feature matrix (rows = flights, columns = FEATURE_NAMES) from validated flights.

    ``flights`` is a DataFrame, or the serving fast path's dict of numpy columns (same values).
    With ``spec.calendar == "season"`` the DATE_FEATURES columns are 0 for every flight: the
    booster cannot split on them, and serving and monitoring keep one column layout.
    """
    calendar = calendar_fields(flights[SCHEDULED_TIME])
    hour, weekday = calendar["hour"], calendar["weekday"]
    month_day = calendar["month"] * 100 + calendar["day_of_month"]
    high_season = np.zeros(len(hour), dtype=bool)
    for start, end in HIGH_SEASON:
        high_season |= (month_day >= start) & (month_day <= end)
    density = np.asarray(spec.flights_per_weekday_hour, dtype=np.float32)
    if spec.calendar == "season":
        calendar.update({name: np.zeros_like(hour) for name in DATE_FEATURES})
    columns = [
        hour,
        calendar["minute_of_day"],
        weekday,
        calendar["month"],
        calendar["day_of_month"],
        calendar["day_of_year"],
        high_season,
        density[weekday, hour],
        np.asarray(spec.flights_per_weekday, dtype=np.float32)[weekday],
        *(_codes(flights[c], spec.vocabulary[c]) for c in CATEGORY_COLUMNS),
        _codes(flight_key(flights), spec.flight_keys),
    ]
    return np.column_stack(columns).astype(np.float32)
