"""The calendar a flight's scheduled time is read against: its fields, high season, holidays, days off.

``calendar_fields`` turns times into day number, hour, weekday, month and month-day with integer
arithmetic; the public holidays (PyPI ``holidays``) of the spec's country and the runs of days off
they make with weekends are tables per day number, built once per country, so a batch reads each
calendar feature in one array operation.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from pyfunc.fields import MAX_YEAR, MIN_YEAR

# High season as the airline defines it: Dec 15 - Mar 3, Jul 15 - 31, Sep 11 - 30.
HIGH_SEASON = ((1215, 1231), (101, 303), (715, 731), (911, 930))
# Days to the next / since the last public holiday are capped here (a week away is "not near").
HOLIDAY_HORIZON = 7
# Three or more days off in a row (holidays and weekends) make a long weekend.
LONG_WEEKEND_DAYS = 3
# From this many flights on, the calendar is computed with integer arithmetic rather than numpy's
# datetime64 conversions (same numbers; fewer calls below, faster month conversion above).
CALENDAR_ARITHMETIC_ROWS = 64


@functools.lru_cache(maxsize=8)
def holiday_days(country: str | None) -> np.ndarray:
    """Sorted day numbers (days since 1970-01-01) of the country's public holidays, MIN_YEAR to MAX_YEAR.

    Bounded by one holiday a side, so the distance to the next or last one is always defined.
    """
    if country is None:
        return np.array([], dtype=np.int64)
    import holidays

    dates = holidays.country_holidays(country, years=range(MIN_YEAR - 1, MAX_YEAR + 2))
    return np.array(sorted(dates), dtype="datetime64[D]").astype(np.int64)


@functools.lru_cache(maxsize=8)
def days_off(country: str | None) -> tuple[int, np.ndarray]:
    """First day number and, per day from MIN_YEAR - 1 to MAX_YEAR + 1, the length of its run of days off.

    A day off is a public holiday or a Saturday or Sunday; a working day has 0. Without a country
    every day is 0 (weekends alone are what ``weekday`` already says).
    """
    first = int(np.datetime64(f"{MIN_YEAR - 1}-01-01", "D").astype(np.int64))
    last = int(np.datetime64(f"{MAX_YEAR + 1}-12-31", "D").astype(np.int64))
    days = np.arange(first, last + 1)
    if country is None:
        return first, np.zeros(len(days), dtype=np.int64)
    off = np.isin(days, holiday_days(country)) | ((days + 3) % 7 >= 5)
    # Run lengths: label each run of equal flags, count its days, give every day its run's count.
    starts = np.r_[True, off[1:] != off[:-1]]
    run = np.cumsum(starts) - 1
    return first, np.where(off, np.bincount(run)[run], 0)


def calendar_fields(times: pd.Series | np.ndarray) -> dict[str, np.ndarray]:
    """Day number, hour, minute of day, weekday (Monday 0), month and month-day (MMDD), with numpy.

    One conversion to minutes and integer arithmetic: pandas' ``.dt`` accessors cost about as
    much each on a one-flight request as the whole XGBoost prediction, and numpy's own month
    conversion (``datetime64[M]``) about 40 ms per 1,000,000 flights; the month and day come from
    the day number by the proleptic Gregorian calendar (H. Hinnant's ``civil_from_days``).
    """
    minutes = np.asarray(times, dtype="datetime64[m]")
    if len(minutes) < CALENDAR_ARITHMETIC_ROWS:  # few flights: fewer numpy calls, each with its fixed cost
        days = minutes.astype("datetime64[D]")
        months = days.astype("datetime64[M]")
        minute_of_day = (minutes - days).astype(np.int64)
        month = months.astype(np.int64) % 12 + 1
        day_number = days.astype(np.int64)
        month_day = month * 100 + (days - months).astype(np.int64) + 1
    else:
        minutes = minutes.astype(np.int64)
        day_number = minutes // 1440
        minute_of_day = minutes - day_number * 1440
        shifted = day_number + 719_468  # days since 0000-03-01: years counted from March
        era = shifted // 146_097
        day_of_era = shifted - era * 146_097
        year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096) // 365
        day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
        month_from_march = (5 * day_of_year + 2) // 153
        month = np.where(month_from_march < 10, month_from_march + 3, month_from_march - 9)
        month_day = month * 100 + day_of_year - (153 * month_from_march + 2) // 5 + 1
    return {
        "day": day_number,
        "hour": minute_of_day // 60,
        "minute_of_day": minute_of_day,
        "weekday": (day_number + 3) % 7,  # 1970-01-01 was a Thursday
        "month": month,
        "month_day": month_day,
    }


def _high_season_of(month_day: np.ndarray) -> np.ndarray:
    high = np.zeros(len(month_day), dtype=bool)
    for start, end in HIGH_SEASON:
        high |= (month_day >= start) & (month_day <= end)
    return high


# Whether a month-day (MMDD) is in high season, looked up (one array operation per batch, not eight).
HIGH_SEASON_BY_MONTH_DAY = _high_season_of(np.arange(1232))


def _holiday_distance_of(holidays: np.ndarray, day: np.ndarray, direction: int) -> np.ndarray:
    """Days to the next (``direction`` 1) or since the last (-1) public holiday, capped; 0 on one."""
    if len(holidays) == 0:
        return np.full(len(day), HOLIDAY_HORIZON)
    if direction > 0:
        nearest = holidays[np.minimum(np.searchsorted(holidays, day, side="left"), len(holidays) - 1)]
        return np.clip(nearest - day, 0, HOLIDAY_HORIZON)
    nearest = holidays[np.maximum(np.searchsorted(holidays, day, side="right") - 1, 0)]
    return np.clip(day - nearest, 0, HOLIDAY_HORIZON)


@functools.lru_cache(maxsize=8)
def calendar_tables(country: str | None) -> dict[str, np.ndarray]:
    """Per day of ``days_off``'s range (from its first day): days to and since a holiday, eve and end of a long weekend.

    Built once per country, so a batch looks each up in one array operation (a one-flight
    request: ~2 us a feature against ~8 for the arithmetic).
    """
    first, runs = days_off(country)
    day = np.arange(first, first + len(runs))
    holidays = holiday_days(country)
    next_runs = np.r_[runs[1:], 0]  # the range's last day is never a flight's (MAX_YEAR + 1)
    tables = {
        "to_holiday": _holiday_distance_of(holidays, day, 1),
        "since_holiday": _holiday_distance_of(holidays, day, -1),
        "eve": (runs == 0) & (next_runs >= LONG_WEEKEND_DAYS),
        "end": (runs >= LONG_WEEKEND_DAYS) & (next_runs == 0),
    }
    for table in tables.values():
        table.setflags(write=False)
    return tables
