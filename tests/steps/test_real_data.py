"""The pipeline on the real SCL 2017 file beats the seed baseline computed in the same test."""

import mlflow
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pyfunc.schema import TARGET
from steps import baselines, etl, register, train

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


def test_real_pipeline_beats_seed_baseline(tracking_store, real_data, real_sha256):
    etl_result = etl.run(data_uri=str(real_data), sha256=real_sha256)
    assert etl_result.rows == 68206 and etl_result.rejected == 0, "the published file has no unusable rows"
    train_result = train.run(processed_uri=etl_result.processed_uri)
    registered = register.run(
        model_uri=train_result.model_uri, holdout_uri=f"{etl_result.processed_uri}/holdout.parquet"
    )
    assert registered.promoted and registered.version in ("1", 1)

    local = mlflow.artifacts.download_artifacts(etl_result.processed_uri)
    train_rows, holdout = pd.read_parquet(f"{local}/train.parquet"), pd.read_parquet(f"{local}/holdout.parquet")
    seed_auc = roc_auc_score(holdout[TARGET], baselines.seed_baseline(train_rows, holdout))
    model_auc = train_result.metrics["roc_auc"]
    assert model_auc > seed_auc + 0.02, f"model ROC AUC {model_auc:.3f} vs seed baseline {seed_auc:.3f}"
    assert train_result.metrics["ece"] < 0.05, "calibrated on out-of-fold training days"
