"""Reading scheduled times: the one rule, and the fast ways validation applies it to a whole batch.

A scheduled time is text ``YYYY-MM-DD HH:MM:SS`` under the flight-number folding (digits of any
script read as ASCII; second 00-59: no leap second) or a datetime read as that text (whole
seconds, no time zone). ``parse_scheduled_time`` is the rule, in pandas; ``parse_times`` gives
its answers for a list of values in numpy (or plain Python for a few), and ``time_characters``
with ``parse_time_characters`` for a whole column of text at once (the distinct-value path).
"""

from __future__ import annotations

import re
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from pyfunc.normalise import fold

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# The strict time form after folding and stripping (second 00-59); anything else is not a time.
PLAIN_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-5][0-9]")
# The dtype of parsed times, probed once so every path returns the same.
TIME_DTYPE = pd.to_datetime(pd.Series(["2000-01-01 00:00:00"]), format=TIME_FORMAT).dtype


def _time_text(value: object) -> str | None:
    """The text a scheduled time is read from: folded and stripped text, or a datetime's own text."""
    if isinstance(value, str):
        return fold(value).strip()
    if isinstance(value, np.datetime64) and np.datetime_data(value.dtype)[0] in DATE_UNITS:
        return None  # a day (or a week, month, year): no time of day to read, not midnight
    if isinstance(value, datetime | np.datetime64):  # pd.Timestamp is a datetime
        return str(pd.Timestamp(value))  # "2017-03-03 10:00:00"; with a fraction or zone it is no plain time
    return None


# numpy's units of a date without a time of day.
DATE_UNITS = ("Y", "M", "W", "D")


def naive_datetimes(dtype: object) -> bool:
    """Whether a column's dtype holds datetimes without a zone (numpy's datetime64, Arrow's timestamp with no tz).

    Arrow's zoned timestamps and its dates are of numpy kind "M" too, but no plain time: the
    value-by-value path reads (and refuses) them.
    """
    if isinstance(dtype, np.dtype):
        return dtype.kind == "M"
    if isinstance(dtype, pd.ArrowDtype):
        return pa.types.is_timestamp(dtype.pyarrow_dtype) and dtype.pyarrow_dtype.tz is None
    return False


def parse_scheduled_time(values: pd.Series) -> pd.Series:
    """Parse ``Fecha-I`` strictly as ``YYYY-MM-DD HH:MM:SS`` (see module docstring); anything else becomes NaT."""
    text = [_time_text(v) for v in values]
    plain = [t if t is not None and PLAIN_TIME.fullmatch(t) else None for t in text]
    parsed = pd.to_datetime(pd.Series(plain, index=values.index, dtype=object), format=TIME_FORMAT, errors="coerce")
    return parsed.astype(TIME_DTYPE)


# Character positions of the plain form: digits everywhere but the separators.
_SEPARATORS = {4: "-", 7: "-", 10: " ", 13: ":", 16: ":"}
_DIGITS = [i for i in range(19) if i not in _SEPARATORS]


def _plain_times(values: list) -> np.ndarray | None:
    """``values`` as datetime64 when every one is text in the plain form exactly (no spaces around), else None.

    Checked on the characters' code points in one numpy pass, then parsed by numpy in one call,
    which refuses impossible dates and times (Feb 30, 24:00) as strictly as pandas.
    """
    if not all(type(v) is str for v in values):
        return None
    codes = np.array(values, dtype="U20").view(np.uint32).reshape(len(values), 20)
    if (codes[:, 19] != 0).any() or (codes[:, 18] == 0).any():
        return None  # not 19 characters
    digits = codes[:, _DIGITS]
    if ((digits < 48) | (digits > 57)).any():
        return None
    if any((codes[:, i] != ord(c)).any() for i, c in _SEPARATORS.items()):
        return None
    try:
        return np.array(values, dtype="datetime64[s]").astype(TIME_DTYPE)
    except ValueError:
        return None


# Up to this many times are parsed one by one in Python (a one-flight request: ~3 us against ~25 us
# for numpy's fixed cost per array operation).
FEW_TIMES = 16


def _few_plain_times(values: list) -> np.ndarray | None:
    """A few times, each text in the plain form and a real time, as ``TIME_DTYPE``; else None (numpy's path decides)."""
    times = []
    for value in values:
        if type(value) is not str or PLAIN_TIME.fullmatch(value) is None:
            return None
        try:
            times.append(
                datetime(
                    int(value[:4]), int(value[5:7]), int(value[8:10]), int(value[11:13]), int(value[14:16]),
                    int(value[17:19]),
                )
            )  # fmt: skip
        except ValueError:  # Feb 30, hour 24, year 0: numpy's path gives the answer
            return None
    return np.array(times, dtype=TIME_DTYPE)


def parse_times(values: list) -> np.ndarray:
    """Scheduled times as ``TIME_DTYPE`` (NaT where unparsable); the rule is ``parse_scheduled_time``'s.

    Text in the plain form takes numpy's path (10,000 flights: about 2 ms against 19 ms for pandas);
    a batch with any other value (spaces around, another form, not text) is left to pandas' parser
    for the values that are not plain.
    """
    plain = _few_plain_times(values) if len(values) <= FEW_TIMES else _plain_times(values)
    if plain is not None:
        return plain
    stripped = [v.strip() if type(v) is str else None for v in values]
    match = PLAIN_TIME.fullmatch
    rows = [i for i, v in enumerate(stripped) if v is not None and match(v) is not None]
    times = np.full(len(values), np.datetime64("NaT"), dtype=TIME_DTYPE)
    if rows:
        parsed = _plain_times([stripped[i] for i in rows])
        if parsed is None:
            rows = []
        else:
            times[rows] = parsed
    rest = sorted(set(range(len(values))) - set(rows))
    if rest:
        times[rest] = parse_scheduled_time(pd.Series([values[i] for i in rest], dtype=object)).to_numpy(TIME_DTYPE)
    return times


def datetime_times(column: pd.Series) -> np.ndarray:
    """A tz-naive datetime64 column as ``TIME_DTYPE``; NaT where a value has a fraction of a second.

    The rule of ``parse_scheduled_time`` (a datetime is read as its text), without the text.
    """
    values = column.to_numpy()
    fraction = values.astype("datetime64[s]") != values
    times = values.astype(TIME_DTYPE)
    times[fraction] = np.datetime64("NaT")
    return times


def time_characters(column: pd.Series) -> np.ndarray | None:
    """Text times as an (n, 19) array of ASCII codes; None unless every value is 19 ASCII characters.

    Arrow-backed text (pandas' ``str``) is read from its buffers without making a Python string
    per value; an object column of ``str`` is converted once to fixed-width numpy text.
    """
    dtype = column.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        array = pa.chunked_array(column.array.__arrow_array__()).combine_chunks()
        if array.null_count or not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
            return None
        offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
        _, offsets_buffer, data_buffer = array.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype=offset_type, count=array.offset + len(array) + 1)
        offsets = offsets[array.offset :]
        start = int(offsets[0])
        if (np.diff(offsets) != 19).any():
            return None
        data = np.frombuffer(data_buffer, dtype=np.uint8, count=start + 19 * len(array))
        return data[start:].reshape(len(array), 19)
    values = column.to_numpy()
    if values.dtype != object or pd.api.types.infer_dtype(values, skipna=False) != "string":
        return None
    codes = np.array(values, dtype="U20").view(np.uint32).reshape(len(values), 20)
    if (codes[:, 19] != 0).any() or (codes[:, :19] - 1 >= 127).any():  # 20 characters, or NUL / non-ASCII
        return None
    if sum(map(len, values)) != 19 * len(values):  # a NUL after the 19th: numpy's text drops trailing NULs
        return None
    return codes[:, :19].astype(np.uint8)


_SEPARATOR_CODES = np.frombuffer("".join(_SEPARATORS.values()).encode(), dtype=np.uint8)
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def parse_time_characters(chars: np.ndarray) -> np.ndarray | None:
    """(n, 19) ASCII codes of the plain form as ``TIME_DTYPE``; None if any is not the form or not a real time.

    The checks of numpy's own parser (month 1-12, the month's days with leap years, hour 0-23,
    minute and second 0-59: no leap second), on whole columns rather than value by value; the day
    number is the proleptic Gregorian calendar's (H. Hinnant's ``days_from_civil``).
    """
    columns = np.ascontiguousarray(chars.T)  # one row per character position: each read in one pass
    if (columns[list(_SEPARATORS)] != _SEPARATOR_CODES[:, None]).any():
        return None
    if (columns[_DIGITS] - np.uint8(48) > 9).any():  # below "0" wraps round to a large number
        return None

    def number(first: int, count: int) -> np.ndarray:
        value = columns[first].astype(np.int32) - 48
        for k in range(first + 1, first + count):
            value = value * 10 + columns[k] - 48
        return value

    year, month, day = number(0, 4), number(5, 2), number(8, 2)
    hour, minute, second = number(11, 2), number(14, 2), number(17, 2)
    if ((month < 1) | (month > 12) | (hour > 23) | (minute > 59) | (second > 59) | (day < 1)).any():
        return None
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    if (day > _DAYS_IN_MONTH[month - 1] + ((month == 2) & leap)).any():
        return None
    march_year = year - (month <= 2)  # years counted from March: the leap day comes last
    era = march_year // 400
    year_of_era = march_year - era * 400
    day_of_year = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146_097 + day_of_era - 719_468  # 1970-01-01 is day 0
    seconds = days.astype(np.int64) * 86_400 + (hour * 3_600 + minute * 60 + second)
    per_second = np.timedelta64(1, "s") // np.timedelta64(1, np.datetime_data(TIME_DTYPE)[0])
    return (seconds * per_second).view(TIME_DTYPE)
