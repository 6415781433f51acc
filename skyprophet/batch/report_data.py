"""report, the data: one pass over ``score``'s output file summing what the page shows.

The columns it needs are read in batches of ``BATCH_ROWS``: flights and probabilities per (day,
hour), per airline and per destination, the ``TOP_FLIGHTS`` riskiest flights and the first
``FLAGGED_LISTED`` flagged ones; only those riskiest flights go through the model's ``explain``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pyfunc.explain import FACTOR_VALUES_COLUMN
from pyfunc.normalise import normalise_category
from pyfunc.schema import EXPLAIN_PARAM, SCHEDULED_TIME, UNKNOWN_FIELDS
from pyfunc.times import TIME_FORMAT, parse_times
from skyprophet.batch.contract import AIRLINE, FLIGHT_COLUMNS

PROBABILITY, DELAY = "delay_probability", "delay"
AIRLINE_NAME, DESTINATION, CITY = "OPERA", "Des-I", "SIGLADES"
# Rows read per batch: memory stays a few batches of a few columns whatever the schedule's size.
BATCH_ROWS = 1_000_000
# The riskiest flights listed with their factors (the only flights the model explains).
TOP_FLIGHTS = 20
# Flagged flights listed one by one (all of them are counted by field).
FLAGGED_LISTED = 50
# The model parameters of the explained sample (the same unseen-category rule as score).
EXPLAIN_PARAMS = {"unknown_categories": "score", EXPLAIN_PARAM: True}


# ------------------------------------------------------------------ one pass over the output


@dataclass
class Aggregates:
    """What the page is drawn from: sums per group, the riskiest and the flagged flights."""

    flights: int = 0
    probability_sum: float = 0.0
    delayed: int = 0
    cells: list[pd.DataFrame] = field(default_factory=list)
    airlines: list[pd.DataFrame] = field(default_factory=list)
    destinations: list[pd.DataFrame] = field(default_factory=list)
    flagged_by_fields: dict[str, int] = field(default_factory=dict)
    top: pd.DataFrame | None = None
    flagged: pd.DataFrame | None = None

    def table(self, name: str) -> pd.DataFrame:
        """One summed table (``cells``, ``airlines`` or ``destinations``), grouped by its key columns."""
        parts = getattr(self, name)
        if not parts:
            return pd.DataFrame(columns=[*GROUP_KEYS[name], *SUMS])
        keys = [c for c in parts[0].columns if c not in SUMS]
        return pd.concat(parts).groupby(keys, sort=True, dropna=False)[list(SUMS)].sum().reset_index()


# What every group adds up, and the key columns of each group (the names only where the file has them).
SUMS = ("flights", "probability_sum", "delayed")
GROUP_KEYS = {"cells": ["day", "hour"], "airlines": [AIRLINE], "destinations": [DESTINATION]}


def _times(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Scheduled times as timestamps: Arrow's parser for the plain form, the schema's for the rest."""
    text = pc.utf8_trim_whitespace(column.cast(pa.string()))
    times = pc.strptime(text, format=TIME_FORMAT, unit="s", error_is_null=True)
    if isinstance(times, pa.ChunkedArray):
        times = times.combine_chunks()
    missing = np.flatnonzero(times.is_null().to_numpy(zero_copy_only=False))
    if len(missing):  # another form the schema accepts: the same parser score used
        values = np.asarray(times.to_numpy(zero_copy_only=False), dtype="datetime64[s]")
        values[missing] = parse_times(pc.take(column, pa.array(missing)).to_pylist()).astype("datetime64[s]")
        times = pa.array(values, type=pa.timestamp("s"))
    return times


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(code per row, distinct values) of a text column: Arrow's dictionary, no Python string per row."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        column = pc.fill_null(column.cast(pa.string()), "")
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    values = np.asarray(column.dictionary.cast(pa.string()).to_pylist(), dtype=object)
    return column.indices.to_numpy(zero_copy_only=False).astype(np.int64), values


def _sums(codes: np.ndarray, size: int, probability: np.ndarray, delay: np.ndarray) -> tuple[np.ndarray, ...]:
    """(codes used, flights, probability sum, delayed) per code, by ``np.bincount``."""
    flights = np.bincount(codes, minlength=size)
    used = np.flatnonzero(flights)
    sums = np.bincount(codes, weights=probability, minlength=size)
    delayed = np.bincount(codes, weights=delay, minlength=size)
    return used, flights[used], sums[used], delayed[used].astype(np.int64)


def _by_codes(table: pa.Table, key: str, name: str, probability: np.ndarray, delay: np.ndarray) -> pd.DataFrame:
    """Sums per (``key``, ``name``) value pair of one batch (``name`` left out when the file lacks it)."""
    codes, values = _codes(table[key])
    if name in table.column_names:
        names_codes, names = _codes(table[name])
        used, flights, sums, delayed = _sums(
            codes * len(names) + names_codes, len(values) * len(names), probability, delay
        )
        keys = {key: values[used // len(names)], name: names[used % len(names)]}
    else:
        used, flights, sums, delayed = _sums(codes, len(values), probability, delay)
        keys = {key: values[used]}
    return pd.DataFrame({**keys, "flights": flights, "probability_sum": sums, "delayed": delayed})


def _cells(times: pa.Array, probability: np.ndarray, delay: np.ndarray) -> pd.DataFrame:
    """Sums per (day, hour of departure) of one batch."""
    days = times.cast(pa.date32()).cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
    hours = pc.hour(times).to_numpy(zero_copy_only=False).astype(np.int64)
    first = int(days.min())
    used, flights, sums, delayed = _sums(
        (days - first) * 24 + hours, (int(days.max()) - first + 1) * 24, probability, delay
    )
    day = (first + used // 24).astype("datetime64[D]")
    return pd.DataFrame(
        {"day": day, "hour": used % 24, "flights": flights, "probability_sum": sums, "delayed": delayed}
    )


def aggregate(path: str | Path) -> Aggregates:
    """Read ``score``'s output once, in batches, and sum what the report shows."""
    present = set(pq.ParquetFile(path).schema_arrow.names)
    # Every text column but the time as Arrow dictionaries: codes per row, each distinct value once.
    text = [c for c in (*FLIGHT_COLUMNS, UNKNOWN_FIELDS) if c in present and c != SCHEDULED_TIME]
    parquet = pq.ParquetFile(path, read_dictionary=text)
    flight_columns = [c for c in FLIGHT_COLUMNS if c in present]
    columns = [*flight_columns, PROBABILITY, DELAY, *([UNKNOWN_FIELDS] if UNKNOWN_FIELDS in present else [])]
    result = Aggregates()
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        table = pa.Table.from_batches([batch])
        if not table.num_rows:
            continue
        probability = table[PROBABILITY].to_numpy().astype(np.float64)
        delay = table[DELAY].to_numpy().astype(np.int64)
        result.flights += table.num_rows
        result.probability_sum += float(probability.sum())
        result.delayed += int(delay.sum())
        result.cells.append(_cells(_times(table[SCHEDULED_TIME]), probability, delay))
        result.airlines.append(_by_codes(table, AIRLINE, AIRLINE_NAME, probability, delay))
        result.destinations.append(_by_codes(table, DESTINATION, CITY, probability, delay))
        keep = np.argpartition(-probability, TOP_FLIGHTS)[:TOP_FLIGHTS] if len(probability) > TOP_FLIGHTS else None
        top = (table if keep is None else table.take(pa.array(keep))).to_pandas()
        result.top = top if result.top is None else pd.concat([result.top, top], ignore_index=True)
        result.top = result.top.sort_values(PROBABILITY, ascending=False, kind="stable").head(TOP_FLIGHTS)
        if UNKNOWN_FIELDS in present:
            codes, values = _codes(table[UNKNOWN_FIELDS])
            flagged = values[codes] != ""
            if flagged.any():
                for key, n in zip(*np.unique(values[codes[flagged]], return_counts=True), strict=True):
                    result.flagged_by_fields[key] = result.flagged_by_fields.get(key, 0) + int(n)
                have = 0 if result.flagged is None else len(result.flagged)
                if have < FLAGGED_LISTED:
                    rows = np.flatnonzero(flagged)[: FLAGGED_LISTED - have]
                    more = table.take(pa.array(rows)).to_pandas()
                    result.flagged = more if result.flagged is None else pd.concat([result.flagged, more])
    for frame in (result.top, result.flagged):
        if frame is not None:  # dictionary columns come back as categoricals: plain text for the page
            for column in frame.columns:
                if isinstance(frame[column].dtype, pd.CategoricalDtype):
                    frame[column] = frame[column].astype(object)
    return result


# ------------------------------------------------------------------ the riskiest flights, explained


def explain_top(model_uri: str, top: pd.DataFrame) -> list[list[dict]]:
    """Per riskiest flight: its three factors (text, direction, probability without it) from the model's ``explain``."""
    if top is None or top.empty or not model_uri:
        return []
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_uri)
    flights = top[[c for c in FLIGHT_COLUMNS if c in top.columns]].reset_index(drop=True)
    explained = model.predict(flights, params=EXPLAIN_PARAMS)
    factors = []
    for values in explained[FACTOR_VALUES_COLUMN]:
        parsed = json.loads(values)
        factors.append(
            [
                {
                    "text": item["text"],
                    "points": parsed["probability"] - item["probability_without"],
                }
                for item in parsed["top"]
            ]
        )
    return factors


def with_means(frame: pd.DataFrame, total: int) -> pd.DataFrame:
    """``frame`` plus each group's mean probability, delay share and share of the ``total`` flights."""
    frame = frame.copy()
    frame["mean"] = frame["probability_sum"] / frame["flights"]
    frame["late"] = frame["delayed"] / frame["flights"]
    frame["share"] = frame["flights"] / max(total, 1)
    return frame


def by_category(frame: pd.DataFrame, key: str, name: str | None, total: int) -> pd.DataFrame:
    """Groups of values as given, merged under the model's normalisation; the most frequent name beside each."""
    if frame.empty:
        return with_means(frame.assign(label=[]), total)
    frame = frame.assign(**{key: normalise_category(frame[key]).astype(object)})
    sums = frame.groupby(key)[["flights", "probability_sum", "delayed"]].sum().reset_index()
    if name and name in frame.columns:
        names = frame.sort_values("flights", ascending=False).drop_duplicates(key).set_index(key)[name]
        sums["label"] = [f"{k} · {names.get(k, '')}" for k in sums[key]]
    else:
        sums["label"] = sums[key]
    return with_means(sums, total)
