"""The flight contract shared by etl, training and serving: columns, normalisation, validation.

One rule normalises every categorical value (airline, destination, flight type, city):
Unicode NFKC, surrounding whitespace stripped, inner runs of whitespace collapsed to one
space, upper-cased. Flight numbers are trimmed and written without leading zeros or a
trailing ``.0`` (``"0226"``, ``226`` and ``"226.0"`` are the same flight).

``clean_columns`` is the one implementation of "a valid flight": it checks and normalises each
value in plain Python and numpy, so a one-flight request costs microseconds rather than the
milliseconds of pandas string operations on a one-row frame, and 100,000 flights stay well under
a second. Training (``clean_flights``) and serving (``validate_request``) both call it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

SCHEDULED_TIME = "Fecha-I"
OPERATED_TIME = "Fecha-O"
FLIGHT_NUMBER = "Vlo-I"
ORIGIN = "Ori-I"
# Scheduled categorical columns the model uses; values outside the training vocabulary are refused
# (or, with the model parameter unknown_categories="score", scored as unseen and flagged).
CATEGORY_COLUMNS = ("Emp-I", "Des-I", "TIPOVUELO", "OPERA", "SIGLADES")
REQUIRED_COLUMNS = (SCHEDULED_TIME, FLIGHT_NUMBER, *CATEGORY_COLUMNS)
# Known before departure but constant for one airport's file: accepted, not used.
OPTIONAL_COLUMNS = (ORIGIN, "SIGLAORI")
# What happened, not what was scheduled: never a model input.
OPERATED_COLUMNS = (OPERATED_TIME, "Vlo-O", "Ori-O", "Des-O", "Emp-O", "DIA", "MES", "AÑO", "DIANOM")
TARGET = "delay"
OUTPUT_COLUMNS = ("delay_probability", "delay")
# With unknown_categories="score": per flight, the fields whose value the model never saw.
UNKNOWN_FIELDS = "unknown_fields"
DELAY_MINUTES = 15
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# Scheduled times outside these years are refused as out of range.
MIN_YEAR, MAX_YEAR = 2000, 2100
# Requests above this many flights are refused; split larger batches.
MAX_BATCH_ROWS = 100_000
# What a flight with a category the model never saw gets (the model parameter ``unknown_categories``).
UNKNOWN_CATEGORY_CHOICES = ("refuse", "score")
# The model parameter ``explain``: JSON true or false (MLflow refuses "yes", "true", 1 with a 400 naming it).
EXPLAIN_PARAM = "explain"
# Memoised normalisations are dropped when a memo grows past this (bounded memory under odd traffic).
MEMO_LIMIT = 50_000
# The strict time form after stripping; anything else is decided by pandas' parser (see parse_times).
_PLAIN_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
# Python types a flight number may arrive as (a JSON number or text); booleans never.
_NUMBER_TYPES = (int, float, np.integer, np.floating)


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


# The dtype of parsed times, probed once so every path returns the same.
TIME_DTYPE = parse_scheduled_time(pd.Series(["2000-01-01 00:00:00"])).dtype


def minutes_late(flights: pd.DataFrame) -> pd.Series:
    """Minutes between scheduled and operated departure (negative when early); the label's source."""
    late = parse_scheduled_time(flights[OPERATED_TIME]) - parse_scheduled_time(flights[SCHEDULED_TIME])
    return late.dt.total_seconds() / 60


class _Memo:
    """Raw value -> normalised text, filled in batches by one of the pandas normalisers above.

    The rule stays in one place (the pandas function); each distinct raw value pays for it once.
    """

    def __init__(self, normalise) -> None:
        self.normalise = normalise
        self.values: dict = {}

    def lookup(self, raw: list, distinct: set) -> list[str]:
        """Normalise ``raw`` (whose ``distinct`` values are given), calling pandas only for new values."""
        values = self.values  # a local reference: another thread may swap in a fresh dict
        missing = distinct.difference(values)
        if missing:
            if len(values) + len(missing) > MEMO_LIMIT:
                values = self.values = {}
            ordered = list(missing)
            normalised = self.normalise(pd.Series(ordered, dtype=object))
            values.update(zip(ordered, normalised.tolist(), strict=True))
        return list(map(values.__getitem__, raw))


_CATEGORY_MEMO = _Memo(normalise_category)
_FLIGHT_NUMBER_MEMO = _Memo(normalise_flight_number)


def _example_rows(bad: list[int], values: list, limit: int = 3) -> str:
    shown = [f"row {i}: {values[i]!r}" for i in bad[:limit]]
    more = len(bad) - len(shown)
    return "; ".join(shown) + (f" (and {more} more)" if more > 0 else "")


def _describe_known(known: Collection[str]) -> str:
    known = sorted(known)
    if len(known) <= 30:
        return "known values: " + ", ".join(known)
    return f"the model knows {len(known)} values, e.g. " + ", ".join(known[:10])


def _is_blank(value: object) -> bool:
    """None, NaN, NA, NaT, or text that is empty once stripped."""
    if isinstance(value, str):
        return not value.strip()
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return isinstance(value, np.datetime64) and np.isnat(value)


def _text_array(values: list[str]) -> np.ndarray:
    """A numpy array of ``str`` objects (``+`` and lookups work on it as on a pandas string column)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def check_batch(frame: pd.DataFrame) -> None:
    """Refuse what is not a batch of flights the server should score in one request."""
    if not isinstance(frame, pd.DataFrame):
        raise InvalidFlightsError("input", f"expected a table of flights, got {type(frame).__name__}")
    if len(frame) == 0:
        raise InvalidFlightsError("input", "the batch is empty; send at least one flight")
    if len(frame) > MAX_BATCH_ROWS:
        raise InvalidFlightsError("input", f"{len(frame)} flights exceed the limit of {MAX_BATCH_ROWS} per request")


def _check_text(column: str, values: list, dtype: object, distinct: set | None) -> None:
    """Categories are text: a numeric column, or any list, object, number or boolean, is refused."""
    if pd.api.types.is_numeric_dtype(dtype):
        raise InvalidFlightsError(column, f"expected text, got {dtype} values")
    if distinct is not None and all(type(v) is str for v in distinct):
        return
    wrong = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if wrong:
        found = sorted({type(values[i]).__name__ for i in wrong})
        raise InvalidFlightsError(column, f"expected text, got {', '.join(found)} ({_example_rows(wrong, values)})")


def _check_flight_numbers(values: list, distinct: set | None) -> None:
    """Text or a whole JSON number (``226``, ``226.0``); never a list, object, boolean or ``226.5``."""
    if distinct is not None and all(type(v) is str or type(v) is int for v in distinct):
        return
    wrong = [
        i for i, v in enumerate(values) if not isinstance(v, (str, *_NUMBER_TYPES)) or isinstance(v, bool | np.bool_)
    ]
    if wrong:
        found = sorted({type(values[i]).__name__ for i in wrong})
        raise InvalidFlightsError(
            FLIGHT_NUMBER,
            f"expected a flight number (text or number), got {', '.join(found)} ({_example_rows(wrong, values)})",
        )
    fractional = [
        i
        for i, v in enumerate(values)
        if isinstance(v, float | np.floating) and not (math.isfinite(v) and float(v).is_integer())
    ]
    if fractional:
        examples = _example_rows(fractional, values)
        raise InvalidFlightsError(FLIGHT_NUMBER, f"expected a whole flight number ({examples})")


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


def parse_times(values: list) -> np.ndarray:
    """Scheduled times as ``TIME_DTYPE`` (NaT where unparsable); the rule is ``parse_scheduled_time``'s.

    Text in the plain form takes numpy's path (10,000 flights: about 2 ms against 19 ms for pandas);
    a batch with any other value (spaces around, another form, not text) is left to pandas' parser
    for the values that are not plain.
    """
    plain = _plain_times(values)
    if plain is not None:
        return plain
    stripped = [v.strip() if type(v) is str else None for v in values]
    match = _PLAIN_TIME.fullmatch
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


def _distinct(values: list) -> set | None:
    """The set of distinct values, or None when one is unhashable (a JSON list or object)."""
    try:
        return set(values)
    except TypeError:
        return None


def clean_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The required columns checked, parsed and normalised, as numpy arrays; or InvalidFlightsError.

    Extra columns are ignored. Nothing is defaulted: a missing column, a null or blank required
    value, a value of the wrong type or an unparsable or out-of-range time is an error naming the
    field and the first rows. Categories are not checked against a vocabulary here.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidFlightsError(missing[0], f"required column missing (missing: {missing})")
    raw = {c: frame[c].tolist() for c in REQUIRED_COLUMNS}
    # Checks run on each column's distinct values (a few hundred in 100,000 flights), rows are
    # looked for only once a check fails.
    distinct = {c: _distinct(values) for c, values in raw.items()}
    for column, values in raw.items():
        unique = distinct[column] if distinct[column] is not None else values
        if any(map(_is_blank, unique)):
            blank = [i for i, v in enumerate(values) if _is_blank(v)]
            raise InvalidFlightsError(column, f"null or empty value ({_example_rows(blank, values)})")
    for column in CATEGORY_COLUMNS:
        _check_text(column, raw[column], frame[column].dtype, distinct[column])
    _check_flight_numbers(raw[FLIGHT_NUMBER], distinct[FLIGHT_NUMBER])
    times = parse_times(raw[SCHEDULED_TIME])
    unparsable = np.flatnonzero(np.isnat(times)).tolist()
    if unparsable:
        raise InvalidFlightsError(
            SCHEDULED_TIME,
            f"expected a time as YYYY-MM-DD HH:MM:SS ({_example_rows(unparsable, raw[SCHEDULED_TIME])})",
        )
    years = times.astype("datetime64[Y]").astype(np.int64) + 1970
    out_of_range = np.flatnonzero((years < MIN_YEAR) | (years > MAX_YEAR)).tolist()
    if out_of_range:
        raise InvalidFlightsError(
            SCHEDULED_TIME,
            f"year outside {MIN_YEAR}-{MAX_YEAR} ({_example_rows(out_of_range, raw[SCHEDULED_TIME])})",
        )
    numbers = _FLIGHT_NUMBER_MEMO.lookup(raw[FLIGHT_NUMBER], distinct[FLIGHT_NUMBER])
    columns = {SCHEDULED_TIME: times, FLIGHT_NUMBER: _text_array(numbers)}
    for column in CATEGORY_COLUMNS:
        columns[column] = _text_array(_CATEGORY_MEMO.lookup(raw[column], distinct[column]))
    return columns


def clean_flights(frame: pd.DataFrame) -> pd.DataFrame:
    """``clean_columns`` as a DataFrame (for etl, training and evaluation)."""
    columns = clean_columns(frame.reset_index(drop=True))
    return pd.DataFrame({c: v if c == SCHEDULED_TIME else pd.array(v, dtype="string") for c, v in columns.items()})


def unknown_columns(clean: Mapping, vocabulary: Mapping[str, Collection[str]]) -> dict[str, np.ndarray]:
    """Per categorical column, True for the flights whose value is outside the training vocabulary."""
    unknown = {}
    for column in CATEGORY_COLUMNS:
        values = clean[column]
        never_seen = set(values).difference(vocabulary[column])
        if never_seen:
            unknown[column] = np.fromiter((v in never_seen for v in values), dtype=bool, count=len(values))
        else:
            unknown[column] = np.zeros(len(values), dtype=bool)
    return unknown


def unknown_categories(clean: Mapping, vocabulary: Mapping[str, Collection[str]]) -> np.ndarray:
    """Per flight, True when any categorical value is outside the training vocabulary."""
    return np.logical_or.reduce(list(unknown_columns(clean, vocabulary).values()))


def scorable(clean: Mapping, vocabulary: Mapping[str, Collection[str]]) -> np.ndarray:
    """Per validated flight, whether a model of ``vocabulary`` can score it: every category seen in training.

    The one answer to "which flights can this model score" (train's holdout, evaluate's splits,
    the gate, promote's and the bench's real flights, monitor's unseen count).
    """
    return ~np.asarray(unknown_categories(clean, vocabulary))


def unknown_field_names(unknown: Mapping[str, np.ndarray]) -> list[str]:
    """Per flight, the comma-separated fields whose value the model never saw ("" when none)."""
    names = np.full(len(next(iter(unknown.values()))), "", dtype=object)
    for column, mask in unknown.items():
        if mask.any():
            names[mask] = [f"{n},{column}" if n else column for n in names[mask]]
    return names.tolist()


def check_known_categories(clean: Mapping, unknown: Mapping[str, np.ndarray], vocabulary: Mapping) -> None:
    """Raise InvalidFlightsError naming the first column with a value the model never saw."""
    for column in CATEGORY_COLUMNS:
        rows = np.flatnonzero(unknown[column]).tolist()
        if rows:
            raise InvalidFlightsError(
                column,
                f"value never seen in training ({_example_rows(rows, list(clean[column]))}); "
                + _describe_known(vocabulary[column]),
            )


def check_unknown_categories_choice(choice: object) -> str:
    """The model parameter ``unknown_categories``, refused (a 400 naming it) unless a known choice."""
    if choice not in UNKNOWN_CATEGORY_CHOICES:
        raise InvalidFlightsError(
            "unknown_categories", f"expected one of {', '.join(UNKNOWN_CATEGORY_CHOICES)}, got {choice!r}"
        )
    return choice


def check_explain_choice(choice: object) -> bool:
    """The model parameter ``explain``, refused (a 400 naming it) unless a boolean."""
    if not isinstance(choice, bool | np.bool_):
        raise InvalidFlightsError(EXPLAIN_PARAM, f"expected true or false, got {choice!r}")
    return bool(choice)


def validate_request(
    frame: pd.DataFrame, vocabulary: Mapping[str, Collection[str]], unknown_categories: str = "refuse"
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Everything serving checks before scoring: the cleaned columns and, per column, the unseen values.

    With ``unknown_categories="refuse"`` a value the model never saw is an error naming the field;
    with ``"score"`` it is returned as unseen (its feature code is the "never seen" code).
    """
    check_unknown_categories_choice(unknown_categories)
    check_batch(frame)
    clean = clean_columns(frame)
    unknown = unknown_columns(clean, vocabulary)
    if unknown_categories == "refuse":
        check_known_categories(clean, unknown, vocabulary)
    return clean, unknown


def model_signature():
    """The served model's signature: flights in the raw file's column names in, odds out, options as params."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = [ColSpec("string", c) for c in REQUIRED_COLUMNS]
    inputs += [ColSpec("string", c, required=False) for c in OPTIONAL_COLUMNS]
    outputs = [ColSpec("double", "delay_probability"), ColSpec("long", "delay")]
    outputs.append(ColSpec("string", UNKNOWN_FIELDS, required=False))
    # With explain=true (pyfunc.explain): the three factors in words and their numbers as JSON text.
    outputs += [ColSpec("string", c, required=False) for c in ("top_factors", "factor_values")]
    params = ParamSchema(
        [ParamSpec("unknown_categories", "string", "refuse"), ParamSpec(EXPLAIN_PARAM, "boolean", False)]
    )
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs), params=params)
