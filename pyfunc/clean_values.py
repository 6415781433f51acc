"""The per-value validation path: every value checked, the first bad ones named with their field and rows.

``schema.clean_columns`` takes it for small batches (a one-flight request costs microseconds
in plain Python and numpy rather than the milliseconds of pandas string operations on a one-row
frame) and for any batch the distinct-value path (``clean_distinct``) does not accept as it
stands: this path is the reference, and the one that says what is wrong. Checks run on each
column's distinct values where they are hashable; rows are looked for only once a check fails.
Nothing is normalised or cached before every value passed its type, cap and range checks.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping

import numpy as np
import pandas as pd

from pyfunc.fields import (
    CATEGORY_COLUMNS,
    FIELD_CAPS,
    FLIGHT_NUMBER,
    FLIGHT_NUMBER_FORM,
    MAX_FLIGHT_NUMBER,
    MAX_FLIGHT_NUMBER_CHARS,
    MAX_YEAR,
    MIN_YEAR,
    REQUIRED_COLUMNS,
    SCHEDULED_TIME,
    InvalidFlightsError,
    example_rows,
)
from pyfunc.normalise import CATEGORY_MEMO, FLIGHT_NUMBER_MEMO
from pyfunc.times import datetime_times, naive_datetimes, parse_times

# Python types a flight number may arrive as (a JSON number or text); booleans never.
_NUMBER_TYPES = (int, float, np.integer, np.floating)


class Columns(dict):
    """``schema.clean_columns``' result: column name -> numpy array, as a plain dict.

    ``factors`` holds, for a batch cleaned on its distinct values, each text column's codes and
    normalised distinct values (``values == distinct[codes]``) and the times' codes and distinct
    times, so the features and the vocabulary check work on a few hundred values, not a million.
    Empty when the batch was cleaned value by value.
    """

    factors: dict[str, tuple[np.ndarray, np.ndarray]]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.factors = {}


def text_array(values: list[str]) -> np.ndarray:
    """A numpy array of ``str`` objects (``+`` and lookups work on it as on a pandas string column)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _is_blank(value: object) -> bool:
    """None, NaN, NA, NaT, or text that is empty once stripped."""
    if isinstance(value, str):
        return not value.strip()
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return isinstance(value, np.datetime64) and np.isnat(value)


def column_array(frame: pd.DataFrame, column: str) -> object:
    """A column's values (what ``frame[column].array``/``.tolist()`` read) without building a Series.

    ``frame[column]`` builds a Series, about 20 us a column on pandas 3: a third of a one-flight
    request's validation over seven columns. ``DataFrame._get_column_array`` (pandas >= 1.3) hands
    over the column's own array (the Series' ``_values``, whose ``tolist`` ``Series.tolist`` is);
    without it, the Series.
    """
    getter = getattr(frame, "_get_column_array", None)
    if getter is not None and frame.columns.is_unique:
        try:
            return getter(frame.columns.get_loc(column))
        except (TypeError, KeyError, IndexError):
            pass
    return frame[column]


def _values(array: object) -> list:
    """``array.tolist()``; Arrow-backed text without nulls read by Arrow (1 us, not 6, for one value)."""
    if isinstance(array.dtype, pd.StringDtype) and array.dtype.storage == "pyarrow":
        arrow = array.__arrow_array__()
        if arrow.null_count == 0:  # with nulls, pandas' own list (its NA value, not None)
            return arrow.to_pylist()
    return array.tolist()


def _numeric(dtype: object) -> bool:
    """``pd.api.types.is_numeric_dtype``, answered at once for the text dtypes requests come in."""
    if isinstance(dtype, pd.StringDtype) or (isinstance(dtype, np.dtype) and dtype.kind in "OUS"):
        return False
    return pd.api.types.is_numeric_dtype(dtype)


def _distinct(values: list) -> set | None:
    """The set of distinct values, or None when one is unhashable (a JSON list or object)."""
    try:
        return set(values)
    except TypeError:
        return None


def _check_caps(raw: Mapping[str, list], distinct: Mapping[str, set | None]) -> None:
    """Refuse text longer than its field's cap (FIELD_CAPS), before anything is normalised or cached."""
    for column, (name, cap) in FIELD_CAPS.items():
        if column not in raw:
            continue  # times as datetimes: no text
        values = raw[column]
        unique = distinct[column] if distinct[column] is not None else values
        if any(isinstance(v, str) and len(v) > cap for v in unique):
            rows = [i for i, v in enumerate(values) if isinstance(v, str) and len(v) > cap]
            raise InvalidFlightsError(column, f"longer than {name}={cap} characters ({example_rows(rows, values)})")


def _check_text(column: str, values: list, dtype: object, distinct: set | None) -> None:
    """Categories are text: a numeric column, or any list, object, number or boolean, is refused."""
    if _numeric(dtype):
        raise InvalidFlightsError(column, f"expected text, got {dtype} values")
    if distinct is not None and all(type(v) is str for v in distinct):
        return
    wrong = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if wrong:
        found = sorted({type(values[i]).__name__ for i in wrong})
        raise InvalidFlightsError(column, f"expected text, got {', '.join(found)} ({example_rows(wrong, values)})")


def hidden_booleans(values: Iterable, distinct: Collection) -> bool:
    """Whether a ``True`` or ``False`` hides among the values (0 or 1 among the distinct ones, then a scan).

    A set, or ``pd.factorize``, keeps one of ``1`` and ``True`` (equal, one hash): the distinct values may not show it.
    """
    return (0 in distinct or 1 in distinct) and any(isinstance(v, bool | np.bool_) for v in values)


def _check_flight_numbers(values: list, distinct: set | None) -> None:
    """Text or a whole JSON number (``226``, ``226.0``); never a list, object, boolean or ``226.5``."""
    plain = distinct is not None and all(type(v) is str or type(v) is int for v in distinct)
    if plain and not hidden_booleans(values, distinct):
        return
    wrong = [
        i for i, v in enumerate(values) if not isinstance(v, (str, *_NUMBER_TYPES)) or isinstance(v, bool | np.bool_)
    ]
    if wrong:
        found = sorted({type(values[i]).__name__ for i in wrong})
        raise InvalidFlightsError(
            FLIGHT_NUMBER,
            f"expected a flight number (text or number), got {', '.join(found)} ({example_rows(wrong, values)})",
        )
    fractional = [
        i
        for i, v in enumerate(values)
        if isinstance(v, float | np.floating) and not (math.isfinite(v) and float(v).is_integer())
    ]
    if fractional:
        examples = example_rows(fractional, values)
        raise InvalidFlightsError(FLIGHT_NUMBER, f"expected a whole flight number ({examples})")


def _check_flight_number_range(values: list, distinct: set) -> None:
    """Flight numbers sent as numbers: 0 to MAX_FLIGHT_NUMBER (``1e20`` is no flight, nor ``-5``)."""

    def outside(value: object) -> bool:
        return not isinstance(value, str) and not 0 <= value <= MAX_FLIGHT_NUMBER

    if any(map(outside, distinct)):
        rows = [i for i, v in enumerate(values) if outside(v)]
        raise InvalidFlightsError(
            FLIGHT_NUMBER,
            f"expected a flight number of at most MAX_FLIGHT_NUMBER_CHARS={MAX_FLIGHT_NUMBER_CHARS} digits "
            f"({example_rows(rows, values)})",
        )


def _check_flight_number_form(values: list, distinct: set) -> None:
    """Normalised flight numbers are letters and digits only ("A-1", "226.5" and "\u200b226" are refused)."""
    unique = list(distinct)
    forms = FLIGHT_NUMBER_MEMO.lookup(unique, distinct)
    bad = {v for v, form in zip(unique, forms, strict=True) if FLIGHT_NUMBER_FORM.fullmatch(form) is None}
    if bad:
        rows = [i for i, v in enumerate(values) if v in bad]
        raise InvalidFlightsError(
            FLIGHT_NUMBER, f"expected a flight number of letters and digits ({example_rows(rows, values)})"
        )


def clean_values(frame: pd.DataFrame) -> Columns:
    """``schema.clean_columns`` value by value, for a frame that has every required column."""
    arrays = {c: column_array(frame, c) for c in REQUIRED_COLUMNS}
    time_column = arrays[SCHEDULED_TIME]
    datetimes = naive_datetimes(time_column.dtype)
    # A datetime64 column is checked with numpy, never turned into a list of Timestamps.
    raw = {c: _values(a) for c, a in arrays.items() if not (datetimes and c == SCHEDULED_TIME)}
    # Checks run on each column's distinct values (a few hundred in 100,000 flights), rows are
    # looked for only once a check fails.
    distinct = {c: _distinct(values) for c, values in raw.items()}
    _check_caps(raw, distinct)
    for column in REQUIRED_COLUMNS:
        if column not in raw:
            blank = np.flatnonzero(np.isnat(time_column.to_numpy())).tolist()
            if blank:
                raise InvalidFlightsError(column, f"null or empty value ({example_rows(blank, time_column.tolist())})")
            continue
        values = raw[column]
        unique = distinct[column] if distinct[column] is not None else values
        if any(map(_is_blank, unique)):
            blank = [i for i, v in enumerate(values) if _is_blank(v)]
            raise InvalidFlightsError(column, f"null or empty value ({example_rows(blank, values)})")
    for column in CATEGORY_COLUMNS:
        _check_text(column, raw[column], arrays[column].dtype, distinct[column])
    _check_flight_numbers(raw[FLIGHT_NUMBER], distinct[FLIGHT_NUMBER])
    _check_flight_number_range(raw[FLIGHT_NUMBER], distinct[FLIGHT_NUMBER])
    times = datetime_times(time_column) if datetimes else parse_times(raw[SCHEDULED_TIME])
    unparsable = np.flatnonzero(np.isnat(times)).tolist()
    if unparsable:
        shown_times = raw.get(SCHEDULED_TIME) or time_column.tolist()
        raise InvalidFlightsError(
            SCHEDULED_TIME,
            f"expected a time as YYYY-MM-DD HH:MM:SS ({example_rows(unparsable, shown_times)})",
        )
    years = times.astype("datetime64[Y]").astype(np.int64) + 1970
    out_of_range = np.flatnonzero((years < MIN_YEAR) | (years > MAX_YEAR)).tolist()
    if out_of_range:
        shown_times = raw.get(SCHEDULED_TIME) or time_column.tolist()
        raise InvalidFlightsError(
            SCHEDULED_TIME,
            f"year outside {MIN_YEAR}-{MAX_YEAR} ({example_rows(out_of_range, shown_times)})",
        )
    _check_flight_number_form(raw[FLIGHT_NUMBER], distinct[FLIGHT_NUMBER])
    numbers = FLIGHT_NUMBER_MEMO.lookup(raw[FLIGHT_NUMBER], distinct[FLIGHT_NUMBER])
    columns = Columns({SCHEDULED_TIME: times, FLIGHT_NUMBER: text_array(numbers)})
    for column in CATEGORY_COLUMNS:
        columns[column] = text_array(CATEGORY_MEMO.lookup(raw[column], distinct[column]))
    return columns
