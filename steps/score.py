"""score: whole schedules -> delay odds per flight, on pandas (streamed batches, a worker process per core) or Spark.

Reads: ``data``, a CSV or Parquet schedule or a folder of them (a path, ``file://`` or ``gs://``),
and a ``flight-delay`` model version (``model_uri``, default the Production one).
Writes: ``output``, one Parquet file (a path or ``gs://`` URI): the input's flight columns of
``pyfunc.schema`` (``Fecha-I``, ``Vlo-I``, ``Emp-I``, ``Des-I``, … as given) plus ``delay_probability``,
``delay`` and ``unknown_fields`` (the fields whose value the model never saw, "" when none: such
flights are scored, the model parameter ``unknown_categories="score"``). Beside it,
``<output stem>.rejects.parquet``: the rows that are not valid flights, with ``reject_reason``
(``missing_Vlo-I``, ``unparsable_Fecha-I``, …) and ``reject_detail`` (the schema's own message).
What a valid flight is comes from ``pyfunc.schema.clean_columns`` alone: a batch it refuses is
split in halves until the refused rows are single (a clean batch costs one call).

One MLflow run: the input as a dataset (source, content digest), the model name and version,
counts (rows, scored, flagged, rejected by reason) and ``summary/`` (mean probability by airline
and by day). Above ``max_reject_fraction`` rejected rows the step fails (the rejects file is kept,
``output`` is not written). Nothing half-written is ever left at ``output``: a local file is
written under a temporary name and renamed, a ``gs://`` object is uploaded once complete.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from mlflow.exceptions import MlflowException

from pyfunc.schema import (
    MAX_BATCH_ROWS,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SCHEDULED_TIME,
    UNKNOWN_FIELDS,
    InvalidFlightsError,
    clean_columns,
    normalise_category,
    parse_times,
)
from skyprophet import config
from skyprophet.batch import report
from skyprophet.config import PROJECT_ROOT
from skyprophet.mlops import registry, tracking
from skyprophet.mlops.digest import ArtifactDigestError
from skyprophet.storage import DataSourceError, fetch, gcs_client, split_gs_uri

logger = logging.getLogger("skyprophet.score")
SCORE = config.DEFAULTS["score"]
ENGINES = ("pandas", "spark")
# The flight columns kept from the input (and handed to the model, in its signature's order).
FLIGHT_COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
AIRLINE = "Emp-I"
SCORE_COLUMNS = ("delay_probability", "delay", UNKNOWN_FIELDS)
SCORE_TYPES = {"delay_probability": pa.float64(), "delay": pa.int64(), UNKNOWN_FIELDS: pa.string()}
SPARK_RESULT_TYPE = "delay_probability double, delay long, unknown_fields string"
REJECT_REASON, REJECT_DETAIL = "reject_reason", "reject_detail"
# Calendar day of each valid flight (for the summary); never written to the output.
DAY = "_day"
MODEL_PARAMS = {"unknown_categories": "score"}
# pyfunc.model's XGBoost threads for a batch (not imported: importing the model file registers it).
BATCH_NTHREAD_ENV = "SKYPROPHET_BATCH_NTHREAD"
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# Reason slugs from the schema's problem texts (etl's names); anything else is invalid_<field>.
_REASON_KINDS = (
    ("null or empty", "missing"),
    ("expected a time", "unparsable"),
    ("year outside", "out_of_range"),
    ("expected", "wrong_type"),
)
_EXAMPLE_ROWS = re.compile(r"\s*\(row \d+: .*\)$", re.DOTALL)
_PLAIN_TIME = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"
PROGRESS_SECONDS = 10.0
SPARK_SPLIT_BYTES = 16 << 20
# Per-stage CPU seconds of the pandas engine (logged as seconds_<stage>; CPU rather than wall time,
# which on a shared machine mostly measures the others): reading batches and writing the scores in
# this process; scoring (validation, features, XGBoost, sums) summed over the workers.
STAGES = ("read", "score", "write")
CSV_BLOCK_BYTES = 8 << 20  # pyarrow's CSV read block: bounded memory, few calls
_EMPTY = "{name}: the file is empty; expected a header with " + ", ".join(REQUIRED_COLUMNS)


class ScoreInputError(ValueError):
    """The schedule or the output location cannot be used as given; the message names the file."""


class TooManyRejectsError(ValueError):
    """More rows than ``max_reject_fraction`` are not valid flights."""


@dataclass
class ScoreResult:
    """What a caller needs: the run, where the scores went and the counts."""

    run_id: str
    output: str
    rejects: str
    model_uri: str
    rows: int
    scored: int
    flagged: int
    rejected: dict[str, int]
    seconds: float

    @property
    def rejected_rows(self) -> int:
        """Rows that were not valid flights, every reason together."""
        return sum(self.rejected.values())


# ------------------------------------------------------------------ validity, one definition


def _reason(err: InvalidFlightsError) -> str:
    for prefix, kind in _REASON_KINDS:
        if err.problem.startswith(prefix):
            return f"{kind}_{err.field}"
    return f"invalid_{err.field}"


def reject_reasons(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per row: "" for a valid flight, else a reason slug; and the schema's message ("" when valid).

    ``clean_columns`` decides: a slice it refuses is halved until single rows are left, so a clean
    batch costs one call and ``k`` bad rows about ``k * log2(len(frame))`` calls on ever smaller slices.
    """
    reasons = np.full(len(frame), "", dtype=object)
    details = np.full(len(frame), "", dtype=object)
    columns = {c: frame[c] for c in FLIGHT_COLUMNS if c in frame.columns}
    frame = pd.DataFrame(columns).reset_index(drop=True)

    def visit(start: int, stop: int) -> None:
        try:
            clean_columns(frame.iloc[start:stop])
            return
        except InvalidFlightsError as err:
            if stop - start == 1:
                reasons[start] = _reason(err)
                details[start] = f"{err.field}: {_EXAMPLE_ROWS.sub('', err.problem)}"
                return
        middle = (start + stop) // 2
        visit(start, middle)
        visit(middle, stop)

    if len(frame):
        visit(0, len(frame))
    return reasons, details


def flight_days(times: pd.Series) -> np.ndarray:
    """``YYYY-MM-DD`` of valid scheduled times: the first ten characters of the plain form, else the schema's parser.

    The times are valid flights' (the schema accepted them), so a plain ``YYYY-MM-DD HH:MM:SS``
    is a real date and its day is its text; any other accepted form is parsed by ``parse_times``.
    """
    text = pa.array(times, from_pandas=True)
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        return np.asarray(_parsed_days(times.tolist()), dtype=object)
    plain = pc.match_substring_regex(text, _PLAIN_TIME).to_numpy(zero_copy_only=False)
    days = pc.utf8_slice_codeunits(text, 0, 10).to_numpy(zero_copy_only=False).astype(object)
    if not plain.all():
        rest = np.flatnonzero(~plain)
        days[rest] = _parsed_days(text.take(pa.array(rest)).to_pylist())
    return days


def _parsed_days(values: list) -> np.ndarray:
    return np.datetime_as_string(parse_times(values).astype("datetime64[D]"), unit="D").astype(object)


def annotate(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus ``reject_reason``, ``reject_detail`` and the day of each valid flight (Spark's first pass)."""
    reasons, details = reject_reasons(frame)
    days = np.full(len(frame), "", dtype=object)
    valid = reasons == ""
    if valid.any():
        days[valid] = flight_days(frame[SCHEDULED_TIME][valid])
    return frame.assign(**{REJECT_REASON: reasons, REJECT_DETAIL: details, DAY: days})


# ------------------------------------------------------------------ the summary


@dataclass
class Tally:
    """Counts and per (airline as given, day) sums, added up chunk by chunk (or from Spark's group-by)."""

    rows: int = 0
    scored: int = 0
    flagged: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    groups: list[pd.DataFrame] = field(default_factory=list)

    def add(self, part: BatchScores) -> None:
        """Add one batch's counts and per (airline, day) sums."""
        self.rows += part.rows
        self.scored += part.scored
        self.flagged += part.flagged
        for reason, n in part.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + n
        if len(part.groups):
            self.groups.append(part.groups)
        if len(self.groups) > 50:
            self.groups = [pd.concat(self.groups).groupby([AIRLINE, DAY], sort=False).sum().reset_index()]

    def summary(self) -> dict[str, pd.DataFrame]:
        """``by_airline`` (normalised as the model sees it) and ``by_day``: flights, mean probability, delay share."""
        columns = ["flights", "probability_sum", "delayed", "flagged"]
        groups = pd.concat(self.groups) if self.groups else pd.DataFrame(columns=[AIRLINE, DAY, *columns])
        groups = groups.assign(airline=normalise_category(groups[AIRLINE]).astype(object), day=groups[DAY])
        tables = {}
        for name, key in (("by_airline", "airline"), ("by_day", "day")):
            table = groups.groupby(key)[columns].sum().sort_index()
            table["flights"] = table["flights"].astype(np.int64)
            table["mean_delay_probability"] = table["probability_sum"] / table["flights"]
            table["delay_share"] = table["delayed"] / table["flights"]
            tables[name] = table[["flights", "mean_delay_probability", "delay_share", "flagged"]].reset_index()
        return tables


# ------------------------------------------------------------------ where the files are


def _is_gs(uri: str) -> bool:
    return urlparse(uri).scheme == "gs"


def _local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(uri)
    raise ScoreInputError(f"unsupported URI scheme {parsed.scheme!r} in {uri}; use a path, file:// or gs://")


def _kind(name: str) -> str | None:
    return SUFFIXES.get(Path(name).suffix.lower())


def list_inputs(data: str) -> list[str]:
    """The schedule files of ``data``: the file itself, or a folder's ``*.csv`` / ``*.parquet`` (sorted)."""
    if not data:
        raise ScoreInputError("no schedule given: pass data=<CSV or Parquet file or folder; path, file:// or gs://>")
    if _is_gs(data):
        bucket, name = split_gs_uri(data)
        try:
            client = gcs_client()
            if name and client.bucket(bucket).blob(name).exists():
                return [data]
            prefix = name.rstrip("/") + "/" if name else ""
            blobs = [b.name for b in client.list_blobs(bucket, prefix=prefix)]
        except Exception as err:  # the Google client raises many kinds; all mean "cannot read"
            raise ScoreInputError(f"cannot read {data}: {err.__class__.__name__}: {err}") from err
        files = sorted(f"gs://{bucket}/{b}" for b in blobs if _kind(b))
        if not files:
            raise ScoreInputError(f"{data}: no such object, nor a folder of .csv or .parquet files")
        return files
    path = _local_path(data)
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and _kind(p.name))
        if not files:
            raise ScoreInputError(f"{data}: folder without .csv or .parquet files")
        return files
    raise ScoreInputError(f"{data}: no such file or folder")


def rejects_uri(output: str) -> str:
    """Where the rejects go: ``scores.parquet`` -> ``scores.rejects.parquet``, beside the output."""
    if output.lower().endswith(".parquet"):
        return output[: -len(".parquet")] + ".rejects.parquet"
    return output + ".rejects.parquet"


def _exists(uri: str) -> bool:
    if _is_gs(uri):
        bucket, name = split_gs_uri(uri)
        return gcs_client().bucket(bucket).blob(name).exists()
    return _local_path(uri).exists()


def check_output(output: str, overwrite: bool) -> None:
    """Refuse an unusable output location, or one that exists unless ``overwrite``."""
    if not output:
        raise ScoreInputError("no output given: pass output=<Parquet path or gs:// URI>")
    for uri in (output, rejects_uri(output)):
        try:
            exists = _exists(uri)
        except ScoreInputError:
            raise
        except Exception as err:
            raise ScoreInputError(f"cannot check output {uri}: {err.__class__.__name__}: {err}") from err
        if exists and not overwrite:
            raise ScoreInputError(f"output {uri} exists; remove it or pass overwrite=true")
        if not _is_gs(uri) and _local_path(uri).is_dir():
            raise ScoreInputError(f"output {uri} is a folder; give a Parquet file path")
    if not _is_gs(output) and not _local_path(output).parent.is_dir():
        raise ScoreInputError(f"output {output}: folder {_local_path(output).parent} does not exist")


def publish(local: Path, uri: str) -> None:
    """Move a finished local file to ``uri`` in one step (rename, or one upload)."""
    if _is_gs(uri):
        bucket, name = split_gs_uri(uri)
        gcs_client().bucket(bucket).blob(name).upload_from_filename(str(local))
        local.unlink()
    else:
        os.replace(local, _local_path(uri))


def staging_path(uri: str, workdir: Path) -> Path:
    """A temporary local name for ``uri``: beside it (same file system, so the rename is atomic) or in ``workdir``."""
    if _is_gs(uri):
        return workdir / f"{uuid.uuid4().hex}.parquet"
    final = _local_path(uri)
    return final.with_name(f".{final.name}.partial-{uuid.uuid4().hex}")


def local_copy(uri: str, workdir: Path) -> Path:
    """A local path for ``uri`` (a ``gs://`` object is downloaded into ``workdir``)."""
    if not _is_gs(uri):
        return _local_path(uri)
    try:
        return fetch(uri, workdir / "input" / uuid.uuid4().hex / Path(split_gs_uri(uri)[1]).name)
    except DataSourceError as err:
        raise ScoreInputError(str(err)) from err


def file_digest(uri: str) -> str:
    """The bytes' digest of one file: sha256 of a local file, the md5 GCS keeps of an object (hex)."""
    if _is_gs(uri):
        bucket, name = split_gs_uri(uri)
        blob = gcs_client().bucket(bucket).get_blob(name)
        if blob is None or not (blob.md5_hash or blob.crc32c):
            return ""
        return base64.b64decode(blob.md5_hash or blob.crc32c).hex()
    sha = hashlib.sha256()
    with open(_local_path(uri), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def content_digest(data: str, uris: list[str]) -> str:
    """32 hex characters of the schedule's bytes: one file's digest, or a folder's (names relative to it)."""
    if len(uris) == 1:
        return file_digest(uris[0])[:32]
    root = data.rstrip("/") + "/"
    total = hashlib.sha256()
    for uri in uris:
        relative = uri[len(root) :] if uri.startswith(root) else Path(uri).name
        total.update(f"{relative}\0{file_digest(uri)}\n".encode())
    return total.hexdigest()[:32]


# ------------------------------------------------------------------ reading, checked


def check_columns(columns: list[str], name: str) -> list[str]:
    """The flight columns present, in the signature's order; refuses a file missing a required one."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ScoreInputError(f"{name}: required column(s) {missing} missing; the file has {list(columns)}")
    return [c for c in FLIGHT_COLUMNS if c in columns]


def _read_csv(path: Path, name: str, **kwargs) -> pd.DataFrame | Iterator[pd.DataFrame]:
    options = {"dtype": str, "keep_default_na": False, "na_values": [], "encoding": "utf-8"}
    try:
        return pd.read_csv(path, **options, **kwargs)
    except pd.errors.EmptyDataError as err:
        raise ScoreInputError(f"{name}: the file is empty; expected a header with {list(REQUIRED_COLUMNS)}") from err
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise ScoreInputError(f"{name}: cannot read as CSV: {err}") from err


def file_columns(path: Path, name: str) -> tuple[str, list[str], int | None]:
    """(kind, flight columns, rows if known) of one schedule file; refuses unreadable, empty or incomplete files."""
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ScoreInputError(f"{name}: cannot read: {err.strerror or err}") from err
    if size == 0:
        raise ScoreInputError(f"{name}: the file is empty; expected a header with {list(REQUIRED_COLUMNS)}")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    kind = _kind(name) or ("parquet" if magic == b"PAR1" else "csv")
    if kind == "parquet":
        try:
            metadata = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as err:
            raise ScoreInputError(f"{name}: cannot read as Parquet: {err}") from err
        columns, rows = check_columns(metadata.schema_arrow.names, name), metadata.metadata.num_rows
    else:
        header = _read_csv(path, name, nrows=0)
        columns, rows = check_columns(list(header.columns), name), None
        if _read_csv(path, name, nrows=1, usecols=[columns[0]]).empty:
            rows = 0
    if rows == 0:
        raise ScoreInputError(f"{name}: no flights (a header without rows)")
    return kind, columns, rows


def read_batches(path: Path, name: str, kind: str, columns: list[str], chunk_rows: int) -> Iterator[pa.Table]:
    """The flight columns of one file, ``chunk_rows`` at a time (Arrow, streamed: a few batches in memory).

    CSV is read by pyarrow with every value as text and an empty field as "" (what pandas'
    ``dtype=str, keep_default_na=False`` gives); a row with the wrong number of fields stops the
    step naming it (pandas filled it with nulls). Parquet columns keep their types.
    """
    try:
        if kind == "parquet":
            batches = pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=columns)
        else:
            batches = pcsv.open_csv(
                path,
                read_options=pcsv.ReadOptions(encoding="utf8", block_size=CSV_BLOCK_BYTES),
                parse_options=pcsv.ParseOptions(newlines_in_values=True),  # quoted line breaks, as pandas reads them
                convert_options=pcsv.ConvertOptions(
                    include_columns=columns,
                    column_types=dict.fromkeys(columns, pa.large_string()),
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        yield from rebatch(batches, chunk_rows)
    except (pa.ArrowException, UnicodeDecodeError, OSError) as err:
        raise ScoreInputError(f"{name}: cannot read: {err}") from err


def rebatch(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``rows`` rows (the last one fewer) from batches of any size."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows).combine_chunks()
            rest = table.slice(rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending).combine_chunks()


# ------------------------------------------------------------------ the model


def resolve_model(model_uri: str) -> tuple[str, str, str]:
    """(URI of one version, model name, version): aliases and stages pinned to the version they name now."""
    if not model_uri.startswith("models:/"):
        return model_uri, "", ""
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    try:
        name, version = get_model_name_and_version(mlflow.MlflowClient(), model_uri)
    except (MlflowException, ValueError) as err:
        raise ScoreInputError(
            f"model {model_uri} not found in {tracking.tracking_uri()}: {err}; train one with `make pipeline`"
        ) from err
    return f"models:/{name}/{version}", name, str(version)


def _predict(model, frame: pd.DataFrame) -> pd.DataFrame:
    return model.predict(frame, params=MODEL_PARAMS)


# ------------------------------------------------------------------ engine: pandas


class ParquetSink:
    """One Parquet file written batch by batch under a temporary name; ``publish`` moves it into place."""

    def __init__(self, uri: str, workdir: Path) -> None:
        self.uri = uri
        self.path = staging_path(uri, workdir)
        self.writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table | pd.DataFrame) -> None:
        """Append rows (the first batch fixes the schema; later ones are cast to it)."""
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema.remove_metadata())
        if table.schema != self.writer.schema:
            table = table.cast(self.writer.schema)
        self.writer.write_table(table)

    def close(self, empty: pd.DataFrame) -> None:
        """Finish the file (``empty``, the columns' shape, when nothing was written)."""
        if self.writer is None:
            self.write(empty)
        self.writer.close()

    def publish(self) -> None:
        """Move the finished file to its URI."""
        publish(self.path, self.uri)

    def discard(self) -> None:
        """Drop the temporary file."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        self.path.unlink(missing_ok=True)


def _empty(columns: list[str], extra: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series([], dtype=str) for c in columns})
    for column, dtype in extra.items():
        frame[column] = pd.Series([], dtype=dtype)
    return frame


class Progress:
    """A log line every PROGRESS_SECONDS: flights done, rate and, where known, the share of the total."""

    def __init__(self, total: int | None) -> None:
        self.total, self.done, self.start, self.last = total, 0, time.monotonic(), time.monotonic()

    def update(self, rows: int) -> None:
        """Count ``rows`` more; log when due."""
        self.done += rows
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            share = f" ({self.done / self.total:.0%})" if self.total else ""
            logger.info("scored %d rows%s, %.0f rows/s", self.done, share, rate)


@dataclass
class BatchScores:
    """What scoring one batch gives, small enough to send back from a worker process.

    ``valid``: None when every row is a flight, else a mask; ``reasons`` and ``details`` are the
    rejected rows' (in order); ``scores`` the valid rows' ``SCORE_COLUMNS``; ``groups`` the
    batch's per (airline as given, day) sums for the summary.
    """

    rows: int
    valid: np.ndarray | None
    reasons: np.ndarray
    details: np.ndarray
    scores: dict[str, np.ndarray]
    groups: pd.DataFrame
    rejected: dict[str, int]
    seconds: float = 0.0  # CPU seconds of validation, features, prediction and the sums (where it scored)

    @property
    def scored(self) -> int:
        """Flights scored."""
        return len(self.scores["delay"])

    @property
    def flagged(self) -> int:
        """Flights scored with a value the model never saw."""
        return int((self.scores[UNKNOWN_FIELDS] != "").sum())


def _groups(airlines: pd.Series, days: np.ndarray, scores: dict[str, np.ndarray], flagged: np.ndarray) -> pd.DataFrame:
    """Per (airline as given, day): flights, probability sum, delayed and flagged flights (Arrow's group-by)."""
    table = pa.table(
        {
            AIRLINE: pa.array(airlines, from_pandas=True),
            DAY: pa.array(days, type=pa.string()),
            "probability_sum": scores["delay_probability"],
            "delayed": scores["delay"],
            "flagged": flagged.astype(np.int64),
        }
    )
    sums = table.group_by([AIRLINE, DAY]).aggregate(
        [("probability_sum", "count"), ("probability_sum", "sum"), ("delayed", "sum"), ("flagged", "sum")]
    )
    frame = sums.to_pandas().rename(
        columns={
            "probability_sum_count": "flights",
            "probability_sum_sum": "probability_sum",
            "delayed_sum": "delayed",
            "flagged_sum": "flagged",
        }
    )
    return frame[[AIRLINE, DAY, "flights", "probability_sum", "delayed", "flagged"]].astype({AIRLINE: object})


def score_batch(model, chunk: pd.DataFrame) -> BatchScores:
    """Score one batch; the model validates, bad rows are looked for only when it refuses."""
    started = time.process_time()
    chunk = chunk.reset_index(drop=True)
    valid = None
    reasons = details = np.array([], dtype=object)
    try:
        predicted = _predict(model, chunk)
    except MlflowException as refused:
        found, why = reject_reasons(chunk)
        mask = found == ""
        if mask.all():
            # Refused for something that is not one flight's fault; as a plain MlflowException,
            # which pickles from a worker process (the schema's error type does not).
            raise MlflowException(refused.message) from None
        valid, reasons, details = mask, found[~mask], why[~mask]
        chunk = chunk[mask].reset_index(drop=True)
        predicted = _predict(model, chunk) if len(chunk) else _empty([], {c: "float64" for c in SCORE_COLUMNS})
    scores = {
        "delay_probability": predicted["delay_probability"].to_numpy(np.float64),
        "delay": predicted["delay"].to_numpy(np.int64),
        UNKNOWN_FIELDS: predicted[UNKNOWN_FIELDS].to_numpy(dtype=object),
    }
    flagged = scores[UNKNOWN_FIELDS] != ""
    groups = (
        _groups(chunk[AIRLINE], flight_days(chunk[SCHEDULED_TIME]), scores, flagged) if len(chunk) else pd.DataFrame()
    )
    rejected = pd.Series(reasons, dtype=object).value_counts().to_dict()
    rows = len(chunk) if valid is None else len(valid)
    counts = {r: int(n) for r, n in rejected.items()}
    return BatchScores(rows, valid, reasons, details, scores, groups, counts, time.process_time() - started)


def split_batch(table: pa.Table, part: BatchScores) -> tuple[pa.Table, pa.Table]:
    """(scored flights: the valid rows plus their scores, rejected rows plus reason and detail) of one batch."""
    scored = table if part.valid is None else table.filter(pa.array(part.valid))
    for column in SCORE_COLUMNS:
        scored = scored.append_column(column, pa.array(part.scores[column], type=SCORE_TYPES[column]))
    rejects = table.slice(0, 0) if part.valid is None else table.filter(pa.array(~part.valid))
    rejects = rejects.append_column(REJECT_REASON, pa.array(part.reasons, type=pa.string()))
    rejects = rejects.append_column(REJECT_DETAIL, pa.array(part.details, type=pa.string()))
    return scored, rejects


# The model the worker processes score with: loaded here before they are forked, so they share it.
_WORKER: dict = {}


def _score_in_worker(table: pa.Table) -> BatchScores:
    return score_batch(_WORKER["model"], table.to_pandas())


def _load_model(uri: str, batch_threads: int | None = None):
    """The pyfunc model; ``batch_threads`` sets its XGBoost threads for batches (read when it loads)."""
    import mlflow.pyfunc

    before = os.environ.get(BATCH_NTHREAD_ENV)
    if batch_threads is not None:
        os.environ[BATCH_NTHREAD_ENV] = str(batch_threads)
    try:
        return mlflow.pyfunc.load_model(uri)
    finally:
        if before is None:
            os.environ.pop(BATCH_NTHREAD_ENV, None)
        else:
            os.environ[BATCH_NTHREAD_ENV] = before


def score_workers(total: int | None, chunk_rows: int) -> int:
    """Worker processes for the pandas engine: one per core, none (this process) for a single batch."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < 2 or (total is not None and total <= chunk_rows):
        return 0
    return cores


def score_pandas(uris: list[str], output: ParquetSink, rejects: ParquetSink, chunk_rows: int, workdir: Path):
    """Score every file batch by batch, streamed: memory is a few batches, whatever the size.

    This process reads each batch (pyarrow) and writes the scores in input order (ParquetWriter);
    one worker process per core validates, builds features and predicts (XGBoost on one thread
    each), forked once the model is loaded here (they share it). At most two batches per worker
    are in flight. A single batch is scored here. Returns the tally and the flight columns;
    gs:// files are downloaded to ``workdir`` first.
    """
    checked = []
    for uri in uris:
        path = local_copy(uri, workdir)
        checked.append((uri, path, *file_columns(path, uri)))
    columns = [c for c in FLIGHT_COLUMNS if any(c in cols for *_, cols, _ in checked)]
    known = [rows for *_, rows in checked]
    total = sum(known) if None not in known else None
    workers = score_workers(total, chunk_rows)
    # With workers, one XGBoost thread each: the workers already use every core.
    model = _load_model(_MODEL["uri"], batch_threads=1 if workers else None)
    progress = Progress(total)
    tally = Tally()
    stages = dict.fromkeys(STAGES, 0.0)

    def batches() -> Iterator[pa.Table]:
        for name, path, kind, file_cols, _ in checked:
            logger.info("read: %s (%s)", name, kind)
            tables = read_batches(path, name, kind, file_cols, chunk_rows)
            while True:
                started = time.process_time()
                table = next(tables, None)
                if table is None:
                    break
                for column in columns:
                    if column not in table.column_names:
                        table = table.append_column(column, pa.array([""] * table.num_rows, type=pa.large_string()))
                stages["read"] += time.process_time() - started
                yield table.select(columns)

    def finish(table: pa.Table, part: BatchScores) -> None:
        started = time.process_time()
        tally.add(part)
        scored, rejected = split_batch(table, part)
        if scored.num_rows:
            output.write(scored)
        if rejected.num_rows:
            rejects.write(rejected)
        progress.update(table.num_rows)
        stages["score"] += part.seconds
        stages["write"] += time.process_time() - started

    if workers:
        logger.info("score: %d worker processes, %d flights a batch", workers, chunk_rows)
        _WORKER["model"] = model
        # A worker that dies (killed for memory) fails the step with BrokenProcessPool, not a hang.
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        try:
            pending: collections.deque = collections.deque()
            for table in batches():
                pending.append((table, pool.submit(_score_in_worker, table)))
                if len(pending) >= 2 * workers:
                    finish(pending[0][0], pending.popleft()[1].result())
            while pending:
                finish(pending[0][0], pending.popleft()[1].result())
        finally:
            pool.shutdown(cancel_futures=True)
            _WORKER.clear()
    else:
        for table in batches():
            finish(table, score_batch(model, table.to_pandas()))
    started = time.process_time()
    output.close(_empty(columns, {"delay_probability": "float64", "delay": "int64", UNKNOWN_FIELDS: "str"}))
    rejects.close(_empty(columns, {REJECT_REASON: "str", REJECT_DETAIL: "str"}))
    stages["write"] += time.process_time() - started
    logger.info("stages: %s", json.dumps({k: round(v, 2) for k, v in stages.items()} | {"workers": workers}))
    mlflow.log_metrics({f"seconds_{stage}": value for stage, value in stages.items()} | {"score_workers": workers})
    return tally, columns


# The model version a run scores with (set by ``run``; the engines read it).
_MODEL: dict[str, str] = {}


# ------------------------------------------------------------------ engine: spark


def code_archive(workdir: Path) -> Path:
    """``steps/`` and ``pyfunc/`` zipped for the Spark workers (``SparkContext.addPyFile``)."""
    archive = workdir / "skyprophet-code.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for package in ("steps", "pyfunc"):
            for source in sorted((PROJECT_ROOT / package).glob("*.py")):
                handle.write(source, f"{package}/{source.name}")
    return archive


def spark_session(master: str, chunk_rows: int):
    """A SparkSession on ``master`` whose Python workers run this interpreter (``PYSPARK_PYTHON``)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # One XGBoost thread per Spark task: the tasks already use every core.
    os.environ.setdefault("SKYPROPHET_BATCH_NTHREAD", "1")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("skyprophet-score")
    if master:
        builder = builder.master(master)
    for key, value in {
        "spark.ui.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(chunk_rows),
        "spark.sql.shuffle.partitions": "8",
        # Files split into tasks of at most 16 MB (Parquet at row-group bounds): one file gives
        # every core a task without a shuffle.
        "spark.sql.files.maxPartitionBytes": str(SPARK_SPLIT_BYTES),
        "spark.executorEnv.SKYPROPHET_BATCH_NTHREAD": "1",
        "spark.executorEnv.PYSPARK_PYTHON": os.environ["PYSPARK_PYTHON"],
    }.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _has_gs_connector(spark) -> bool:
    try:
        spark._jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass("gs", spark._jsc.hadoopConfiguration())
        return True
    except Exception:
        return False


def _spark_read(spark, uri: str, kind: str):
    if kind == "parquet":
        return spark.read.parquet(uri)
    # Every value as text, an empty field as "" (pandas' dtype=str, keep_default_na=False): Spark
    # reads an empty unquoted field as null whatever its options say, so nulls become "".
    frame = (
        spark.read.option("header", True)
        .option("inferSchema", False)
        .option("mode", "FAILFAST")
        .option("encoding", "UTF-8")
        .csv(uri)
    )
    return frame.na.fill("")


def _spark_file(spark, uri: str, name: str):
    """One file as a Spark DataFrame of its flight columns; the same refusals as the pandas engine."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    kind = _kind(name) or "csv"
    try:
        frame = _spark_read(spark, uri, kind)
        columns = frame.columns
    except (PySparkException, Py4JJavaError) as err:
        text = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        if "UNABLE_TO_INFER_SCHEMA" in str(err) or not text:
            raise ScoreInputError(
                f"{name}: the file is empty; expected a header with {list(REQUIRED_COLUMNS)}"
            ) from err
        raise ScoreInputError(f"{name}: cannot read: {text}") from err
    if not columns:
        raise ScoreInputError(_EMPTY.format(name=name))
    columns = check_columns(columns, name)
    frame = frame.select(*columns)
    if frame.limit(1).count() == 0:
        raise ScoreInputError(f"{name}: no flights (a header without rows)")
    return frame


def _write_single(spark, frame, uri: str, workdir: Path) -> None:
    """Write ``frame`` as one Parquet file at ``uri``: Spark writes a staging folder, its one part is moved.

    ``frame`` is persisted, so ``coalesce(1)`` reads its blocks in one task without a shuffle.

    The staging folder is local (then renamed, or uploaded to gs://) unless Spark writes gs:// itself
    (the GCS connector, as on Dataproc): then it sits beside ``uri`` and the part is renamed there.
    """
    if _is_gs(uri) and _has_gs_connector(spark):
        jvm, conf = spark._jvm, spark._jsc.hadoopConfiguration()
        staging = f"{uri}.partial-{uuid.uuid4().hex}"
        frame.coalesce(1).write.parquet(staging)
        folder = jvm.org.apache.hadoop.fs.Path(staging)
        filesystem = folder.getFileSystem(conf)
        part = next(s.getPath() for s in filesystem.listStatus(folder) if s.getPath().getName().startswith("part-"))
        target = jvm.org.apache.hadoop.fs.Path(uri)
        if filesystem.exists(target):
            filesystem.delete(target, False)
        if not filesystem.rename(part, target):
            raise OSError(f"could not move {part} to {uri}")
        filesystem.delete(folder, True)
        return
    staging = workdir / f"spark-{uuid.uuid4().hex}"
    frame.coalesce(1).write.parquet(staging.as_uri())
    part = next(staging.glob("part-*.parquet"))
    if not _is_gs(uri):  # beside the output first: a rename across file systems is not atomic
        local = staging_path(uri, workdir)
        shutil.move(part, local)
        part = local
    publish(part, uri)
    shutil.rmtree(staging, ignore_errors=True)


def _stage_for_spark(spark, uris: list[str], workdir: Path) -> list[tuple[str, str]]:
    """(name, URI Spark reads) per file: gs:// as is where Spark has the GCS connector, else downloaded."""
    direct = _has_gs_connector(spark)
    return [(u, u if (_is_gs(u) and direct) else local_copy(u, workdir).resolve().as_uri()) for u in uris]


def score_spark(
    uris: list[str], rejects: str, master: str, chunk_rows: int, workdir: Path
) -> tuple[Tally, list[str], Callable[[str], None], Callable[[], None]]:
    """Score with ``mlflow.pyfunc.spark_udf`` on a SparkSession: a first pass finds the rejects, the UDF scores.

    Writes the rejects; returns the tally, the flight columns, a function writing the scores to
    an output URI and one stopping the session.
    """
    import mlflow.pyfunc
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spark = spark_session(master, chunk_rows)
    try:
        spark.sparkContext.addPyFile(str(code_archive(workdir)))
        frames = [_spark_file(spark, uri, name) for name, uri in _stage_for_spark(spark, uris, workdir)]
        raw = frames[0]
        for other in frames[1:]:
            raw = raw.unionByName(other, allowMissingColumns=True)
        columns = [c for c in FLIGHT_COLUMNS if c in raw.columns]
        raw = raw.select(*columns).na.fill("", subset=[c for c in columns if c not in REQUIRED_COLUMNS])
        parallelism = spark.sparkContext.defaultParallelism
        if raw.rdd.getNumPartitions() < parallelism:
            raw = raw.repartition(parallelism)
        schema = T.StructType(
            [*raw.schema.fields]
            + [T.StructField(c, T.StringType(), False) for c in (REJECT_REASON, REJECT_DETAIL, DAY)]
        )
        annotated = raw.mapInPandas(_annotate_batches, schema=schema).persist(StorageLevel.MEMORY_AND_DISK)
        udf = mlflow.pyfunc.spark_udf(
            spark,
            _MODEL["uri"],
            result_type=SPARK_RESULT_TYPE,
            env_manager="local",
            params=MODEL_PARAMS,
            extra_env={"SKYPROPHET_BATCH_NTHREAD": "1"},
        )
        scored = (
            annotated.filter(F.col(REJECT_REASON) == "")
            .select(*columns, DAY, udf(F.struct(*columns)).alias("_score"))
            .select(*columns, *(F.col(f"_score.{c}").alias(c) for c in SCORE_COLUMNS), DAY)
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        tally = Tally()
        reasons = annotated.groupBy(REJECT_REASON).count().toPandas()
        tally.rows = int(reasons["count"].sum())
        tally.rejected = {r: int(n) for r, n in zip(reasons[REJECT_REASON], reasons["count"], strict=True) if r}
        groups = (
            scored.groupBy(AIRLINE, DAY)
            .agg(
                F.count(F.lit(1)).alias("flights"),
                F.sum("delay_probability").alias("probability_sum"),
                F.sum("delay").alias("delayed"),
                F.sum((F.col(UNKNOWN_FIELDS) != "").cast("long")).alias("flagged"),
            )
            .toPandas()
        )
        tally.scored, tally.flagged = int(groups["flights"].sum()), int(groups["flagged"].sum())
        tally.groups = [groups]
        _write_single(spark, annotated.filter(F.col(REJECT_REASON) != "").drop(DAY), rejects, workdir)
    except Exception:
        spark.stop()
        raise
    return tally, columns, lambda uri: _write_single(spark, scored.drop(DAY), uri, workdir), spark.stop


def _annotate_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        yield annotate(batch)


# ------------------------------------------------------------------ the step


def log_dataset(data: str, uris: list[str], columns: list[str]) -> str:
    """The schedule as the run's input dataset (its source URI, a digest of the files' bytes, the flight columns)."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    local = not _is_gs(data)
    digest = content_digest(str(_local_path(data)) if local else data, uris)
    source = tracking.dataset_source(str(_local_path(data).resolve()) if local else data)
    name = Path(urlparse(data).path.rstrip("/")).name or "schedule"
    schema = Schema([ColSpec("string", c) for c in columns])
    mlflow.log_input(MetaDataset(source=source, name=name, digest=digest, schema=schema), context="scoring")
    return digest


def _log_summary(tally: Tally, counts: dict, workdir: Path) -> None:
    folder = workdir / "summary"
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tally.summary().items():
        table.to_csv(folder / f"{name}.csv", index=False, float_format="%.6f")
    (folder / "counts.json").write_text(json.dumps(counts, indent=1), encoding="utf-8")
    mlflow.log_artifacts(str(folder), "summary")


def run(
    data: str = SCORE["data"],
    output: str = SCORE["output"],
    model_uri: str = SCORE["model_uri"],
    engine: str = SCORE["engine"],
    spark_master: str = SCORE["spark_master"],
    chunk_rows: int = SCORE["chunk_rows"],
    max_reject_fraction: float = SCORE["max_reject_fraction"],
    overwrite: bool = SCORE["overwrite"],
) -> ScoreResult:
    """Score ``data`` with ``model_uri`` into ``output`` inside one MLflow run (see the module docstring)."""
    if engine not in ENGINES:
        raise ScoreInputError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if not 1 <= chunk_rows <= MAX_BATCH_ROWS:
        raise ScoreInputError(f"chunk_rows {chunk_rows}: expected 1 to {MAX_BATCH_ROWS} (the model's batch limit)")
    overwrite = config.parse_bool(overwrite) if not isinstance(overwrite, bool) else overwrite
    started = time.monotonic()
    with tracking.step_run("score") as active, tempfile.TemporaryDirectory(prefix="skyprophet-score-") as tmp:
        workdir = Path(tmp)
        tracking.log_params(
            {
                "data": data,
                "output": output,
                "model_uri": model_uri,
                "engine": engine,
                "spark_master": spark_master,
                "chunk_rows": chunk_rows,
                "max_reject_fraction": max_reject_fraction,
                "overwrite": overwrite,
            }
        )
        uri, name, version = resolve_model(model_uri)
        _MODEL["uri"] = registry.verified_copy(uri, workdir / "model")  # Production: refused if changed since accepted
        mlflow.set_tags(
            {"skyprophet.model_uri": uri, "skyprophet.model_name": name, "skyprophet.model_version": version}
        )
        check_output(output, overwrite)
        rejects = rejects_uri(output)
        uris = list_inputs(data)
        logger.info("score: %d file(s) from %s with %s on %s", len(uris), data, uri, engine)
        sinks = (ParquetSink(output, workdir), ParquetSink(rejects, workdir))
        stop = None
        try:
            if engine == "pandas":
                tally, columns = score_pandas(uris, *sinks, chunk_rows, workdir)
                sinks[1].publish()
                write_output = lambda _uri: sinks[0].publish()  # noqa: E731
            else:
                tally, columns, write_output, stop = score_spark(uris, rejects, spark_master, chunk_rows, workdir)
            digest = log_dataset(data, uris, columns)
            rejected = sum(tally.rejected.values())
            counts = {
                "rows": tally.rows,
                "scored": tally.scored,
                "flagged": tally.flagged,
                "rejected": rejected,
                "rejected_by_reason": dict(sorted(tally.rejected.items())),
                "model_uri": uri,
                "dataset_digest": digest,
            }
            mlflow.log_metrics(
                {"rows": tally.rows, "scored_rows": tally.scored, "flagged_rows": tally.flagged}
                | {"rejected_rows": rejected}
                | {f"rejected_{reason}": n for reason, n in tally.rejected.items()}
            )
            _log_summary(tally, counts, workdir)
            if rejected:
                logger.info("rejects: %d rows %s -> %s", rejected, counts["rejected_by_reason"], rejects)
            if rejected > max_reject_fraction * tally.rows:
                raise TooManyRejectsError(
                    f"{data}: {rejected} of {tally.rows} rows are not valid flights "
                    f"(limit {max_reject_fraction:.1%}): {counts['rejected_by_reason']}; see {rejects}"
                )
            write_output(output)
            report.write_and_log(output, data, counts, workdir, name, version)
        finally:
            for sink in sinks:
                sink.discard()
            if stop is not None:
                stop()
        seconds = time.monotonic() - started
        mlflow.log_metrics({"seconds": seconds, "flights_per_second": tally.rows / max(seconds, 1e-9)})
        logger.info(
            "done: %d rows, %d scored (%d flagged), %d rejected in %.1f s -> %s",
            tally.rows,
            tally.scored,
            tally.flagged,
            rejected,
            seconds,
            output,
        )
        return ScoreResult(
            active.info.run_id, output, rejects, uri, tally.rows, tally.scored, tally.flagged, tally.rejected, seconds
        )


def main(argv: list[str] | None = None, exit: Callable[[int], None] = sys.exit) -> None:
    """CLI: ``python -m steps.score --data schedule.csv --output scores.parquet [--engine spark]``."""
    parser = config.argument_parser("score", __doc__)
    args = parser.parse_args(argv)
    tracking.setup_logging()
    try:
        run(**vars(args))
    except (ScoreInputError, TooManyRejectsError, ArtifactDigestError) as err:
        logger.error("score failed: %s", err)
        exit(2)


if __name__ == "__main__":
    main()
