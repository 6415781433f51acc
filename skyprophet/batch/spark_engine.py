"""The Spark engine: one ``mapInPandas`` pass on a SparkSession (``local[N]`` or a cluster's master).

Each row crosses to Python once: ``scoring.annotate_and_score`` scores a batch with the model and,
only when the model refuses it, finds the rejects, returning the rows with their scores, reason
and day. The model reaches the Python workers as ``mlflow.pyfunc.spark_udf`` ships it (MLflow's
``SparkModelCache``: zipped with ``addFile``, loaded once per Python worker). The workers get only
what that path imports: ``pyfunc/`` (the model's code) and the ``skyprophet.batch`` modules
``scoring``, ``tally`` and ``contract`` (``SHIPPED``), zipped for ``addPyFile``. The cost of the
pass is in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

from pyfunc.schema import REQUIRED_COLUMNS, UNKNOWN_FIELDS
from skyprophet.batch.contract import (
    AIRLINE,
    DAY,
    FLIGHT_COLUMNS,
    REJECT_DETAIL,
    REJECT_REASON,
    SCORE_COLUMNS,
    ScoreInputError,
)
from skyprophet.batch.scoring import spark_scorer
from skyprophet.batch.sinks import publish, staging_path
from skyprophet.batch.sources import EMPTY_FILE, check_columns, file_kind, is_gs, local_copy
from skyprophet.batch.tally import Tally
from skyprophet.config import PROJECT_ROOT

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


def _spark_file(spark, uri: str, name: str):
    """One file as a Spark DataFrame of its flight columns; the same refusals as the pandas engine."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    kind = file_kind(name) or "csv"
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
        raise ScoreInputError(EMPTY_FILE.format(name=name))
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
    if is_gs(uri) and _has_gs_connector(spark):
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
    if not is_gs(uri):  # beside the output first: a rename across file systems is not atomic
        local = staging_path(uri, workdir)
        shutil.move(part, local)
        part = local
    publish(part, uri)
    shutil.rmtree(staging, ignore_errors=True)


def _stage_for_spark(spark, uris: list[str], workdir: Path) -> list[tuple[str, str]]:
    """(name, URI Spark reads) per file: gs:// as is where Spark has the GCS connector, else downloaded."""
    direct = _has_gs_connector(spark)
    return [(u, u if (is_gs(u) and direct) else local_copy(u, workdir).resolve().as_uri()) for u in uris]


def score_spark(
    model_uri: str, uris: list[str], rejects: str, master: str, chunk_rows: int, workdir: Path
) -> tuple[Tally, list[str], Callable[[str], None], Callable[[], None]]:
    """Score in one ``mapInPandas`` pass on a SparkSession (the model cached per Python worker).

    Writes the rejects; returns the tally, the flight columns, a function writing the scores to
    an output URI and one stopping the session.
    """
    import mlflow.artifacts
    from mlflow.pyfunc.spark_model_cache import SparkModelCache
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spark = spark_session(master, chunk_rows)
    try:
        spark.sparkContext.addPyFile(str(code_archive(workdir)))
        local_model = model_uri
        if not Path(model_uri).is_dir():
            local_model = mlflow.artifacts.download_artifacts(model_uri, dst_path=str(workdir / "spark-model"))
        archive = SparkModelCache.add_local_model(spark, local_model)
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
            + [
                T.StructField("delay_probability", T.DoubleType(), True),
                T.StructField("delay", T.LongType(), False),
                T.StructField(UNKNOWN_FIELDS, T.StringType(), False),
            ]
        )
        annotated = raw.mapInPandas(spark_scorer(archive), schema=schema).persist(StorageLevel.MEMORY_AND_DISK)
        scored = annotated.filter(F.col(REJECT_REASON) == "").select(*columns, *SCORE_COLUMNS, DAY)
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
        rejected = annotated.filter(F.col(REJECT_REASON) != "").select(*columns, REJECT_REASON, REJECT_DETAIL)
        _write_single(spark, rejected, rejects, workdir)
    except Exception:
        spark.stop()
        raise
    return tally, columns, lambda uri: _write_single(spark, scored.drop(DAY), uri, workdir), spark.stop
