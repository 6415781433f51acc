"""Where the scores go, written so that nothing half-written is ever left at the output.

A run's output set is three files: the scores, their rejects and the report (``output_set``).
Their locations are checked before any work (free unless ``overwrite``, writable), the Parquet
files written batch by batch under a temporary name, and the set moved into place together at the
end, each in one step (a rename, or one ``gs://`` upload). Without ``overwrite`` a file is only
created, never replaced (a hard link, or an upload on the condition that no object is there): a
second run writing the same output at the same time gets a refusal, and what it had published
of its set is taken back, rather than the two runs' files ending up mixed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pyfunc.schema import UNKNOWN_FIELDS
from skyprophet.batch.contract import REJECT_DETAIL, REJECT_REASON, ScoreInputError
from skyprophet.batch.scoring import split_batch
from skyprophet.batch.sources import is_gs, local_path
from skyprophet.batch.tally import BatchScores
from skyprophet.storage import gcs_client, split_gs_uri


def rejects_uri(output: str) -> str:
    """Where the rejects go: ``scores.parquet`` -> ``scores.rejects.parquet``, beside the output."""
    if output.lower().endswith(".parquet"):
        return output[: -len(".parquet")] + ".rejects.parquet"
    return output + ".rejects.parquet"


def report_uri(output: str) -> str:
    """Where the report goes: ``scores.parquet`` -> ``scores.report.html``, beside the output."""
    if output.lower().endswith(".parquet"):
        return output[: -len(".parquet")] + ".report.html"
    return output + ".report.html"


def output_set(output: str) -> tuple[str, str, str]:
    """The three files a run writes: the scores, their rejects, the report."""
    return output, rejects_uri(output), report_uri(output)


def _exists(uri: str) -> bool:
    if is_gs(uri):
        bucket, name = split_gs_uri(uri)
        return gcs_client().bucket(bucket).blob(name).exists()
    return local_path(uri).exists()


def check_output(output: str, overwrite: bool) -> None:
    """Refuse an unusable output location (a folder, not writable), or a file of its set that exists (no overwrite)."""
    if not output:
        raise ScoreInputError("no output given: pass output=<Parquet path or gs:// URI>")
    for uri in output_set(output):
        try:
            exists = _exists(uri)
        except ScoreInputError:
            raise
        except Exception as err:
            raise ScoreInputError(f"cannot check output {uri}: {err.__class__.__name__}: {err}") from err
        if exists and not overwrite:
            raise ScoreInputError(f"output {uri} exists; remove it or pass overwrite=true")
        if not is_gs(uri) and local_path(uri).is_dir():
            raise ScoreInputError(f"output {uri} is a folder; give a Parquet file path")
    if not is_gs(output):
        folder = local_path(output).parent
        if not folder.is_dir():
            raise ScoreInputError(f"output {output}: folder {folder} does not exist")
        probe = folder / f".{local_path(output).name}.probe-{uuid.uuid4().hex}"
        try:  # the files are written beside the output (one file system: the renames are atomic)
            probe.open("xb").close()
            probe.unlink()
        except OSError as err:
            raise ScoreInputError(f"output {output}: cannot write in {folder}: {err.strerror or err}") from err


def _taken(uri: str) -> ScoreInputError:
    return ScoreInputError(
        f"output {uri} appeared while this run was working (another run writing the same output?); "
        "nothing of this run was left there: remove it or pass overwrite=true"
    )


def publish(local: Path, uri: str, overwrite: bool = True) -> None:
    """Move a finished local file to ``uri`` in one step (rename, or one upload); without ``overwrite``, create only."""
    if is_gs(uri):
        from google.api_core.exceptions import PreconditionFailed

        bucket, name = split_gs_uri(uri)
        try:
            gcs_client().bucket(bucket).blob(name).upload_from_filename(
                str(local), if_generation_match=None if overwrite else 0
            )
        except PreconditionFailed:
            raise _taken(uri) from None
        local.unlink()
    elif overwrite:
        os.replace(local, local_path(uri))
    else:
        final = local_path(uri)
        try:
            os.link(local, final)  # fails if the name exists: never replaces
        except FileExistsError:
            raise _taken(uri) from None
        except OSError:  # a file system without hard links: claim the name, then move the file onto the claim
            try:
                os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                raise _taken(uri) from None
            os.replace(local, final)
            return
        local.unlink()


def remove(uri: str) -> None:
    """Delete a published file, if it is there."""
    if is_gs(uri):
        bucket, name = split_gs_uri(uri)
        blob = gcs_client().bucket(bucket).blob(name)
        if blob.exists():
            blob.delete()
    else:
        local_path(uri).unlink(missing_ok=True)


def publish_together(files: list[tuple[Path, str]], overwrite: bool) -> None:
    """Publish a run's files; if one cannot be (another run took its name), take back those published, then raise."""
    done = []
    try:
        for local, uri in files:
            publish(local, uri, overwrite)
            done.append(uri)
    except BaseException:  # taken, a failed upload, SIGTERM: no half set is left
        for uri in done:
            with contextlib.suppress(Exception):
                remove(uri)
        raise


def staged_beside(local: Path, uri: str, workdir: Path) -> Path:
    """A copy of ``local`` where ``uri``'s file is staged (beside it: one file system, so the move is a rename)."""
    staged = staging_path(uri, workdir)
    if staged != local:
        shutil.copyfile(local, staged)
    return staged


def staging_path(uri: str, workdir: Path) -> Path:
    """A temporary local name for ``uri``: beside it (same file system, so the rename is atomic) or in ``workdir``."""
    if is_gs(uri):
        return workdir / f"{uuid.uuid4().hex}.parquet"
    final = local_path(uri)
    return final.with_name(f".{final.name}.partial-{uuid.uuid4().hex}")


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
            table = conform(table, self.writer.schema)
        self.writer.write_table(table)

    def close(self, empty: pd.DataFrame) -> None:
        """Finish the file (``empty``, the columns' shape, when nothing was written)."""
        if self.writer is None:
            self.write(empty)
        self.writer.close()

    def discard(self) -> None:
        """Drop the temporary file."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        self.path.unlink(missing_ok=True)


def _text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _same_kind(first: pa.DataType, later: pa.DataType) -> bool:
    """Types a later batch may be cast to without changing a value: nulls, and one family's widths and units."""
    families = (pa.types.is_integer, pa.types.is_floating, pa.types.is_timestamp, _text)
    return (
        pa.types.is_null(later)
        or any(f(first) and f(later) for f in families)
        or (_text(first) and pa.types.is_dictionary(later) and _text(later.value_type))
    )


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A later batch in the first batch's types (one type per column in a Parquet file), or a refusal naming it.

    The types of one file's batches agree; those of a folder's files may not (``Vlo-I`` int64 in a
    Parquet file, text in a CSV). Only widths and units of one family are cast (and nulls): text to a
    number or a time, or a number or a time to text, would change values the output keeps as given.
    """
    for field in schema:
        given = table.schema.field(field.name).type
        if given != field.type and not _same_kind(field.type, given):
            raise _mixed(field.name, field.type, given)
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
        raise ScoreInputError(f"the schedule's files give columns other types: {err}") from None


def _mixed(column: str, first: pa.DataType, later: pa.DataType) -> ScoreInputError:
    return ScoreInputError(
        f"column {column}: the schedule's files give it as {first} and as {later}; the output keeps one type "
        "per column (the values as given): write every file of the schedule with the same types"
    )


def empty_frame(columns: list[str], extra: dict[str, str]) -> pd.DataFrame:
    """No rows: ``columns`` as text plus ``extra`` (name -> dtype), the shape of a file nothing was written to."""
    frame = pd.DataFrame({c: pd.Series([], dtype=str) for c in columns})
    for column, dtype in extra.items():
        frame[column] = pd.Series([], dtype=dtype)
    return frame


def write_batch(table: pa.Table, part: BatchScores, output: ParquetSink, rejects: ParquetSink) -> None:
    """One batch's flights (``table``) with their scores into ``output``, its rejected rows into ``rejects``.

    The rows come from ``scoring.split_batch``, which each Spark task calls too on rows it read with
    the same reader, so both engines' files have the same columns and Arrow types.
    """
    scored, rejected = split_batch(table, part)
    if scored.num_rows:
        output.write(scored)
    if rejected.num_rows:
        rejects.write(rejected)


def close_sinks(output: ParquetSink, rejects: ParquetSink, columns: list[str]) -> None:
    """Finish both files (the columns' shape where no row went to one)."""
    output.close(empty_frame(columns, {"delay_probability": "float64", "delay": "int64", UNKNOWN_FIELDS: "str"}))
    rejects.close(empty_frame(columns, {REJECT_REASON: "str", REJECT_DETAIL: "str"}))
