"""One batch through the model, the same for both engines: scores, or the rows it refused and why.

The model validates (``pyfunc.schema``); a batch it refuses is searched for its bad rows
(``tally.reject_reasons``) and the rest scored, so a clean batch costs one ``predict``.
``score_batch`` scores and sums one batch and ``split_batch`` makes its output and reject rows: the
pandas engine's worker processes call them, and so does each Spark task (``spark_task_scorer``),
which writes its own rows. The Spark workers import this module: it needs ``pyfunc``, ``contract``,
``tally``, ``sources`` (pyarrow's file systems) and MLflow's pyfunc loader.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from mlflow.exceptions import MlflowException

from pyfunc.schema import SCHEDULED_TIME, UNKNOWN_FIELDS
from skyprophet.batch.contract import (
    AIRLINE,
    MODEL_PARAMS,
    REJECT_DETAIL,
    REJECT_REASON,
    SCORE_COLUMNS,
    SCORE_TYPES,
    ScoreInputError,
)
from skyprophet.batch.tally import BatchScores, Tally, flight_days, group_sums, reject_reasons


def predict(model, frame: pd.DataFrame) -> pd.DataFrame:
    """The model's scores of ``frame`` with the batch parameters (unseen categories scored and named)."""
    return model.predict(frame, params=MODEL_PARAMS)


@dataclass
class _Scored:
    """One batch scored: the valid rows (all of them when ``valid`` is None) and their scores."""

    chunk: pd.DataFrame
    valid: np.ndarray | None
    reasons: np.ndarray
    details: np.ndarray
    scores: dict[str, np.ndarray]


def _score(model, chunk: pd.DataFrame) -> _Scored:
    chunk = chunk.reset_index(drop=True)
    valid = None
    reasons = details = np.array([], dtype=object)
    try:
        predicted = predict(model, chunk)
    except MlflowException as refused:
        found, why = reject_reasons(chunk)
        mask = found == ""
        if mask.all():
            # Refused for something that is not one flight's fault; as a plain MlflowException,
            # which pickles from a worker process (the schema's error type does not).
            raise MlflowException(refused.message) from None
        valid, reasons, details = mask, found[~mask], why[~mask]
        chunk = chunk[mask].reset_index(drop=True)
        predicted = predict(model, chunk) if len(chunk) else None
    if predicted is None:
        scores = {
            "delay_probability": np.array([], dtype=np.float64),
            "delay": np.array([], dtype=np.int64),
            UNKNOWN_FIELDS: np.array([], dtype=object),
        }
    else:
        scores = {
            "delay_probability": predicted["delay_probability"].to_numpy(np.float64),
            "delay": predicted["delay"].to_numpy(np.int64),
            UNKNOWN_FIELDS: predicted[UNKNOWN_FIELDS].to_numpy(dtype=object),
        }
    return _Scored(chunk, valid, reasons, details, scores)


def score_batch(model, chunk: pd.DataFrame) -> BatchScores:
    """Score one batch and sum it per (airline, day) (the pandas engine's unit of work)."""
    started = time.process_time()
    rows = len(chunk)
    done = _score(model, chunk)
    scores, chunk = done.scores, done.chunk
    flagged = scores[UNKNOWN_FIELDS] != ""
    days = flight_days(chunk[SCHEDULED_TIME]) if len(chunk) else None
    groups = group_sums(chunk[AIRLINE], days, scores, flagged) if len(chunk) else pd.DataFrame()
    rejected = pd.Series(done.reasons, dtype=object).value_counts().to_dict()
    counts = {r: int(n) for r, n in rejected.items()}
    return BatchScores(
        rows, done.valid, done.reasons, done.details, scores, groups, counts, time.process_time() - started
    )


def split_batch(table: pa.Table, part: BatchScores) -> tuple[pa.Table, pa.Table]:
    """(scored flights: the valid rows plus their scores, rejected rows plus reason and detail) of one batch."""
    scored = table if part.valid is None else table.filter(pa.array(part.valid))
    for column in SCORE_COLUMNS:
        scored = scored.append_column(column, pa.array(part.scores[column], type=SCORE_TYPES[column]))
    rejects = table.slice(0, 0) if part.valid is None else table.filter(pa.array(~part.valid))
    rejects = rejects.append_column(REJECT_REASON, pa.array(part.reasons, type=pa.string()))
    rejects = rejects.append_column(REJECT_DETAIL, pa.array(part.details, type=pa.string()))
    return scored, rejects


# What each Spark task returns: its unit, the staged files it wrote ("" for none), its counts, its
# per (airline, day) sums (an Arrow IPC stream) and the input's error ("" for none). The Spark
# schema is made from this one (``spark_engine``).
TASK_SCHEMA = pa.schema(
    [
        ("unit", pa.int64()),
        ("scored", pa.string()),
        ("rejects", pa.string()),
        ("rows", pa.int64()),
        ("scored_rows", pa.int64()),
        ("flagged", pa.int64()),
        ("rejected", pa.string()),
        ("groups", pa.binary()),
        ("error", pa.string()),
    ]
)


class _StagedFile:
    """One Arrow IPC file a task writes batch by batch (lz4), opened on the first batch."""

    def __init__(self, filesystem, path: str) -> None:
        self.filesystem, self.path = filesystem, path
        self.stream = self.writer = self.schema = None

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.stream = self.filesystem.open_output_stream(self.path)
            self.schema = table.schema
            options = pa.ipc.IpcWriteOptions(compression="lz4")
            self.writer = pa.ipc.new_file(self.stream, self.schema, options=options)
        self.writer.write_table(table.cast(self.schema))

    def close(self) -> str:
        """Finish the file; its path, or "" when nothing was written."""
        if self.writer is None:
            return ""
        try:
            self.writer.close()
        finally:
            self.stream.close()
        return self.path


def _task_row(unit: int, written: dict[str, str], tally: Tally, error: str = "") -> pa.RecordBatch:
    """What a Spark task returns for one unit: its staged files, counts, (airline, day) sums, or input error."""
    groups = b""
    if tally.groups:
        sink = pa.BufferOutputStream()
        frame = pa.Table.from_pandas(pd.concat(tally.groups), preserve_index=False)
        with pa.ipc.new_stream(sink, frame.schema) as writer:
            writer.write_table(frame)
        groups = sink.getvalue().to_pybytes()
    row = {
        "unit": unit,
        **written,
        "rows": tally.rows,
        "scored_rows": tally.scored,
        "flagged": tally.flagged,
        "rejected": json.dumps(tally.rejected),
        "groups": groups,
        "error": error,
    }
    return pa.RecordBatch.from_pylist([row], schema=TASK_SCHEMA)


def spark_task_scorer(
    archive_path: str, staging: str, chunk_rows: int, units: list[dict]
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function: each task is a pandas engine worker that reads and writes its own rows.

    A task is given the numbers (an ``id`` column) of its units of work in ``units`` (a file's
    ``uri``, ``kind``, ``file_columns``, the ``columns`` to write, and ``row_groups``: a run of a
    Parquet file's, or None for all) and reads them with ``sources.read_batches``, as the pandas
    engine reads (``gs://`` included, through pyarrow). Each batch goes through ``score_batch``
    and ``split_batch``, the pandas engine's own functions; the task writes the scored rows and the
    rejects as Arrow IPC files under ``staging`` (a local folder, or ``gs://``) and returns one row
    per unit naming them, with its counts and sums, so no flight travels through the JVM. The model
    is loaded once per Python worker (MLflow's ``SparkModelCache``, as ``spark_udf`` does);
    ``archive_path`` is what ``SparkModelCache.add_local_model`` returned on the driver. A failed
    or repeated attempt writes files under its own names, and only the attempt Spark keeps is named
    in the result. A file the reader refuses (``ScoreInputError``, e.g. a row with the wrong number
    of fields past the first megabyte) is returned as the unit's ``error``, not raised: Spark
    would retry the task and wrap the message.
    """

    def run(numbers: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from mlflow.pyfunc.spark_model_cache import SparkModelCache
        from pyspark import TaskContext

        from skyprophet.batch.sources import filesystem_path, read_batches, with_columns

        model, _ = SparkModelCache.get_or_load(archive_path)
        attempt = TaskContext.get().attemptNumber()
        filesystem, folder = filesystem_path(staging)
        for number in (n for batch in numbers for n in batch.column("id").to_pylist()):
            unit = units[number]
            stem = f"{folder}/part-{number:05d}-{attempt}-{uuid.uuid4().hex[:8]}"
            files = {kind: _StagedFile(filesystem, f"{stem}.{kind}.arrow") for kind in ("scored", "rejects")}
            columns = unit["columns"]
            tables = read_batches(
                unit["uri"], unit["uri"], unit["kind"], unit["file_columns"], chunk_rows, unit["row_groups"]
            )
            tally, error = Tally(), ""
            try:
                for table in tables:
                    table = with_columns(table, columns)
                    part = score_batch(model, table.to_pandas())
                    tally.add(part)
                    for kind, rows in zip(("scored", "rejects"), split_batch(table, part), strict=True):
                        if rows.num_rows:
                            files[kind].write(rows)
            except ScoreInputError as err:  # the input's fault: the step refuses it (no retry would help)
                error = str(err)
            finally:
                written = {kind: file.close() for kind, file in files.items()}
            yield _task_row(number, written, tally, error)

    return run
