"""The distinct-value validation path: a large batch checked and normalised on each column's distinct values.

``schema.clean_columns`` takes it for batches of at least ``schema.DISTINCT_PATH_ROWS`` flights:
each text column is factorized (``pd.factorize``, Arrow's dictionary encoding for Arrow-backed
text) and checked on its few hundred distinct values, and the times are parsed from their
characters in numpy (``times.parse_time_characters``). It accepts only what is plainly valid:
at the first value the per-value path (``clean_values``) might refuse or read differently it
gives up, and that path gives the same answer or the error naming the field.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pyfunc.clean_values import Columns, hidden_booleans, text_array
from pyfunc.fields import (
    CATEGORY_COLUMNS,
    FIELD_CAPS,
    FLIGHT_NUMBER,
    FLIGHT_NUMBER_FORM,
    MAX_FLIGHT_NUMBER,
    MAX_YEAR,
    MIN_YEAR,
    SCHEDULED_TIME,
)
from pyfunc.normalise import CATEGORY_MEMO, FLIGHT_NUMBER_MEMO
from pyfunc.times import datetime_times, naive_datetimes, parse_time_characters, time_characters


def _distinct_times(column: pd.Series) -> np.ndarray | None:
    """A whole column of valid times in range as ``TIME_DTYPE``, or None (the per-value path then names the field)."""
    if naive_datetimes(column.dtype):
        times = datetime_times(column)
    elif column.dtype.kind == "M":  # zoned, or dates: the per-value path names the field
        return None
    else:
        chars = time_characters(column)
        times = None if chars is None else parse_time_characters(chars)
        if times is None:
            return None
    if np.isnat(times).any():
        return None
    years = times.astype("datetime64[Y]").astype(np.int64) + 1970
    if ((years < MIN_YEAR) | (years > MAX_YEAR)).any():
        return None
    return times


def _factorized(column: pd.Series, numbers: bool) -> tuple[np.ndarray, list] | None:
    """Codes and distinct values of a column of text (or, for ``numbers``, text and whole numbers) without nulls."""
    dtype = column.dtype
    if numbers and isinstance(dtype, np.dtype) and dtype.kind in "iu":  # numpy integers: no nulls
        codes, uniques = pd.factorize(column.to_numpy())
        return codes, uniques.tolist()
    if not (pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype)):
        return None
    try:
        codes, uniques = pd.factorize(column)
    except TypeError:  # a list or dict among the values
        return None
    if len(codes) and codes.min() < 0:  # a null
        return None
    values = uniques.tolist()
    allowed = (str, int) if numbers else (str,)
    if not all(type(v) in allowed for v in values):  # never a bool, float, list, ...
        return None
    if numbers and hidden_booleans(column.to_numpy(), values):
        return None
    return codes, values


def clean_distinct(frame: pd.DataFrame) -> Columns | None:
    """``clean_columns`` on each column's distinct values, for a batch every value of which is plainly valid.

    Returns None at the first value the per-value path might refuse or read differently (a null,
    a blank, a number of another type, a value over its cap, a time not in the plain form...):
    that path then gives the same answer, or the error naming the field. As there, nothing is
    normalised or cached before every value passed its type, cap and range checks.
    """
    found = {}
    for column in (FLIGHT_NUMBER, *CATEGORY_COLUMNS):
        factorized = _factorized(frame[column], numbers=column == FLIGHT_NUMBER)
        if factorized is None:
            return None
        cap = FIELD_CAPS[column][1]
        if any(type(v) is str and (len(v) > cap or not v.strip()) for v in factorized[1]):
            return None
        found[column] = factorized
    if any(type(v) is int and not 0 <= v <= MAX_FLIGHT_NUMBER for v in found[FLIGHT_NUMBER][1]):
        return None
    times = _distinct_times(frame[SCHEDULED_TIME])
    if times is None:
        return None
    columns = Columns({SCHEDULED_TIME: times})
    for column, (codes, values) in found.items():
        memo = FLIGHT_NUMBER_MEMO if column == FLIGHT_NUMBER else CATEGORY_MEMO
        normal = memo.lookup(values, set(values))
        if column == FLIGHT_NUMBER and any(FLIGHT_NUMBER_FORM.fullmatch(v) is None for v in normal):
            return None
        distinct = text_array(normal)
        columns[column] = distinct[codes]
        columns.factors[column] = (codes, distinct)
    return columns
