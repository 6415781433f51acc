"""The Spark engine: one ``mapInPandas`` pass on a SparkSession (``local[N]`` or a cluster's master).

Each row crosses to Python once: ``scoring.annotate_and_score`` scores a batch with the model and,
only when the model refuses it, finds the rejects, returning the rows with their scores, reason
and day. Spark writes those rows once, every task in parallel, to a staging folder of Parquet
parts; this process reads the parts back in order with pyarrow into the output, the rejects and
the tally through the pandas engine's own code (``sinks.write_batch``, ``Tally``), so both engines
write their files and count their rows the same way. Nothing is cached in Spark.

The files are checked before Spark reads them, as the pandas engine checks them
(``sources.file_columns``). The model reaches the Python workers as ``mlflow.pyfunc.spark_udf``
ships it (MLflow's ``SparkModelCache``: zipped with ``addFile``, loaded once per Python worker).
The workers get only what that path imports: ``pyfunc/`` (the model's code) and the
``skyprophet.batch`` modules ``scoring``, ``tally`` and ``contract`` (``SHIPPED``), zipped for
``addPyFile``. The cost of the pass is in docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pyfunc.schema import REQUIRED_COLUMNS, UNKNOWN_FIELDS
from skyprophet.batch.contract import AIRLINE, DAY, FLIGHT_COLUMNS, REJECT_DETAIL, REJECT_REASON
from skyprophet.batch.scoring import spark_scorer
from skyprophet.batch.sinks import ParquetSink, close_sinks, write_batch
from skyprophet.batch.sources import file_columns, filesystem_path, is_gs, local_copy
from skyprophet.batch.tally import BatchScores, Tally, group_sums
from skyprophet.config import PROJECT_ROOT

logger = logging.getLogger("skyprophet.score")
SPARK_SPLIT_BYTES = 16 << 20
# What the Spark workers import: the model's package and the first pass's modules (with their packages).
SHIPPED = (
    "pyfunc/*.py",
    "skyprophet/__init__.py",
    "skyprophet/batch/__init__.py",
    "skyprophet/batch/contract.py",
    "skyprophet/batch/scoring.py",
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
    """Where Spark writes the scored rows: a local folder in ``workdir``, or beside a ``gs://`` output.

    Beside the output when Spark writes gs:// itself (the GCS connector, as on Dataproc).
    """
    if is_gs(output) and _has_gs_connector(spark):
        return f"{output}.partial-{uuid.uuid4().hex}"
    return (workdir / f"spark-{uuid.uuid4().hex}").as_uri()


def staged_batches(folder: str, rows: int) -> Iterator[pa.RecordBatch]:
    """The staged rows, part by part in Spark's order (``part-*.parquet``; markers and checksums skipped)."""
    filesystem, path = filesystem_path(folder)
    found = filesystem.get_file_info(pafs.FileSelector(path))
    for part in sorted(f.path for f in found if f.base_name.startswith("part-") and f.base_name.endswith(".parquet")):
        with filesystem.open_input_file(part) as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=rows)


def remove_staging(folder: str) -> None:
    """Delete the staging folder (it holds no result once the sinks are written)."""
    filesystem, path = filesystem_path(folder)
    with contextlib.suppress(OSError):
        filesystem.delete_dir(path)


def staged_scores(batch: pa.RecordBatch, columns: list[str]) -> tuple[pa.Table, BatchScores]:
    """One staged batch as the pandas engine's workers give it: its flight columns, and its ``BatchScores``."""
    table = pa.Table.from_batches([batch])
    valid = pc.equal(table[REJECT_REASON], "").to_numpy(zero_copy_only=False)
    kept = table if valid.all() else table.filter(valid)
    dropped = table.filter(~valid)
    scores = {
        "delay_probability": kept["delay_probability"].to_numpy(),
        "delay": kept["delay"].to_numpy(),
        UNKNOWN_FIELDS: kept[UNKNOWN_FIELDS].to_numpy().astype(object),
    }
    flagged = scores[UNKNOWN_FIELDS] != ""
    groups = group_sums(kept[AIRLINE].to_pandas(), kept[DAY].to_numpy(), scores, flagged)
    reasons = dropped[REJECT_REASON].to_numpy().astype(object)
    counts = {r: int(n) for r, n in pd.Series(reasons, dtype=object).value_counts().items()}
    part = BatchScores(
        table.num_rows,
        None if valid.all() else valid,
        reasons,
        dropped[REJECT_DETAIL].to_numpy().astype(object),
        scores,
        groups,
        counts,
    )
    return table.select(columns), part


def score_spark(
    model_uri: str,
    uris: list[str],
    output: ParquetSink,
    rejects: ParquetSink,
    master: str,
    chunk_rows: int,
    workdir: Path,
) -> tuple[Tally, list[str]]:
    """Score in one ``mapInPandas`` pass on a SparkSession (the model cached per Python worker).

    Every file is checked first as the pandas engine checks it (``sources.file_columns``). Spark
    writes the scored rows once, in parallel, to a staging folder; this process reads them back in
    order into ``output`` and ``rejects`` and the tally (``sinks.write_batch``), and stops the session.
    Returns the tally and the flight columns.
    """
    import mlflow.artifacts
    from mlflow.pyfunc.spark_model_cache import SparkModelCache
    from pyspark.sql import types as T

    checked = {uri: file_columns(uri, uri) for uri in uris}  # before the JVM starts: a bad file costs nothing
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
        schema = T.StructType(
            [*raw.schema.fields]
            + [T.StructField(c, T.StringType(), False) for c in (REJECT_REASON, REJECT_DETAIL, DAY)]
            + [
                T.StructField("delay_probability", T.DoubleType(), True),
                T.StructField("delay", T.LongType(), False),
                T.StructField(UNKNOWN_FIELDS, T.StringType(), False),
            ]
        )
        staging = staging_folder(spark, output.uri, workdir)
        started = time.monotonic()
        raw.mapInPandas(spark_scorer(archive), schema=schema).write.parquet(staging)
        passed = time.monotonic()
        tally = Tally()
        for batch in staged_batches(staging, chunk_rows):
            table, part = staged_scores(batch, columns)
            tally.add(part)
            write_batch(table, part, output, rejects)
        close_sinks(output, rejects, columns)
        logger.info("spark: pass %.1f s, written back %.1f s", passed - started, time.monotonic() - passed)
    finally:
        if staging is not None:
            remove_staging(staging)
        spark.stop()
    return tally, columns
