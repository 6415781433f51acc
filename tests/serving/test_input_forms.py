"""One schedule scores alike however it was read: text, pandas' int64 and datetime64, JSON numbers, Spark's types.

Issue 23 part 3: MLflow's column types refused ``pd.read_csv``'s all-digit ``Vlo-I`` ("Can not
safely convert int64 to <U0") and a parsed ``Fecha-I``; the model now has no MLflow input schema
and ``pyfunc.schema`` reads text, numbers and datetimes to one form. Against the session's
registered model: in process, through a real ``mlflow models serve`` and through ``spark_udf`` on
a real ``local[2]`` Spark.
"""

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pyfunc.fields import FLIGHT_NUMBER, REQUIRED_COLUMNS, SCHEDULED_TIME
from pyfunc.schema import OPTIONAL_COLUMNS
from skyprophet.batch.contract import MODEL_PARAMS, SPARK_RESULT_TYPE
from skyprophet.batch.spark_engine import spark_session
from tests.factory import make_flights

pytestmark = [pytest.mark.slow]

# The same flights, however read, give the same probabilities to this much.
TOLERANCE = 1e-9
ROW = "row"


@pytest.fixture(scope="module")
def schedule_csv(tmp_path_factory) -> Path:
    """300 generated flights (all-digit flight numbers) as a schedule file, with a row number to join on."""
    flights = make_flights(days=10, seed=23).head(300)
    flights = flights[[*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS]]
    path = tmp_path_factory.mktemp("forms") / "schedule.csv"
    flights.rename_axis(ROW).reset_index().to_csv(path, index=False)
    return path


def read_text(path: Path) -> pd.DataFrame:
    """Every value as text: the form the other readings must score like."""
    return pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=[ROW])


@pytest.fixture(scope="module")
def model(registered_model):
    mlflow.set_tracking_uri(registered_model["env"]["MLFLOW_TRACKING_URI"])
    return mlflow.pyfunc.load_model(registered_model["model_uri"])


@pytest.fixture(scope="module")
def text_scores(model, schedule_csv) -> np.ndarray:
    return model.predict(read_text(schedule_csv), params=MODEL_PARAMS)["delay_probability"].to_numpy()


def test_pandas_default_and_parsed_dates_score_like_the_text(model, schedule_csv, text_scores):
    default = pd.read_csv(schedule_csv).drop(columns=[ROW])
    parsed = pd.read_csv(schedule_csv, parse_dates=[SCHEDULED_TIME]).drop(columns=[ROW])
    assert default[FLIGHT_NUMBER].dtype == np.int64, "the case of the issue: all-digit flight numbers read as int64"
    assert parsed[SCHEDULED_TIME].dtype.kind == "M", "parse_dates makes Fecha-I datetime64"
    for name, frame in (("read_csv", default), ("read_csv(parse_dates)", parsed)):
        scores = model.predict(frame, params=MODEL_PARAMS)["delay_probability"].to_numpy()
        np.testing.assert_allclose(scores, text_scores, rtol=0, atol=TOLERANCE, err_msg=name)


def test_http_json_numbers_and_text_score_like_the_text(server, schedule_csv, text_scores):
    records = read_text(schedule_csv).to_dict(orient="records")
    numbers = [{**r, FLIGHT_NUMBER: int(r[FLIGHT_NUMBER])} for r in records]
    for name, body in (("text", records), ("JSON numbers", numbers)):
        answer = server.invoke({"dataframe_records": body, "params": MODEL_PARAMS})
        assert answer.status_code == 200, f"{name}: {answer.text[:300]}"
        scores = [p["delay_probability"] for p in answer.json()["predictions"]]
        np.testing.assert_allclose(scores, text_scores, rtol=0, atol=TOLERANCE, err_msg=name)


def test_spark_udf_on_inferred_types_scores_like_the_text(registered_model, schedule_csv, text_scores, monkeypatch):
    from pyspark.sql import functions as F

    for key, value in registered_model["env"].items():
        monkeypatch.setenv(key, value)
    spark = spark_session("local[2]", 128)
    try:
        frame = spark.read.csv(str(schedule_csv), header=True, inferSchema=True)
        types = dict(frame.dtypes)
        assert (types[FLIGHT_NUMBER], types[SCHEDULED_TIME]) == ("int", "timestamp"), types
        uri = registered_model["model_uri"]
        udf = mlflow.pyfunc.spark_udf(
            spark, uri, result_type=SPARK_RESULT_TYPE, env_manager="local", params=MODEL_PARAMS
        )
        columns = [c for c in frame.columns if c != ROW]
        scored = frame.select(ROW, udf(F.struct(*columns)).alias("score")).select(ROW, "score.delay_probability")
        scores = scored.toPandas().sort_values(ROW)["delay_probability"].to_numpy()
    finally:
        spark.stop()
    np.testing.assert_allclose(scores, text_scores, rtol=0, atol=TOLERANCE, err_msg="spark_udf, inferSchema")
