"""The Spark engine: one ``mapInArrow`` pass on a SparkSession (``local[N]`` or a cluster's master).

Spark distributes units of work (``sources.split_units``: a run of a Parquet file's row groups of
about ``SPARK_SPLIT_BYTES``, as Spark itself splits Parquet, or a whole CSV) one per task. Each task
is a pandas engine worker (``scoring.spark_task_scorer``): it reads its unit with the pandas
engine's reader (pyarrow, ``gs://`` included), scores it with ``score_batch`` and ``split_batch``,
writes its scored rows and rejects as Arrow IPC files to a staging folder and returns one small
row (the files, its counts and sums). No flight passes through the JVM, so both engines read,
refuse and write the same rows the same way. This process copies the tasks' files in unit order
into the output and rejects sinks (``sinks.ParquetSink``, as the pandas engine writes them) and
adds up their tallies.

The files are checked before Spark starts, as the pandas engine checks them
(``sources.file_columns``). The model reaches the Python workers as ``mlflow.pyfunc.spark_udf``
ships it (MLflow's ``SparkModelCache``: zipped with ``addFile``, loaded once per Python worker).
The workers get only what that path imports: ``pyfunc/`` (the model's code), ``skyprophet.storage``
and the ``skyprophet.batch`` modules ``scoring``, ``tally``, ``sources`` and ``contract``
(``SHIPPED``), zipped for ``addPyFile``. The cost of the pass is in docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from skyprophet.batch.contract import AIRLINE, FLIGHT_COLUMNS, ScoreInputError
from skyprophet.batch.scoring import TASK_SCHEMA, spark_task_scorer
from skyprophet.batch.sinks import ParquetSink, close_sinks
from skyprophet.batch.sources import file_columns, file_size, filesystem_path, is_gs, split_units
from skyprophet.batch.tally import Tally
from skyprophet.config import PROJECT_ROOT

logger = logging.getLogger("skyprophet.score")
# A task's share of a Parquet file: row groups of about this many compressed bytes (fewer for a
# small input, so that every core gets a task).
SPARK_SPLIT_BYTES = 16 << 20
# What the Spark workers import: the model's package and the first pass's modules (with their packages).
SHIPPED = (
    "pyfunc/*.py",
    "skyprophet/__init__.py",
    "skyprophet/storage.py",
    "skyprophet/batch/__init__.py",
    "skyprophet/batch/contract.py",
    "skyprophet/batch/scoring.py",
    "skyprophet/batch/sources.py",
    "skyprophet/batch/tally.py",
)


def code_archive(workdir: Path) -> Path:
    """``SHIPPED`` zipped for the Spark workers (``SparkContext.addPyFile``)."""
    archive = workdir / "skyprophet-code.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for pattern in SHIPPED:
            for source in sorted(PROJECT_ROOT.glob(pattern)):
                handle.write(source, source.relative_to(PROJECT_ROOT).as_posix())
    return archive


def spark_session(master: str, chunk_rows: int, scratch: Path | None = None):
    """A SparkSession on ``master`` whose Python workers run this interpreter (``PYSPARK_PYTHON``).

    On ``local[N]`` the workers' temporary files (MLflow's copy of the model, one per worker) go to
    ``scratch``, the run's own folder, deleted with it; on a cluster, to the nodes' own.
    """
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
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(chunk_rows),  # for spark_udf on this session
        "spark.executorEnv.SKYPROPHET_BATCH_NTHREAD": "1",
        "spark.executorEnv.PYSPARK_PYTHON": os.environ["PYSPARK_PYTHON"],
    }.items():
        builder = builder.config(key, value)
    if scratch is not None and master.startswith("local"):
        builder = builder.config("spark.executorEnv.TMPDIR", str(scratch))
    return builder.getOrCreate()


@contextlib.contextmanager
def temporary_files_in(folder: Path) -> Iterator[None]:
    """Python's temporary files (``tempfile``) in ``folder`` meanwhile: MLflow's model archive for Spark goes there."""
    previous = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = previous


def work_units(checked: dict[str, tuple], columns: list[str], parallelism: int) -> list[dict]:
    """The units the tasks are given (see ``scoring.spark_task_scorer``), in the order their rows are written."""
    total = sum(file_size(uri) for uri, (kind, _, _) in checked.items() if kind == "parquet")  # a CSV is one unit
    split_bytes = max(1, min(SPARK_SPLIT_BYTES, total // max(parallelism, 1)))
    return [
        {"uri": uri, "kind": kind, "file_columns": file_cols, "columns": columns, "row_groups": row_groups}
        for uri, (kind, file_cols, _) in checked.items()
        for row_groups in split_units(uri, kind, split_bytes)
    ]


def staging_folder(spark, output: str, workdir: Path) -> str:
    """Where the tasks write their rows: a local folder in ``workdir``, or beside a ``gs://`` output on a cluster.

    On a cluster the tasks run on other machines, so they write beside the ``gs://`` output (pyarrow's
    GCS file system, the nodes' credentials); a ``local[N]`` session shares this machine's disk.
    """
    if is_gs(output) and not spark.sparkContext.master.startswith("local"):
        return f"{output}.partial-{uuid.uuid4().hex}"
    folder = workdir / f"spark-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    return folder.as_uri()


def remove_staging(folder: str) -> None:
    """Delete the staging folder (it holds no result once the sinks are written); a failure is logged."""
    try:
        filesystem, path = filesystem_path(folder)
        filesystem.delete_dir(path)
    except Exception as err:  # cleanup must not hide the step's own result or error
        logger.warning("spark: staging folder %s not deleted: %s", folder, err)


def task_tally(row: dict) -> Tally:
    """One Spark task's counts and per (airline, day) sums, from the row it returned."""
    groups = []
    if row["groups"]:
        groups = [pa.ipc.open_stream(pa.py_buffer(row["groups"])).read_all().to_pandas()]
        groups[0][AIRLINE] = groups[0][AIRLINE].astype(object)
    return Tally(row["rows"], row["scored_rows"], row["flagged"], json.loads(row["rejected"]), groups)


def copy_staged(filesystem: pafs.FileSystem, path: str, sink: ParquetSink) -> None:
    """The batches of one staged Arrow IPC file (a path on ``filesystem``; "" for none), in order, into ``sink``."""
    if not path:
        return
    with filesystem.open_input_file(path) as handle:
        reader = pa.ipc.open_file(handle)
        for index in range(reader.num_record_batches):
            sink.write(pa.Table.from_batches([reader.get_batch(index)]))


def require_gs_on_a_cluster(master: str, uris: list[str], output: str) -> None:
    """On a cluster every node reads the data and writes beside the output: both must be ``gs://``."""
    if not master.startswith("local") and not all(is_gs(uri) for uri in [*uris, output]):
        raise ScoreInputError(
            f"on a cluster (spark_master {master}) give gs:// data and output: the tasks read their files "
            f"and stage their rows where every node reaches them (data {uris[0]}, output {output})"
        )


def _started(starting: Future):
    """The session ``starting`` made, once it is up; None if it failed to start."""
    try:
        return starting.result()
    except Exception:
        return None


def score_spark(
    model_uri: str,
    uris: list[str],
    output: ParquetSink,
    rejects: ParquetSink,
    master: str,
    chunk_rows: int,
    workdir: Path,
) -> tuple[Tally, list[str]]:
    """Score in one ``mapInArrow`` pass on a SparkSession, a task per unit of work (the model cached per Python worker).

    Every file is checked first as the pandas engine checks it (``sources.file_columns``). Each
    task reads, scores and writes its unit to a staging folder (``scoring.spark_task_scorer``);
    this process copies the files in unit order into ``output`` and ``rejects``, adds up the tasks'
    tallies, stops the session and deletes the staging folder. Returns the tally and the flight columns.
    """
    import mlflow.artifacts
    from mlflow.pyfunc.spark_model_cache import SparkModelCache
    from pyspark.sql.pandas.types import from_arrow_schema

    checked = {uri: file_columns(uri, uri) for uri in uris}  # before the JVM starts: a bad file costs nothing
    columns = [c for c in FLIGHT_COLUMNS if any(c in cols for _, cols, _ in checked.values())]
    if master:
        require_gs_on_a_cluster(master, uris, output.uri)  # before the JVM starts, when the master is named
    # The JVM starts (about 5 s) while this thread fetches the model and zips the code.
    scratch = workdir / "spark-tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    starting = ThreadPoolExecutor(1, thread_name_prefix="spark-start").submit(
        spark_session, master, chunk_rows, scratch
    )
    spark = staging = None
    try:
        local_model = model_uri
        if not Path(model_uri).is_dir():
            local_model = mlflow.artifacts.download_artifacts(model_uri, dst_path=str(workdir / "spark-model"))
        code = code_archive(workdir)
        spark = starting.result()
        require_gs_on_a_cluster(spark.sparkContext.master, uris, output.uri)  # e.g. spark-submit's own master
        spark.sparkContext.addPyFile(str(code))
        with temporary_files_in(scratch):  # MLflow zips the model with tempfile, in /tmp otherwise
            archive = SparkModelCache.add_local_model(spark, local_model)
        units = work_units(checked, columns, spark.sparkContext.defaultParallelism)
        # One partition per unit, numbered by the JVM (no Python worker needed to make the rows).
        numbers = spark.range(0, len(units), 1, numPartitions=len(units))
        staging = staging_folder(spark, output.uri, workdir)
        started = time.monotonic()
        scorer = spark_task_scorer(archive, staging, chunk_rows, units)
        tasks = numbers.mapInArrow(scorer, schema=from_arrow_schema(TASK_SCHEMA)).collect()
        passed = time.monotonic()
        results = sorted((r.asDict() for r in tasks), key=lambda r: r["unit"])
        refused = [r["error"] for r in results if r["error"]]
        if refused:  # a row a task's reader refused: the same message as the pandas engine's
            raise ScoreInputError(refused[0])
        tally, filesystem = Tally(), filesystem_path(staging)[0]
        for row in results:
            tally.merge(task_tally(row))
            copy_staged(filesystem, row["scored"], output)
            copy_staged(filesystem, row["rejects"], rejects)
        close_sinks(output, rejects, columns)
        logger.info(
            "spark: %d units, pass %.1f s, written back %.1f s", len(units), passed - started, time.monotonic() - passed
        )
    finally:
        try:
            spark = spark or _started(starting)
            if spark is not None:
                spark.stop()  # first: no task is left to write into the staging folder
        finally:
            if staging is not None:
                remove_staging(staging)
    return tally, columns
