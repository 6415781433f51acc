"""Where the schedules are and how they are read: pyarrow's file systems, local or ``gs://``.

A path, ``file://`` or ``gs://`` URI (a file or a folder of ``*.csv`` / ``*.parquet``): pyarrow's
``LocalFileSystem`` or ``GcsFileSystem`` lists it and streams each file from where it is (nothing
is downloaded first), checked (the flight columns, not empty) and read as Arrow batches of a
fixed size. Hidden and marker files in a folder (a name under it starting with ``.`` or ``_``,
such as ``_SUCCESS`` or a ``.partial`` upload) are skipped, as pyarrow datasets and Spark skip
them. The folder's digest is of its files' bytes (sha256 locally; the md5 GCS keeps of an object).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pyfunc.schema import REQUIRED_COLUMNS
from skyprophet.batch.contract import FLIGHT_COLUMNS, ScoreInputError
from skyprophet.storage import gcs_client, gcs_filesystem, sha256_of, split_gs_uri

logger = logging.getLogger("skyprophet.score")

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
CSV_BLOCK_BYTES = 8 << 20  # pyarrow's CSV read block: bounded memory, few calls
CSV_HEADER_BYTES = 1 << 20  # what is read of a CSV to check its header and first row
IGNORED_PREFIXES = (".", "_")  # hidden and marker files in a folder
EMPTY_FILE = "{name}: the file is empty; expected a header with " + ", ".join(REQUIRED_COLUMNS)
# What pyarrow raises for a file it cannot open or read (OSError covers its I/O and GCS errors).
READ_ERRORS = (pa.ArrowException, OSError, UnicodeDecodeError)


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


def filesystem_path(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system for ``uri`` and the path in it (``bucket/name`` on GCS)."""
    if is_gs(uri):
        bucket, name = split_gs_uri(uri)
        return gcs_filesystem(), f"{bucket}/{name}".rstrip("/")
    return pafs.LocalFileSystem(), str(local_path(uri))


def _ignored(path: str, folder: str) -> bool:
    parts = Path(path[len(folder) :].lstrip("/")).parts if path.startswith(folder) else (Path(path).name,)
    return any(part.startswith(IGNORED_PREFIXES) for part in parts)


def list_inputs(data: str, leave_out: Iterable[str] = ()) -> list[str]:
    """The schedule files of ``data``: the file itself, or a folder's ``*.csv`` / ``*.parquet`` (sorted).

    ``leave_out``: files that are no flights wherever they are (the run's own output set: an earlier
    run's scores, rejects and report in the schedule's folder). Each file is read once: one reached
    again through a link, or through a folder link that loops back, is refused.
    """
    if not data:
        raise ScoreInputError("no schedule given: pass data=<CSV or Parquet file or folder; path, file:// or gs://>")
    try:
        filesystem, path = filesystem_path(data)
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.File:
            return _read_once([f"gs://{path}" if is_gs(data) else path], data, leave_out)
        if info.type == pafs.FileType.NotFound:
            raise ScoreInputError(f"{data}: no such file or folder")
        found = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    except READ_ERRORS as err:
        raise ScoreInputError(f"cannot read {data}: {err.__class__.__name__}: {err}") from err
    files = sorted(
        f.path for f in found if f.type == pafs.FileType.File and file_kind(f.base_name) and not _ignored(f.path, path)
    )
    if not files:
        raise ScoreInputError(f"{data}: folder without .csv or .parquet files")
    return _read_once([f"gs://{f}" for f in files] if is_gs(data) else files, data, leave_out)


def _read_once(uris: list[str], data: str, leave_out: Iterable[str]) -> list[str]:
    """``list_inputs``' files but those to leave out; refused if one is reached twice (each name looked up once)."""
    leave_out = list(leave_out)
    skipped = {same_file_key(uri) for uri in leave_out}
    seen: dict[str, str] = {}
    kept = []
    for uri in uris:
        key = same_file_key(uri)
        if key in skipped:
            continue
        first = seen.setdefault(key, uri)
        if first != uri:  # a link to a file read already, or a folder link that loops back: flights read twice
            raise ScoreInputError(
                f"{data}: {uri} is the same file as {first} (a link); each file of a schedule is read once"
            )
        kept.append(uri)
    if not kept:
        raise ScoreInputError(f"the schedule is the output itself ({leave_out[0]}): give another output")
    if len(kept) < len(uris):
        logger.info("score: %d file(s) of the output set left out of the schedule", len(uris) - len(kept))
    return kept


def same_file_key(uri: str) -> str:
    """What two names of one file have in common: a local file's device and inode (any link), a ``gs://`` URI as is.

    A local name that does not exist (an output not written yet) is its real path.
    """
    if is_gs(uri):
        return uri
    try:
        stat = os.stat(local_path(uri))
    except OSError:
        return os.path.realpath(local_path(uri))
    return f"inode {stat.st_dev}:{stat.st_ino}"


def file_digest(uri: str) -> str:
    """The bytes' digest of one file: sha256 of a local file, the md5 GCS keeps of an object (hex).

    pyarrow's file systems do not expose a stored checksum, so the object's is asked of the Google client.
    """
    if is_gs(uri):
        bucket, name = split_gs_uri(uri)
        blob = gcs_client().bucket(bucket).get_blob(name)
        if blob is None:
            raise ScoreInputError(f"{uri}: no such object")
        if not (blob.md5_hash or blob.crc32c):
            raise ScoreInputError(f"{uri}: the object has no stored checksum to identify the schedule by")
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
    """The flight columns present, in the signature's order; refuses a file missing a required one or with one twice."""
    twice = sorted(c for c, n in collections.Counter(columns).items() if n > 1 and c in FLIGHT_COLUMNS)
    if twice:  # pandas would read the first, Arrow refuse the file: neither is what the schedule meant
        raise ScoreInputError(f"{name}: column(s) {twice} appear more than once; send each column once")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ScoreInputError(f"{name}: required column(s) {missing} missing; the file has {list(columns)}")
    return [c for c in FLIGHT_COLUMNS if c in columns]


def _csv_options(columns: list[str] | None, block_bytes: int) -> dict:
    """The pyarrow CSV options: UTF-8, quoted line breaks (as pandas reads them), an empty field as "".

    With ``columns``, only those, every value as text (what pandas' ``dtype=str, keep_default_na=False``
    gives).
    """
    convert = pcsv.ConvertOptions(strings_can_be_null=False, quoted_strings_can_be_null=False)
    if columns is not None:
        convert.include_columns = columns
        convert.column_types = dict.fromkeys(columns, pa.large_string())
    return {
        # One thread: a refused row is named by its number (0.21 against 0.19 s per 1,000,000 rows),
        # and the same in a Spark task, where pyarrow gets one thread anyway.
        "read_options": pcsv.ReadOptions(encoding="utf8", block_size=block_bytes, use_threads=False),
        "parse_options": pcsv.ParseOptions(newlines_in_values=True),
        "convert_options": convert,
    }


def file_columns(uri: str, name: str) -> tuple[str, list[str], int | None]:
    """(kind, flight columns, rows if known) of one schedule file; refuses unreadable, empty or incomplete files.

    Reads only what it needs where the file is: a Parquet file's footer, a CSV's first megabyte
    (``CSV_HEADER_BYTES``; of a longer file, only its header line is parsed).
    """
    filesystem, path = filesystem_path(uri)
    try:
        info = filesystem.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise ScoreInputError(f"{name}: no such file")
        if info.size == 0:
            raise ScoreInputError(EMPTY_FILE.format(name=name))
        with filesystem.open_input_file(path) as handle:
            magic = handle.read(4)
    except READ_ERRORS as err:
        raise ScoreInputError(f"{name}: cannot read: {err}") from err
    kind = file_kind(name) or ("parquet" if magic == b"PAR1" else "csv")
    if kind == "parquet":
        try:
            with filesystem.open_input_file(path) as handle:
                metadata = pq.ParquetFile(handle)
                names, rows = metadata.schema_arrow.names, metadata.metadata.num_rows
        except READ_ERRORS as err:
            raise ScoreInputError(f"{name}: cannot read as Parquet: {err}") from err
        columns = check_columns(names, name)
    else:
        try:
            with filesystem.open_input_stream(path) as stream:
                head = stream.read(CSV_HEADER_BYTES)
            if len(head) == CSV_HEADER_BYTES:  # a longer file: its header line is enough (it has rows)
                end = head.find(b"\n")
                if end < 0:
                    raise ScoreInputError(
                        f"{name}: no line break in the first {CSV_HEADER_BYTES} bytes (CSV_HEADER_BYTES); "
                        "the header is too long for a schedule"
                    )
                head = head[: end + 1]
            reader = pcsv.open_csv(pa.BufferReader(head), **_csv_options(None, CSV_HEADER_BYTES))
            columns = check_columns(reader.schema.names, name)
            rows = None if (len(head) < info.size or _has_rows(reader)) else 0
        except pa.ArrowInvalid as err:
            if "Empty CSV file" in str(err):
                raise ScoreInputError(EMPTY_FILE.format(name=name)) from err
            raise ScoreInputError(f"{name}: cannot read as CSV: {err}") from err
        except READ_ERRORS as err:
            raise ScoreInputError(f"{name}: cannot read as CSV: {err}") from err
    if rows == 0:
        raise ScoreInputError(f"{name}: no flights (a header without rows)")
    return kind, columns, rows


def _has_rows(reader: pcsv.CSVStreamingReader) -> bool:
    for batch in reader:
        if batch.num_rows:
            return True
    return False


def read_batches(
    uri: str, name: str, kind: str, columns: list[str], chunk_rows: int, row_groups: list[int] | None = None
) -> Iterator[pa.Table]:
    """The flight columns of one file, ``chunk_rows`` at a time, streamed from where it is (a few batches in memory).

    CSV is read with every value as text and an empty field as "" (what pandas'
    ``dtype=str, keep_default_na=False`` gives); a row with the wrong number of fields stops the
    step naming it (pandas filled it with nulls). Parquet columns keep their types; ``row_groups``
    reads only those (a Spark task's share of the file).
    """
    filesystem, path = filesystem_path(uri)
    try:
        if kind == "parquet":
            with filesystem.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                batches = parquet.iter_batches(batch_size=chunk_rows, columns=columns, row_groups=row_groups)
                yield from rebatch(batches, chunk_rows)
        else:
            with filesystem.open_input_stream(path) as stream:
                yield from rebatch(pcsv.open_csv(stream, **_csv_options(columns, CSV_BLOCK_BYTES)), chunk_rows)
    except READ_ERRORS as err:
        raise ScoreInputError(f"{name}: cannot read: {err}") from err


def with_columns(table: pa.Table, columns: list[str]) -> pa.Table:
    """``table`` with exactly ``columns``, in order: an optional column a file lacks is filled with ""."""
    for column in columns:
        if column not in table.column_names:
            table = table.append_column(column, pa.array([""] * table.num_rows, type=pa.large_string()))
    return table.select(columns)


def split_units(uri: str, kind: str, split_bytes: int) -> list[list[int] | None]:
    """One file in units of work: runs of Parquet row groups of about ``split_bytes`` (compressed), or a whole CSV.

    A CSV has no boundary to cut at without reading it (a quoted field may hold a line break), so
    it is one unit; a Parquet file is cut at row groups, as Spark splits it.
    """
    if kind != "parquet":
        return [None]
    filesystem, path = filesystem_path(uri)
    try:
        with filesystem.open_input_file(path) as handle:
            metadata = pq.ParquetFile(handle).metadata
    except READ_ERRORS as err:
        raise ScoreInputError(f"{uri}: cannot read as Parquet: {err}") from err
    units: list[list[int] | None] = []
    current: list[int] = []
    held = 0
    for index in range(metadata.num_row_groups):
        current.append(index)
        group = metadata.row_group(index)
        held += sum(group.column(c).total_compressed_size for c in range(group.num_columns))
        if held >= split_bytes:
            units.append(current)
            current, held = [], 0
    if current:
        units.append(current)
    return units


def file_size(uri: str) -> int:
    """The bytes of one schedule file where it is."""
    filesystem, path = filesystem_path(uri)
    try:
        return filesystem.get_file_info(path).size or 0
    except READ_ERRORS as err:
        raise ScoreInputError(f"cannot read {uri}: {err.__class__.__name__}: {err}") from err


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
