"""The pipeline on the real SCL 2017 file: time-forward, the model beats both reference models in the same run."""

import mlflow
import pytest

from pyfunc.features import FEATURE_NAMES
from skyprophet.config import MODEL_NAME
from skyprophet.mlops import registry
from skyprophet.params import EtlParams, EvaluateParams, RegisterParams, TrainParams
from skyprophet.science import backtest
from steps import etl, evaluate, register, train

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


def test_real_pipeline_beats_both_reference_models_month_ahead(tracking_store, real_data, real_sha256):
    etl_result = etl.run(EtlParams(data_uri=str(real_data), sha256=real_sha256))
    assert etl_result.rows == 68206 and etl_result.rejected == 0, "the published file has no unusable rows"
    train_result = train.run(TrainParams(processed_uri=etl_result.processed_uri))
    registered = register.run(
        RegisterParams(model_uri=train_result.model_uri, holdout_uri=f"{etl_result.processed_uri}/holdout.parquet")
    )
    assert registered.gate_passed and registered.version in ("1", 1) and registered.refit_run_id
    registry.move_production(mlflow.MlflowClient(), MODEL_NAME, registered.version, "test set-up")
    assert train_result.metrics["ece"] < 0.05, "Nov-Dec, calibrated on earlier months only"
    assert not {"day_of_month", "day_of_year"} & set(FEATURE_NAMES), "no feature memorises a date"

    result = evaluate.run(EvaluateParams(processed_uri=etl_result.processed_uri))

    table = result.table
    pooled = table[(table["split"] == "backtest") & (table["period"] == backtest.POOLED)].set_index("model")
    for reference in ("seed", "challenge"):
        for metric in ("roc_auc", "pr_auc"):
            ours, theirs = pooled.loc["model", metric], pooled.loc[reference, metric]
            assert ours > theirs + 0.02, f"backtest {metric}: model {ours:.3f} vs {reference} {theirs:.3f}"
    assert pooled.loc["model", "ece"] < 0.05, f"backtest ECE {pooled.loc['model', 'ece']:.4f}"
    months = table[(table["split"] == "backtest") & (table["period"] != backtest.POOLED)]
    assert sorted(months["period"].unique()) == [f"2017-{m:02d}" for m in range(7, 13)], "the file's last six months"
    version = mlflow.MlflowClient().get_model_version(registered.model_name, registered.version)
    assert result.version == str(registered.version), "the refitted version trained on these flights"
    assert "| backtest | pooled | model |" in version.description, "the table is where a person promotes"
    assert float(version.tags["eval.backtest.pooled.model.roc_auc"]) == pytest.approx(
        pooled.loc["model", "roc_auc"], abs=1e-4
    )
