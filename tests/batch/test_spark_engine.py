"""spark_engine: what it refuses before a Spark session starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyprophet.batch.contract import ScoreInputError
from skyprophet.batch.sinks import ParquetSink
from skyprophet.batch.spark_engine import require_gs_on_a_cluster, score_spark
from tests.factory import make_flights


def test_a_cluster_with_a_local_output_is_refused_before_the_session(tmp_path: Path, monkeypatch):
    data = tmp_path / "schedule.csv"
    make_flights(days=2, flights_per_day=5, seed=1, start="2017-01-01").to_csv(data, index=False)
    started = []
    monkeypatch.setattr("skyprophet.batch.spark_engine.spark_session", lambda *a: started.append(a))
    sinks = (ParquetSink(str(tmp_path / "out.parquet"), tmp_path), ParquetSink(str(tmp_path / "r.parquet"), tmp_path))
    with pytest.raises(
        ScoreInputError, match=r"on a cluster \(spark_master spark://host:7077\) give gs:// data and output"
    ):
        score_spark("unused", [str(data)], *sinks, "spark://host:7077", 100, tmp_path)
    assert started == [] and not list(tmp_path.glob("*.parquet"))


@pytest.mark.slow
def test_a_model_that_cannot_be_fetched_stops_the_session_started_beside_it(tmp_path: Path):
    from pyspark import SparkContext

    data = tmp_path / "schedule.csv"
    make_flights(days=2, flights_per_day=5, seed=1, start="2017-01-01").to_csv(data, index=False)
    sinks = (ParquetSink(str(tmp_path / "out.parquet"), tmp_path), ParquetSink(str(tmp_path / "r.parquet"), tmp_path))
    missing = f"file://{tmp_path / 'no-model'}"
    with pytest.raises(Exception, match="no-model"):
        score_spark(missing, [str(data)], *sinks, "local[1]", 100, tmp_path)
    assert SparkContext._active_spark_context is None  # the session that started meanwhile was stopped
    assert not list(tmp_path.glob("*.parquet"))
    left = sorted(p.name for p in tmp_path.glob("spark-*"))
    assert left == ["spark-model", "spark-tmp"], left  # the download's folder and the temporary files'; no staging


def test_a_cluster_named_by_spark_submit_needs_gs_data_and_output_too():
    # With spark_master "", the master is spark-submit's (yarn on Dataproc), known once the session is up.
    require_gs_on_a_cluster("local[2]", ["/data/a.csv"], "/out/s.parquet")
    require_gs_on_a_cluster("yarn", ["gs://b/in/a.csv", "gs://b/in/b.csv"], "gs://b/out/s.parquet")
    refused = ((["gs://b/in/a.csv", "/data/b.csv"], "gs://b/out/s.parquet"), (["gs://b/a.csv"], "/s.parquet"))
    for uris, output in refused:
        with pytest.raises(ScoreInputError, match=r"on a cluster \(spark_master yarn\) give gs:// data and output"):
            require_gs_on_a_cluster("yarn", uris, output)


def test_a_cluster_master_seen_once_the_session_is_up_is_refused_and_the_session_stopped(tmp_path: Path, monkeypatch):
    class Session:  # what spark-submit on Dataproc starts when spark_master is ""
        stopped = False
        sparkContext = type("Context", (), {"master": "yarn", "addPyFile": lambda self, path: None})()

        def stop(self):
            Session.stopped = True

    monkeypatch.setattr("skyprophet.batch.spark_engine.spark_session", lambda *a: Session())
    data = tmp_path / "schedule.csv"
    make_flights(days=2, flights_per_day=5, seed=1, start="2017-01-01").to_csv(data, index=False)
    (tmp_path / "model").mkdir()
    sinks = (ParquetSink(str(tmp_path / "out.parquet"), tmp_path), ParquetSink(str(tmp_path / "r.parquet"), tmp_path))
    with pytest.raises(ScoreInputError, match=r"on a cluster \(spark_master yarn\) give gs:// data and output"):
        score_spark(str(tmp_path / "model"), [str(data)], *sinks, "", 100, tmp_path)
    assert Session.stopped
