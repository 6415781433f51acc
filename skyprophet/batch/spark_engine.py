"""The Spark engine: one ``mapInArrow`` pass on a SparkSession (``local[N]`` or a cluster's master).

Each task is a pandas engine worker (``scoring.spark_task_scorer``): it scores its batches with
``score_batch`` and ``split_batch``, the pandas engine's own functions, writes its scored rows and
rejects as Arrow IPC files to a staging folder and returns one small row (the files, its counts
and sums). Each row crosses to Python once and never comes back through the JVM; nothing is
cached or written by Spark. This process copies the tasks' files in partition order into the
output and rejects sinks (``sinks.ParquetSink``, as the pandas engine writes them) and adds up
their tallies.

The files are checked before Spark starts, as the pandas engine checks them
(``sources.file_columns``). The model reaches the Python workers as ``mlflow.pyfunc.spark_udf``
ships it (MLflow's ``SparkModelCache``: zipped with ``addFile``, loaded once per Python worker).
The workers get only what that path imports: ``pyfunc/`` (the model's code), ``skyprophet.storage``
and the ``skyprophet.batch`` modules ``scoring``, ``tally``, ``sources`` and ``contract``
(``SHIPPED``), zipped for ``addPyFile``. The cost of the pass is in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from pyfunc.schema import REQUIRED_COLUMNS
from skyprophet.batch.contract import AIRLINE, FLIGHT_COLUMNS, ScoreInputError
from skyprophet.batch.scoring import SPARK_TASK_SCHEMA, spark_task_scorer
from skyprophet.batch.sinks import ParquetSink, close_sinks
from skyprophet.batch.sources import file_columns, filesystem_path, is_gs, local_copy
from skyprophet.batch.tally import Tally
from skyprophet.config import PROJECT_ROOT

logger = logging.getLogger("skyprophet.score")
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


def _stage_for_spark(spark, uris: list[str], workdir: Path) -> list[tuple[str, str]]:
    """(name, URI Spark reads) per file: gs:// as is where Spark has the GCS connector, else downloaded."""
    direct = _has_gs_connector(spark)
    return [(u, u if (is_gs(u) and direct) else local_copy(u, workdir).resolve().as_uri()) for u in uris]


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


def score_spark(
    model_uri: str,
    uris: list[str],
    output: ParquetSink,
    rejects: ParquetSink,
    master: str,
    chunk_rows: int,
    workdir: Path,
) -> tuple[Tally, list[str]]:
    """Score in one ``mapInArrow`` pass on a SparkSession (the model cached per Python worker).

    Every file is checked first as the pandas engine checks it (``sources.file_columns``). Each
    task scores its batches and writes its rows to a staging folder (``scoring.spark_task_scorer``);
    this process copies them in partition order into ``output`` and ``rejects``, adds up the tasks'
    tallies, deletes the staging folder and stops the session. Returns the tally and the flight columns.
    """
    import mlflow.artifacts
    from mlflow.pyfunc.spark_model_cache import SparkModelCache

    checked = {uri: file_columns(uri, uri) for uri in uris}  # before the JVM starts: a bad file costs nothing
    if master and not master.startswith("local") and not is_gs(output.uri):
        raise ScoreInputError(
            f"output {output.uri}: on a cluster (spark_master {master}) give a gs:// output; "
            "the tasks stage their rows beside it"
        )
    spark = spark_session(master, chunk_rows)
    staging = None
    try:
        spark.sparkContext.addPyFile(str(code_archive(workdir)))
        local_model = model_uri
        if not Path(model_uri).is_dir():
            local_model = mlflow.artifacts.download_artifacts(model_uri, dst_path=str(workdir / "spark-model"))
        archive = SparkModelCache.add_local_model(spark, local_model)
        frames = []
        for name, uri in _stage_for_spark(spark, uris, workdir):
            kind, file_cols, _ = checked[name]
            frames.append(_spark_read(spark, uri, kind).select(*file_cols))
        raw = frames[0]
        for other in frames[1:]:
            raw = raw.unionByName(other, allowMissingColumns=True)
        columns = [c for c in FLIGHT_COLUMNS if c in raw.columns]
        raw = raw.select(*columns).na.fill("", subset=[c for c in columns if c not in REQUIRED_COLUMNS])
        parallelism = spark.sparkContext.defaultParallelism
        if raw.rdd.getNumPartitions() < parallelism:
            raw = raw.repartition(parallelism)
        staging = staging_folder(spark, output.uri, workdir)
        started = time.monotonic()
        tasks = raw.mapInArrow(spark_task_scorer(archive, staging), schema=SPARK_TASK_SCHEMA).collect()
        passed = time.monotonic()
        tally, filesystem = Tally(), filesystem_path(staging)[0]
        for row in sorted((r.asDict() for r in tasks), key=lambda r: r["partition"]):
            tally.merge(task_tally(row))
            copy_staged(filesystem, row["scored"], output)
            copy_staged(filesystem, row["rejects"], rejects)
        close_sinks(output, rejects, columns)
        logger.info("spark: pass %.1f s, written back %.1f s", passed - started, time.monotonic() - passed)
    finally:
        spark.stop()  # first: no task is left to write into the staging folder
        if staging is not None:
            remove_staging(staging)
    return tally, columns
