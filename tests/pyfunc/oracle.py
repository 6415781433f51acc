"""The straightforward pandas validation the project served before ``schema.clean_columns``: the oracle.

Kept only in the tests: ``clean_columns`` must accept, normalise and refuse exactly what this
does, with the same messages (tests/pyfunc/test_schema_oracle.py compares them on thousands of
generated flights). It uses ``normalise``'s own normalisers, so the one normalisation rule is shared.
"""

from __future__ import annotations

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
    shown,
)
from pyfunc.normalise import normalise_category, normalise_flight_number
from pyfunc.schema import check_batch
from pyfunc.times import parse_scheduled_time


def _example_rows(mask: pd.Series, values: pd.Series, limit: int = 3) -> str:
    rows = [f"row {i}: {shown(values[i])}" for i in mask[mask].index[:limit]]
    more = int(mask.sum()) - len(rows)
    return "; ".join(rows) + (f" (and {more} more)" if more > 0 else "")


def _describe_known(known: list[str]) -> str:
    if len(known) <= 30:
        return "known values: " + ", ".join(known)
    return f"the model knows {len(known)} values, e.g. " + ", ".join(known[:10])


# Per column: the pandas-inferred kinds accepted at once, and the Python types accepted value by value.
TEXT_KINDS, TEXT_TYPES = ("string",), (str,)
FLIGHT_NUMBER_KINDS = ("string", "integer", "floating", "mixed-integer-float")
FLIGHT_NUMBER_TYPES = (str, int, float, np.integer, np.floating)


def _check_value_types(values: pd.Series, kinds: tuple[str, ...], allowed: tuple[type, ...], expected: str) -> None:
    """Refuse JSON lists, objects, booleans (or numbers for text) that would otherwise be stringified."""
    if isinstance(values.dtype, pd.StringDtype) or pd.api.types.infer_dtype(values, skipna=True) in kinds:
        return
    wrong = values.map(lambda v: not isinstance(v, allowed) or isinstance(v, bool | np.bool_)).astype(bool)
    if wrong.any():
        found = sorted({type(values[i]).__name__ for i in wrong[wrong].index})
        raise InvalidFlightsError(
            str(values.name), f"expected {expected}, got {', '.join(found)} ({_example_rows(wrong, values)})"
        )


def _check_whole_numbers(values: pd.Series) -> None:
    """Refuse numeric flight numbers that are no flight number: fractional or infinite (``226.5``, ``Infinity``)."""
    if isinstance(values.dtype, pd.StringDtype) or pd.api.types.is_integer_dtype(values):
        return
    floats = values.map(lambda v: isinstance(v, float | np.floating)).astype(bool)
    if floats.any():
        numbers = values[floats].astype(float)
        bad = pd.Series(False, index=values.index)
        bad[floats] = ~np.isfinite(numbers) | (numbers.abs() % 1 != 0)
        if bad.any():
            raise InvalidFlightsError(
                str(values.name), f"expected a whole flight number ({_example_rows(bad, values)})"
            )


def clean_flights(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the required columns parsed and normalised, or raise InvalidFlightsError.

    Extra columns are dropped. Nothing is defaulted: a missing or null required value or an
    unparsable or out-of-range time is an error naming the field and rows.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidFlightsError(missing[0], f"required column missing (missing: {missing})")
    frame = frame.reset_index(drop=True)
    for column, (name, cap) in FIELD_CAPS.items():
        long = frame[column].map(lambda v, cap=cap: isinstance(v, str) and len(v) > cap).astype(bool)
        if long.any():
            raise InvalidFlightsError(
                column, f"longer than {name}={cap} characters ({_example_rows(long, frame[column])})"
            )
    for column in REQUIRED_COLUMNS:
        values = frame[column]
        blank = values.isna() | (values.astype("string").str.strip() == "")
        if blank.any():
            raise InvalidFlightsError(column, f"null or empty value ({_example_rows(blank, values)})")
    for column in CATEGORY_COLUMNS:
        if pd.api.types.is_numeric_dtype(frame[column]):
            raise InvalidFlightsError(column, f"expected text, got {frame[column].dtype} values")
        _check_value_types(frame[column], TEXT_KINDS, TEXT_TYPES, "text")
    _check_value_types(
        frame[FLIGHT_NUMBER], FLIGHT_NUMBER_KINDS, FLIGHT_NUMBER_TYPES, "a flight number (text or number)"
    )
    _check_whole_numbers(frame[FLIGHT_NUMBER])
    numbers = frame[FLIGHT_NUMBER].map(lambda v: not isinstance(v, str) and not 0 <= v <= MAX_FLIGHT_NUMBER)
    if numbers.astype(bool).any():
        raise InvalidFlightsError(
            FLIGHT_NUMBER,
            f"expected a flight number of at most MAX_FLIGHT_NUMBER_CHARS={MAX_FLIGHT_NUMBER_CHARS} digits "
            f"({_example_rows(numbers.astype(bool), frame[FLIGHT_NUMBER])})",
        )
    times = parse_scheduled_time(frame[SCHEDULED_TIME])
    if times.isna().any():
        raise InvalidFlightsError(
            SCHEDULED_TIME,
            f"expected a time as YYYY-MM-DD HH:MM:SS ({_example_rows(times.isna(), frame[SCHEDULED_TIME])})",
        )
    out_of_range = (times.dt.year < MIN_YEAR) | (times.dt.year > MAX_YEAR)
    if out_of_range.any():
        raise InvalidFlightsError(
            SCHEDULED_TIME,
            f"year outside {MIN_YEAR}-{MAX_YEAR} ({_example_rows(out_of_range, frame[SCHEDULED_TIME])})",
        )
    clean = pd.DataFrame({SCHEDULED_TIME: times})
    clean[FLIGHT_NUMBER] = normalise_flight_number(frame[FLIGHT_NUMBER])
    odd = ~clean[FLIGHT_NUMBER].str.fullmatch(FLIGHT_NUMBER_FORM.pattern).astype(bool)
    if odd.any():
        raise InvalidFlightsError(
            FLIGHT_NUMBER,
            f"expected a flight number of letters and digits ({_example_rows(odd, frame[FLIGHT_NUMBER])})",
        )
    for column in CATEGORY_COLUMNS:
        clean[column] = normalise_category(frame[column])
    return clean


def unknown_categories(clean: pd.DataFrame, vocabulary: dict[str, list[str]]) -> pd.Series:
    """Per flight, True when any categorical value is outside the training vocabulary."""
    unknown = pd.Series(False, index=clean.index)
    for column in CATEGORY_COLUMNS:
        unknown |= ~clean[column].isin(vocabulary[column])
    return unknown


def check_known_categories(clean: pd.DataFrame, vocabulary: dict[str, list[str]]) -> None:
    """Raise InvalidFlightsError naming the first column with a value the model never saw."""
    for column in CATEGORY_COLUMNS:
        known = vocabulary[column]
        unknown = ~clean[column].isin(known)
        if unknown.any():
            raise InvalidFlightsError(
                column,
                f"value never seen in training ({_example_rows(unknown, clean[column])}); " + _describe_known(known),
            )


def validate_request(frame: pd.DataFrame, vocabulary: dict[str, list[str]]) -> pd.DataFrame:
    """Everything serving checks before scoring; returns the cleaned flights."""
    check_batch(frame)
    clean = clean_flights(frame)
    check_known_categories(clean, vocabulary)
    return clean
