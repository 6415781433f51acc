"""Where the schedules are and how they are read.

A path, ``file://`` or ``gs://`` URI (a file or a folder of ``*.csv`` / ``*.parquet``): its files
listed, downloaded when remote, their bytes' digest, and each file checked (the flight columns, not
empty) and streamed as Arrow batches of a fixed size.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from pyfunc.schema import REQUIRED_COLUMNS
from skyprophet.batch.contract import FLIGHT_COLUMNS, ScoreInputError
from skyprophet.storage import TEXT_CSV, DataSourceError, fetch, gcs_client, sha256_of, split_gs_uri

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
CSV_BLOCK_BYTES = 8 << 20  # pyarrow's CSV read block: bounded memory, few calls
EMPTY_FILE = "{name}: the file is empty; expected a header with " + ", ".join(REQUIRED_COLUMNS)


def is_gs(uri: str) -> bool:
    """Whether ``uri`` is a ``gs://`` object or prefix."""
    return urlparse(uri).scheme == "gs"


def local_path(uri: str) -> Path:
    """The local path of a path or ``file://`` URI; refuses any other scheme."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(uri)
    raise ScoreInputError(f"unsupported URI scheme {parsed.scheme!r} in {uri}; use a path, file:// or gs://")


def file_kind(name: str) -> str | None:
    """``csv`` or ``parquet`` by the name's suffix, None for any other."""
    return SUFFIXES.get(Path(name).suffix.lower())


def list_inputs(data: str) -> list[str]:
    """The schedule files of ``data``: the file itself, or a folder's ``*.csv`` / ``*.parquet`` (sorted)."""
    if not data:
        raise ScoreInputError("no schedule given: pass data=<CSV or Parquet file or folder; path, file:// or gs://>")
    if is_gs(data):
        bucket, name = split_gs_uri(data)
        try:
            client = gcs_client()
            if name and client.bucket(bucket).blob(name).exists():
                return [data]
            prefix = name.rstrip("/") + "/" if name else ""
            blobs = [b.name for b in client.list_blobs(bucket, prefix=prefix)]
        except Exception as err:  # the Google client raises many kinds; all mean "cannot read"
            raise ScoreInputError(f"cannot read {data}: {err.__class__.__name__}: {err}") from err
        files = sorted(f"gs://{bucket}/{b}" for b in blobs if file_kind(b))
        if not files:
            raise ScoreInputError(f"{data}: no such object, nor a folder of .csv or .parquet files")
        return files
    path = local_path(data)
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and file_kind(p.name))
        if not files:
            raise ScoreInputError(f"{data}: folder without .csv or .parquet files")
        return files
    raise ScoreInputError(f"{data}: no such file or folder")


def local_copy(uri: str, workdir: Path) -> Path:
    """A local path for ``uri`` (a ``gs://`` object is downloaded into ``workdir``)."""
    if not is_gs(uri):
        return local_path(uri)
    try:
        return fetch(uri, workdir / "input" / uuid.uuid4().hex / Path(split_gs_uri(uri)[1]).name)
    except DataSourceError as err:
        raise ScoreInputError(str(err)) from err


def file_digest(uri: str) -> str:
    """The bytes' digest of one file: sha256 of a local file, the md5 GCS keeps of an object (hex)."""
    if is_gs(uri):
        bucket, name = split_gs_uri(uri)
        blob = gcs_client().bucket(bucket).get_blob(name)
        if blob is None or not (blob.md5_hash or blob.crc32c):
            return ""
        return base64.b64decode(blob.md5_hash or blob.crc32c).hex()
    return sha256_of(local_path(uri))


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


def check_columns(columns: list[str], name: str) -> list[str]:
    """The flight columns present, in the signature's order; refuses a file missing a required one."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ScoreInputError(f"{name}: required column(s) {missing} missing; the file has {list(columns)}")
    return [c for c in FLIGHT_COLUMNS if c in columns]


def _read_csv(path: Path, name: str, **kwargs) -> pd.DataFrame | Iterator[pd.DataFrame]:
    try:
        return pd.read_csv(path, **TEXT_CSV, **kwargs)
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
    kind = file_kind(name) or ("parquet" if magic == b"PAR1" else "csv")
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
