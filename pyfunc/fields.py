"""The flight's fields as validation checks them: names, length caps, ranges, and the error naming a field.

The base every part of the flight contract builds on (``normalise``, ``times``, ``clean_values``,
``clean_distinct``, ``schema``) and the features read: it imports nothing of the project. Every
text field has a length cap checked before anything is normalised or cached, and values echoed
in errors are cut to ``ECHO_CHARS`` characters: a hostile value costs an error, not the worker's
memory.
"""

from __future__ import annotations

import re

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

SCHEDULED_TIME = "Fecha-I"
FLIGHT_NUMBER = "Vlo-I"
# Scheduled categorical columns the model uses; values outside the training vocabulary are refused
# (or, with the model parameter unknown_categories="score", scored as unseen and flagged).
CATEGORY_COLUMNS = ("Emp-I", "Des-I", "TIPOVUELO", "OPERA", "SIGLADES")
REQUIRED_COLUMNS = (SCHEDULED_TIME, FLIGHT_NUMBER, *CATEGORY_COLUMNS)
# Scheduled times outside these years are refused as out of range.
MIN_YEAR, MAX_YEAR = 2000, 2100
# Field-length caps, in characters of the value as sent (surrounding spaces count), checked before
# any value is normalised or cached. Real values: categories up to 24 characters, flight numbers 5.
MAX_CATEGORY_CHARS = 64
MAX_FLIGHT_NUMBER_CHARS = 10
MAX_TIME_CHARS = 32
FIELD_CAPS = {
    SCHEDULED_TIME: ("MAX_TIME_CHARS", MAX_TIME_CHARS),
    FLIGHT_NUMBER: ("MAX_FLIGHT_NUMBER_CHARS", MAX_FLIGHT_NUMBER_CHARS),
    **{c: ("MAX_CATEGORY_CHARS", MAX_CATEGORY_CHARS) for c in CATEGORY_COLUMNS},
}
# A flight number sent as a number is a whole number of at most MAX_FLIGHT_NUMBER_CHARS digits.
MAX_FLIGHT_NUMBER = 10**MAX_FLIGHT_NUMBER_CHARS - 1
# What a normalised flight number is made of.
FLIGHT_NUMBER_FORM = re.compile(r"[0-9A-Z]+")
# Values echoed in errors are cut to this many characters, then their length is given.
ECHO_CHARS = 40


class InvalidFlightsError(MlflowException):
    """Bad flights in a request; the scoring server answers these with HTTP 400."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"Field '{field}': {problem}", error_code=INVALID_PARAMETER_VALUE)
        self.field = field
        self.problem = problem


def shown(value: object) -> str:
    """``repr`` of a value as an error echoes it: at most ECHO_CHARS characters, then its length."""
    if isinstance(value, str):
        return repr(value) if len(value) <= ECHO_CHARS else f"{value[:ECHO_CHARS]!r}… ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]}… ({len(text)} characters)"


def example_rows(bad: list[int], values: list, limit: int = 3) -> str:
    """The first ``limit`` bad rows and their values as an error names them, and how many more."""
    shown_rows = [f"row {i}: {shown(values[i])}" for i in bad[:limit]]
    more = len(bad) - len(shown_rows)
    return "; ".join(shown_rows) + (f" (and {more} more)" if more > 0 else "")
