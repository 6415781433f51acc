"""The flight contract shared by etl, training and serving: columns, normalisation, validation.

One rule normalises every categorical value (airline, destination, flight type, city):
Unicode NFKC, surrounding whitespace stripped, inner runs of whitespace collapsed to one
space, upper-cased. Flight numbers are trimmed and written without leading zeros or a
trailing ``.0`` (``"0226"``, ``226`` and ``"226.0"`` are the same flight).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

SCHEDULED_TIME = "Fecha-I"
OPERATED_TIME = "Fecha-O"
FLIGHT_NUMBER = "Vlo-I"
# Scheduled categorical columns the model uses; values outside the training vocabulary are refused.
CATEGORY_COLUMNS = ("Emp-I", "Des-I", "TIPOVUELO", "OPERA", "SIGLADES")
REQUIRED_COLUMNS = (SCHEDULED_TIME, FLIGHT_NUMBER, *CATEGORY_COLUMNS)
# Known before departure but constant for one airport's file: accepted, not used.
OPTIONAL_COLUMNS = ("Ori-I", "SIGLAORI")
# What happened, not what was scheduled: never a model input.
OPERATED_COLUMNS = (OPERATED_TIME, "Vlo-O", "Ori-O", "Des-O", "Emp-O", "DIA", "MES", "AÑO", "DIANOM")
TARGET = "delay"
OUTPUT_COLUMNS = ("delay_probability", "delay")
DELAY_MINUTES = 15
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# Scheduled times outside these years are refused as out of range.
MIN_YEAR, MAX_YEAR = 2000, 2100
# Requests above this many flights are refused; split larger batches.
MAX_BATCH_ROWS = 100_000


class InvalidFlightsError(MlflowException):
    """Bad flights in a request; the scoring server answers these with HTTP 400."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"Field '{field}': {problem}", error_code=INVALID_PARAMETER_VALUE)
        self.field = field
        self.problem = problem


def normalise_category(values: pd.Series) -> pd.Series:
    """Apply the one normalisation rule for categorical values (see module docstring)."""
    text = values.astype("string").str.normalize("NFKC")
    return text.str.strip().str.replace(r"\s+", " ", regex=True).str.upper()


def normalise_flight_number(values: pd.Series) -> pd.Series:
    """Write flight numbers one way: trimmed, upper-case, no leading zeros, no ``.0``."""
    text = values.astype("string").str.strip().str.upper()
    text = text.str.replace(r"^(\d+)\.0+$", r"\1", regex=True)
    return text.str.replace(r"^0+(?=\d)", "", regex=True)


def parse_scheduled_time(values: pd.Series) -> pd.Series:
    """Parse ``Fecha-I`` strictly as ``YYYY-MM-DD HH:MM:SS``; anything else becomes NaT."""
    return pd.to_datetime(values.astype("string").str.strip(), format=TIME_FORMAT, errors="coerce")


def minutes_late(flights: pd.DataFrame) -> pd.Series:
    """Minutes between scheduled and operated departure (negative when early); the label's source."""
    late = parse_scheduled_time(flights[OPERATED_TIME]) - parse_scheduled_time(flights[SCHEDULED_TIME])
    return late.dt.total_seconds() / 60


def _example_rows(mask: pd.Series, values: pd.Series, limit: int = 3) -> str:
    shown = [f"row {i}: {values[i]!r}" for i in mask[mask].index[:limit]]
    more = int(mask.sum()) - len(shown)
    return "; ".join(shown) + (f" (and {more} more)" if more > 0 else "")


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


def check_batch(frame: pd.DataFrame) -> None:
    """Refuse what is not a batch of flights the server should score in one request."""
    if not isinstance(frame, pd.DataFrame):
        raise InvalidFlightsError("input", f"expected a table of flights, got {type(frame).__name__}")
    if len(frame) == 0:
        raise InvalidFlightsError("input", "the batch is empty; send at least one flight")
    if len(frame) > MAX_BATCH_ROWS:
        raise InvalidFlightsError("input", f"{len(frame)} flights exceed the limit of {MAX_BATCH_ROWS} per request")


def clean_flights(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the required columns parsed and normalised, or raise InvalidFlightsError.

    Extra columns are dropped. Nothing is defaulted: a missing or null required value or an
    unparsable or out-of-range time is an error naming the field and rows.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidFlightsError(missing[0], f"required column missing (missing: {missing})")
    frame = frame.reset_index(drop=True)
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


def model_signature():
    """The served model's signature: flights in the raw file's column names in, odds out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec("string", c) for c in REQUIRED_COLUMNS]
    inputs += [ColSpec("string", c, required=False) for c in OPTIONAL_COLUMNS]
    outputs = [ColSpec("double", "delay_probability"), ColSpec("long", "delay")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))
