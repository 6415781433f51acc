"""The pipeline on the real SCL 2017 file beats both reference models computed in the same run."""

import mlflow
import pytest

from steps import etl, evaluate, register, train

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


def test_real_pipeline_beats_both_reference_models(tracking_store, real_data, real_sha256):
    etl_result = etl.run(data_uri=str(real_data), sha256=real_sha256)
    assert etl_result.rows == 68206 and etl_result.rejected == 0, "the published file has no unusable rows"
    train_result = train.run(processed_uri=etl_result.processed_uri)
    registered = register.run(
        model_uri=train_result.model_uri, holdout_uri=f"{etl_result.processed_uri}/holdout.parquet"
    )
    assert registered.promoted and registered.version in ("1", 1)
    assert train_result.metrics["ece"] < 0.05, "calibrated on out-of-fold training days"

    result = evaluate.run(processed_uri=etl_result.processed_uri)

    rows = result.table.set_index(["split", "model"])
    model = rows.loc[("day", "model")]
    assert model["roc_auc"] == pytest.approx(train_result.metrics["roc_auc"], abs=1e-9), "same recipe, same days"
    for reference in ("seed", "challenge"):
        for metric in ("roc_auc", "pr_auc"):
            ours, theirs = model[metric], rows.loc[("day", reference), metric]
            assert ours > theirs + 0.02, f"day split {metric}: model {ours:.3f} vs {reference} {theirs:.3f}"
    assert model["ece"] < 0.05, f"day split ECE {model['ece']:.4f}"
    assert rows.loc[("forward", "model"), "ece"] < 0.1, "calibration holds roughly on later months too"
    version = mlflow.MlflowClient().get_model_version(registered.model_name, registered.version)
    assert "| day | model |" in version.description, "the table is where a person promotes"
