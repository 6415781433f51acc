"""evaluate: three models, backtest + forward + day splits, one run; the table reaches the version it describes.

The forward split itself: tests/science/test_splits.py."""

from __future__ import annotations

import mlflow
import pytest

from pyfunc.features import FEATURE_NAMES
from skyprophet.config import MODEL_NAME
from skyprophet.mlops import registry
from skyprophet.params import EtlParams, EvaluateParams, RegisterParams, TrainParams
from skyprophet.science import backtest
from skyprophet.storage import sha256_of
from steps import etl, evaluate, register, train

HYPER = {"n_estimators": 60}


@pytest.mark.slow
def test_evaluate_logs_the_table_and_describes_production(tracking_store, flights_csv):
    etl_result = etl.run(EtlParams(data_uri=str(flights_csv), sha256=sha256_of(flights_csv)))
    trained = train.run(TrainParams(processed_uri=etl_result.processed_uri, **HYPER))
    registered = register.run(
        RegisterParams(model_uri=trained.model_uri, holdout_uri=f"{etl_result.processed_uri}/holdout.parquet")
    )
    assert registered.gate_passed
    registry.move_production(mlflow.MlflowClient(), MODEL_NAME, registered.version, "test set-up")

    result = evaluate.run(EvaluateParams(processed_uri=etl_result.processed_uri))

    table = result.table
    expected = [("backtest", m) for m in ("2017-02", "2017-03", backtest.POOLED)] + [("forward", None), ("day", None)]
    for split, period in expected:
        rows = table[(table["split"] == split) & ((table["period"] == period) if period else True)]
        assert sorted(rows["model"]) == sorted(backtest.MODELS), f"one row per model for {split} {period}"
    assert len(table) == len(expected) * len(backtest.MODELS)
    for column in backtest.TABLE_COLUMNS:
        assert table[column].notna().all(), f"{column} computed for every model"
    months = table[(table["split"] == "backtest") & (table["period"] != backtest.POOLED)]
    pooled = table[(table["period"] == backtest.POOLED) & (table["model"] == "model")].iloc[0]
    assert pooled["rows"] == months[months["model"] == "model"]["rows"].sum(), "pooled = the months together"
    day_model = table[(table["split"] == "day") & (table["model"] == "model")].iloc[0]
    run = mlflow.MlflowClient().get_run(result.run_id)
    assert "forward.seed.pr_auc" in run.data.metrics and "day.challenge.ece" in run.data.metrics
    assert "backtest.mean.model.roc_auc" in run.data.metrics and "backtest.pooled.seed.roc_auc" in run.data.metrics
    assert run.data.params["hyper.n_estimators"] == str(HYPER["n_estimators"]), "Production's own recipe"
    for prefix in ("backtest.2017-02.model", "backtest.2017-03.model", "forward.model"):
        logged = {k for k in run.data.metrics if k.startswith(f"{prefix}.contribution.")}
        assert logged == {f"{prefix}.contribution.{f}" for f in FEATURE_NAMES}, f"{prefix}: one per feature"
    trained_run = mlflow.MlflowClient().get_run(trained.run_id)
    contribution = {f: trained_run.data.metrics.get(f"contribution.{f}") for f in FEATURE_NAMES}
    assert all(v is not None and v >= 0 for v in contribution.values()), contribution
    assert max(contribution.values()) > 0, "the holdout's contributions are not all zero"
    train_plots = {a.path for a in mlflow.MlflowClient().list_artifacts(trained.run_id, "plots")}
    assert "plots/contributions.png" in train_plots, train_plots
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id)}
    assert {"evaluation.md", "evaluation.json", "plots"} <= artifacts, artifacts
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "plots/day")}
    assert {"plots/day/reliability.png", "plots/day/roc_pr_curves.png", "plots/day/confusion_model.png"} <= plots
    backtest_plots = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "plots/backtest")}
    assert "plots/backtest/by_month.png" in backtest_plots

    assert result.version == str(registered.version), "Production was trained on the same processed data"
    version = mlflow.MlflowClient().get_model_version(registered.model_name, registered.version)
    assert "| backtest | pooled | model |" in version.description and "| forward |" in version.description
    assert version.description.startswith("Gate on the latest period"), "register's part stays first"
    assert version.tags["eval.day.model.roc_auc"] == f"{day_model['roc_auc']:.4f}"
    assert version.tags["eval.run_id"] == result.run_id


@pytest.mark.slow
def test_evaluate_leaves_a_version_trained_on_other_data_alone(tracking_store, tmp_path):
    from tests.factory import write_flights

    first_csv = write_flights(tmp_path / "a.csv", days=59, seed=1)
    first = etl.run(EtlParams(data_uri=str(first_csv), sha256=sha256_of(first_csv), holdout_months=1))
    trained = train.run(TrainParams(processed_uri=first.processed_uri, **HYPER))
    registered = register.run(
        RegisterParams(model_uri=trained.model_uri, holdout_uri=f"{first.processed_uri}/holdout.parquet")
    )
    second_csv = write_flights(tmp_path / "b.csv", days=59, seed=2)
    second = etl.run(EtlParams(data_uri=str(second_csv), sha256=sha256_of(second_csv), holdout_months=1))

    result = evaluate.run(EvaluateParams(processed_uri=second.processed_uri))

    assert result.version is None, "the table describes other data than the version was trained on"
    version = mlflow.MlflowClient().get_model_version(registered.model_name, registered.version)
    assert "Evaluation (run" not in version.description and "eval.run_id" not in version.tags
    assert len(result.table) == 4 * len(backtest.MODELS), "February (of a Jan-Feb file), pooled, forward, day"
