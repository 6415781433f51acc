"""What the feature functions read (``Inputs``) and how each feature's value is computed from it.

``Inputs`` holds the cleaned flights (a DataFrame or ``schema.clean_columns``' numpy columns),
their calendar fields and the spec's lookup tables (``coded_spec``). The functions here are the
``compute`` of ``features.FEATURES``; ``feature_words`` reads some of them again to put a
flight's value in words.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pyfunc.calendar_days import HIGH_SEASON_BY_MONTH_DAY, calendar_fields
from pyfunc.coded_spec import CodedSpec
from pyfunc.fields import FLIGHT_NUMBER, SCHEDULED_TIME

if TYPE_CHECKING:
    from pyfunc.features import FeatureSpec


def flight_key(flights: Mapping) -> pd.Series | np.ndarray:
    """Airline code and flight number together identify a scheduled service.

    Works on a DataFrame and on ``schema.clean_columns``' numpy arrays of ``str`` alike.
    """
    return flights["Emp-I"] + "|" + flights[FLIGHT_NUMBER]


@dataclass
class Inputs:
    """What the feature functions read: the cleaned flights, their calendar, the spec's tables."""

    flights: Mapping
    spec: FeatureSpec
    tables: CodedSpec
    calendar: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.calendar = calendar_fields(self.flights[SCHEDULED_TIME])


def high_season(inputs: Inputs) -> np.ndarray:
    """Whether each flight's day is in high season (``calendar_days.HIGH_SEASON``)."""
    return HIGH_SEASON_BY_MONTH_DAY[inputs.calendar["month_day"]]


def _by_day(inputs: Inputs, table: str) -> np.ndarray:
    """The flights' values in one of ``calendar_days.calendar_tables``."""
    return inputs.tables.by_day[table][inputs.calendar["day"] - inputs.tables.days_off[0]]


def holiday_distance(inputs: Inputs, direction: int) -> np.ndarray:
    """Days to the next (``direction`` 1) or since the last (-1) public holiday, capped; 0 on one."""
    return _by_day(inputs, "to_holiday" if direction > 0 else "since_holiday")


def off_run(inputs: Inputs, shift: int = 0) -> np.ndarray:
    """Length of the run of days off (holidays, weekends) the day ``shift`` days after the flight's is in."""
    first, runs = inputs.tables.days_off
    return runs[inputs.calendar["day"] + shift - first]


def eve_of_long_weekend(inputs: Inputs) -> np.ndarray:
    """A working day followed by three or more days off: the getaway day (SCL 2017: 29 % late, not 18 %)."""
    return _by_day(inputs, "eve")


def end_of_long_weekend(inputs: Inputs) -> np.ndarray:
    """The last day off of three or more: the day everyone comes back."""
    return _by_day(inputs, "end")


def density(inputs: Inputs) -> np.ndarray:
    """How many departures the schedule typically has on the flight's weekday and hour."""
    return inputs.tables.per_weekday_hour[inputs.calendar["weekday"], inputs.calendar["hour"]]


def _factors(inputs: Inputs, column: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A column's codes and distinct values when validation factorized it (``clean_values.Columns.factors``)."""
    return getattr(inputs.flights, "factors", {}).get(column)


def category_code(column: str) -> Callable[[Inputs], np.ndarray]:
    """The feature of a categorical column: each flight's code in the training vocabulary."""

    def codes(inputs: Inputs) -> np.ndarray:
        table = inputs.tables.codes[column]
        factors = _factors(inputs, column)
        if factors is not None:  # looked up once per distinct value
            return table.lookup(factors[1])[factors[0]]
        return table.lookup(inputs.flights[column])

    return codes


def flight_key_code(inputs: Inputs) -> np.ndarray:
    """Each flight's code among the training flight keys (airline + flight number)."""
    table = inputs.tables.flight_keys
    airlines, numbers = _factors(inputs, "Emp-I"), _factors(inputs, FLIGHT_NUMBER)
    if airlines is None or numbers is None:
        return table.lookup(flight_key(inputs.flights))
    # The distinct (airline, number) pairs, each keyed and looked up once.
    pairs = airlines[0].astype(np.int64) * len(numbers[1]) + numbers[0]
    pair_codes, distinct = pd.factorize(pairs)
    keys = airlines[1][distinct // len(numbers[1])] + "|" + numbers[1][distinct % len(numbers[1])]
    return table.lookup(keys)[pair_codes]
