"""A flight's feature values in plain words, for explanations (``describe`` of ``features.FEATURES``).

Each function gives, for the flights ``rows``, one text per flight a planner reads ("departure
07:40", "2 days before a public holiday"); a feature without one is explained as ``<name> <value>``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pyfunc.calendar_days import HOLIDAY_HORIZON
from pyfunc.feature_values import (
    Inputs,
    density,
    end_of_long_weekend,
    eve_of_long_weekend,
    flight_key,
    high_season,
    holiday_distance,
    off_run,
)

# describe(inputs, rows): the flights ``rows``' values of a feature in words (one text per row).
Describe = Callable[["Inputs", np.ndarray], list[str]]


WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
FLIGHT_TYPES = {"I": "international flight", "N": "domestic flight"}


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def describe_departure(inputs: Inputs, rows: np.ndarray) -> list[str]:
    """The departure time of day, ``HH:MM``."""
    return [f"departure {m // 60:02d}:{m % 60:02d}" for m in inputs.calendar["minute_of_day"][rows].tolist()]


def describe_weekday(inputs: Inputs, rows: np.ndarray) -> list[str]:
    """The day of the week."""
    return [f"on a {WEEKDAY_NAMES[d]}" for d in inputs.calendar["weekday"][rows].tolist()]


def describe_season(inputs: Inputs, rows: np.ndarray) -> list[str]:
    """In high season or outside it."""
    return ["in high season" if high else "outside high season" for high in high_season(inputs)[rows].tolist()]


def describe_holiday(inputs: Inputs, rows: np.ndarray) -> list[str]:
    """How near the nearest public holidays are, before and after."""
    words = []
    for before, since in zip(
        holiday_distance(inputs, 1)[rows].tolist(), holiday_distance(inputs, -1)[rows].tolist(), strict=True
    ):
        if before == 0:
            words.append("on a public holiday")
        elif before < HOLIDAY_HORIZON and since < HOLIDAY_HORIZON:
            words.append(f"{_days(since)} after a public holiday, {_days(before)} before the next")
        elif before < HOLIDAY_HORIZON:
            words.append(f"{_days(before)} before a public holiday")
        elif since < HOLIDAY_HORIZON:
            words.append(f"{_days(since)} after a public holiday")
        else:
            words.append(f"no public holiday within {_days(HOLIDAY_HORIZON - 1)}")
    return words


def describe_long_weekend(inputs: Inputs, rows: np.ndarray) -> list[str]:
    """The eve or last day of a long weekend, or the run of days off the day is in."""
    words = []
    for run, eve, end in zip(
        off_run(inputs)[rows].tolist(),
        eve_of_long_weekend(inputs)[rows].tolist(),
        end_of_long_weekend(inputs)[rows].tolist(),
        strict=True,
    ):
        if eve:
            words.append("the eve of a long weekend")
        elif end:
            words.append("the last day of a long weekend")
        elif run:
            words.append(f"in {_days(run)} off in a row")
        else:
            words.append("a working day, no long weekend next")
    return words


def describe_hour_density(inputs: Inputs, rows: np.ndarray) -> list[str]:
    """The typical number of departures in the flight's weekday and hour."""
    hours, weekdays = inputs.calendar["hour"][rows].tolist(), inputs.calendar["weekday"][rows].tolist()
    return [
        f"typically {n:.0f} departures on {WEEKDAY_NAMES[d]}s {h:02d}:00-{h + 1:02d}:00"
        for n, h, d in zip(density(inputs)[rows].tolist(), hours, weekdays, strict=True)
    ]


def describe_day_density(inputs: Inputs, rows: np.ndarray) -> list[str]:
    """The typical number of departures on the flight's weekday."""
    weekdays = inputs.calendar["weekday"][rows]
    return [
        f"typically {n:.0f} departures on {WEEKDAY_NAMES[d]}s"
        for n, d in zip(inputs.tables.per_weekday[weekdays].tolist(), weekdays.tolist(), strict=True)
    ]


def _value(inputs: Inputs, column: str, rows: np.ndarray) -> list[str]:
    """The flights' (normalised) values of ``column``, marked when the model never saw them."""
    known = inputs.tables.codes[column].codes
    return [v if v in known else f"{v}, never seen" for v in np.asarray(inputs.flights[column])[rows].tolist()]


def describe_airline(inputs: Inputs, rows: np.ndarray) -> list[str]:
    """The airline by name and code (marked when the model never saw it)."""
    return [
        f"airline {name} ({code})"
        for name, code in zip(_value(inputs, "OPERA", rows), _value(inputs, "Emp-I", rows), strict=True)
    ]


def describe_destination(inputs: Inputs, rows: np.ndarray) -> list[str]:
    """The destination by city and code (marked when the model never saw it)."""
    return [
        f"destination {city} ({code})"
        for city, code in zip(_value(inputs, "SIGLADES", rows), _value(inputs, "Des-I", rows), strict=True)
    ]


def describe_flight_type(inputs: Inputs, rows: np.ndarray) -> list[str]:
    """International or domestic."""
    return [FLIGHT_TYPES.get(v, f"flight type {v}") for v in _value(inputs, "TIPOVUELO", rows)]


def describe_flight(inputs: Inputs, rows: np.ndarray) -> list[str]:
    """Airline and flight number (marked when rare in training)."""
    keys = np.asarray(flight_key(inputs.flights))[rows].tolist()
    known = inputs.tables.flight_keys.codes
    return [f"flight {key.replace('|', ' ')}" + ("" if key in known else " (rare in training)") for key in keys]
