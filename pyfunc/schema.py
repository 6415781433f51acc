"""The flight contract shared by etl, training and serving: columns, validation, the served signature.

A valid flight has every required column (``REQUIRED_COLUMNS``), each value within its field's
length cap, a flight number of letters and digits, and a scheduled time ``YYYY-MM-DD HH:MM:SS``
in range; categorical values and flight numbers are normalised by one rule. A look-alike is one
flight or an error naming the field, never a second reading.

``clean_columns`` is the one implementation of "a valid flight"; training (``clean_flights``)
and serving (``validate_request``) both call it, and 100,000 flights stay well under a second.
The contract's parts, each in its own module:

- ``fields``: the fields' names, caps and ranges, the error naming a field, values echoed cut;
- ``normalise``: the normalisation rule for categories and flight numbers, and its bounded memo;
- ``times``: reading scheduled times (the rule, and its fast forms for lists and whole columns);
- ``clean_values``: the per-value path (small batches, and whatever the fast path leaves);
- ``clean_distinct``: the distinct-value path (large batches of plainly valid flights).

This module holds the entry points, the vocabulary check, the model parameters and the signature.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
import pandas as pd

from pyfunc.clean_distinct import clean_distinct
from pyfunc.clean_values import Columns, clean_values
from pyfunc.fields import (
    CATEGORY_COLUMNS,
    ECHO_CHARS,
    REQUIRED_COLUMNS,
    SCHEDULED_TIME,
    InvalidFlightsError,
    example_rows,
    shown,
)
from pyfunc.times import parse_scheduled_time

OPERATED_TIME = "Fecha-O"
ORIGIN = "Ori-I"
# Known before departure but constant for one airport's file: accepted, not used.
OPTIONAL_COLUMNS = (ORIGIN, "SIGLAORI")
# What happened, not what was scheduled: never a model input.
OPERATED_COLUMNS = (OPERATED_TIME, "Vlo-O", "Ori-O", "Des-O", "Emp-O", "DIA", "MES", "AÑO", "DIANOM")
TARGET = "delay"
OUTPUT_COLUMNS = ("delay_probability", "delay")
# With unknown_categories="score": per flight, the fields whose value the model never saw.
UNKNOWN_FIELDS = "unknown_fields"
DELAY_MINUTES = 15
# Requests above this many flights are refused; split larger batches.
MAX_BATCH_ROWS = 100_000
# What a flight with a category the model never saw gets (the model parameter ``unknown_categories``).
UNKNOWN_CATEGORY_CHOICES = ("refuse", "score")
# The model parameter ``explain``: JSON true or false (MLflow refuses "yes", "true", 1 with a 400 naming it).
EXPLAIN_PARAM = "explain"
# Batches of at least this many flights are checked on each column's distinct values (``pd.factorize``,
# Arrow's dictionary encoding for Arrow-backed text) and their times parsed from the characters in
# numpy; anything that path does not accept as it stands is left to the per-value path, which
# names the field. Below it the per-value path is faster (factorizing has a fixed cost per column).
DISTINCT_PATH_ROWS = 1_000


def minutes_late(flights: pd.DataFrame) -> pd.Series:
    """Minutes between scheduled and operated departure (negative when early); the label's source."""
    late = parse_scheduled_time(flights[OPERATED_TIME]) - parse_scheduled_time(flights[SCHEDULED_TIME])
    return late.dt.total_seconds() / 60


def as_frame(data: object) -> object:
    """The ``inputs``/``instances`` JSON forms as a DataFrame; anything else as it came (``check_batch`` judges).

    Without an input schema MLflow hands them over through numpy (``np.array`` of each value):
    records as a list of dicts of 0-d arrays, one flight as a dict of 0-d arrays, columns (and
    ``instances``, which MLflow turns into columns) as a dict of 1-d arrays. A 0-d array keeps its
    value, but for the trailing NULs numpy's text drops, put back from its width. A column's array
    has one type for all its values: ``[226, true]`` became ``[226, 1]`` and ``["226", true]``
    ``["226", "True"]``, so a flight could be read as another; that form is refused, naming it.
    """

    def scalar(value: object) -> object:
        if not (isinstance(value, np.ndarray) and value.ndim == 0):
            return value
        item = value.item()
        if value.dtype.kind == "U" and item:  # np.array("KMIA\0") is "<U5" and reads back "KMIA"
            item += "\0" * (value.dtype.itemsize // 4 - len(item))
        return item

    if isinstance(data, dict) and data and all(isinstance(v, np.ndarray) for v in data.values()):
        if {v.ndim for v in data.values()} == {0}:
            return pd.DataFrame([{k: scalar(v) for k, v in data.items()}])
        raise InvalidFlightsError(
            "inputs",
            "flights as columns (`inputs` or `instances` as a dict of lists) reach the model as numpy arrays "
            "of one type each (MLflow turns a true among numbers into 1, and a number among text into text); "
            "send `dataframe_split` (columns and rows), or `inputs` as a list of records",
        )
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        return pd.DataFrame.from_records([{k: scalar(v) for k, v in r.items()} for r in data])
    if (isinstance(data, list) and not data) or (isinstance(data, np.ndarray) and data.ndim == 1 and not data.size):
        return pd.DataFrame()  # "inputs": []: an empty batch
    return data


def check_batch(frame: pd.DataFrame) -> None:
    """Refuse what is not a batch of flights the server should score in one request."""
    if not isinstance(frame, pd.DataFrame):
        raise InvalidFlightsError("input", f"expected a table of flights, got {type(frame).__name__}")
    if len(frame) == 0:
        raise InvalidFlightsError("input", "the batch is empty; send at least one flight")
    duplicated = [] if frame.columns.is_unique else frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        name = str(duplicated[0])
        name = name if len(name) <= ECHO_CHARS else shown(name)
        raise InvalidFlightsError(name, f"duplicate column {name}; send each column once")
    if len(frame) > MAX_BATCH_ROWS:
        raise InvalidFlightsError("input", f"{len(frame)} flights exceed the limit of {MAX_BATCH_ROWS} per request")


def clean_columns(frame: pd.DataFrame) -> Columns:
    """The required columns checked, parsed and normalised, as numpy arrays; or InvalidFlightsError.

    Extra columns are ignored. Nothing is defaulted: a missing column, a value over its field's
    length cap, a null or blank required value, a value of the wrong type, a flight number out of
    range or not of letters and digits, or an unparsable or out-of-range time is an error naming
    the field and the first rows. Categories are not checked against a vocabulary here.
    ``Fecha-I`` may be text, datetimes in an object column, or a datetime64 column (``pd.read_csv``
    with ``parse_dates``, Spark's timestamps); ``Vlo-I`` text or numbers (an int64 column).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidFlightsError(missing[0], f"required column missing (missing: {missing})")
    if len(frame) >= DISTINCT_PATH_ROWS:
        columns = clean_distinct(frame)
        if columns is not None:
            return columns
    return clean_values(frame)


def clean_flights(frame: pd.DataFrame) -> pd.DataFrame:
    """``clean_columns`` as a DataFrame (for etl, training and evaluation)."""
    columns = clean_columns(frame.reset_index(drop=True))
    return pd.DataFrame({c: v if c == SCHEDULED_TIME else pd.array(v, dtype="string") for c, v in columns.items()})


def _describe_known(known: Collection[str]) -> str:
    known = sorted(known)
    if len(known) <= 30:
        return "known values: " + ", ".join(known)
    return f"the model knows {len(known)} values, e.g. " + ", ".join(known[:10])


def unknown_columns(clean: Mapping, vocabulary: Mapping[str, Collection[str]]) -> dict[str, np.ndarray]:
    """Per categorical column, True for the flights whose value is outside the training vocabulary."""
    unknown = {}
    factors = getattr(clean, "factors", {})
    for column in CATEGORY_COLUMNS:
        if column in factors:  # judged on the distinct values, spread to the flights by their codes
            codes, distinct = factors[column]
            known = vocabulary[column]
            outside = np.fromiter((v not in known for v in distinct.tolist()), dtype=bool, count=len(distinct))
            unknown[column] = outside[codes] if outside.any() else np.zeros(len(codes), dtype=bool)
            continue
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
        if not unknown[column].any():
            continue
        rows = np.flatnonzero(unknown[column]).tolist()
        if rows:
            raise InvalidFlightsError(
                column,
                f"value never seen in training ({example_rows(rows, list(clean[column]))}); "
                + _describe_known(vocabulary[column]),
            )


def check_unknown_categories_choice(choice: object) -> str:
    """The model parameter ``unknown_categories``, refused (a 400 naming it) unless a known choice."""
    if choice not in UNKNOWN_CATEGORY_CHOICES:
        raise InvalidFlightsError(
            "unknown_categories", f"expected one of {', '.join(UNKNOWN_CATEGORY_CHOICES)}, got {shown(choice)}"
        )
    return choice


def check_explain_choice(choice: object) -> bool:
    """The model parameter ``explain``, refused (a 400 naming it) unless a boolean."""
    if not isinstance(choice, bool | np.bool_):
        raise InvalidFlightsError(EXPLAIN_PARAM, f"expected true or false, got {shown(choice)}")
    return bool(choice)


def validate_request(
    frame: pd.DataFrame, vocabulary: Mapping[str, Collection[str]], unknown_categories: str = "refuse"
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Everything serving checks before scoring: the cleaned columns and, per column, the unseen values.

    With ``unknown_categories="refuse"`` a value the model never saw is an error naming the field;
    with ``"score"`` it is returned as unseen (its feature code is the "never seen" code).
    """
    check_unknown_categories_choice(unknown_categories)
    frame = as_frame(frame)
    check_batch(frame)
    clean = clean_columns(frame)
    unknown = unknown_columns(clean, vocabulary)
    if unknown_categories == "refuse":
        check_known_categories(clean, unknown, vocabulary)
    return clean, unknown


def model_signature():
    """The served model's signature: no input schema, odds out, options as params.

    The flights' contract is ``clean_columns`` (REQUIRED_COLUMNS, OPTIONAL_COLUMNS, docs/serving.md),
    not MLflow's per-column type check: that refuses what a schedule is as pandas or Spark read it
    (an all-digit ``Vlo-I`` is int64: "Can not safely convert int64 to <U0"; ``Fecha-I`` parsed as
    datetime64), and MLflow's ``AnyType``, which accepts them, walks every value in Python (about
    50-85 ms more per 10,000-flight request, seconds per million in ``score``) and makes MLflow
    refuse CSV bodies. Without it, pandas, HTTP and ``spark_udf`` hand the model the frame as it
    is and ``clean_columns`` accepts text, numbers and datetimes, normalises them to one form and
    names the field of anything else.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    outputs = [ColSpec("double", "delay_probability"), ColSpec("long", "delay")]
    outputs.append(ColSpec("string", UNKNOWN_FIELDS, required=False))
    # With explain=true (pyfunc.explain): the three factors in words and their numbers as JSON text.
    outputs += [ColSpec("string", c, required=False) for c in ("top_factors", "factor_values")]
    params = ParamSchema(
        [ParamSpec("unknown_categories", "string", "refuse"), ParamSpec(EXPLAIN_PARAM, "boolean", False)]
    )
    return ModelSignature(inputs=None, outputs=Schema(outputs), params=params)
