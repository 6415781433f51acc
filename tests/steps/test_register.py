"""register: the gate scores each model with its own code, on the latest period; the promoted version is refitted."""

import json
import shutil

import mlflow
import pandas as pd
import pytest

from pyfunc.model import BOOSTER_ARTIFACT, SPEC_ARTIFACT
from pyfunc.schema import model_signature
from skyprophet import config
from skyprophet.config import MODEL_NAME
from skyprophet.lifecycle import candidates, registration
from skyprophet.mlops import registry
from skyprophet.mlops.tags import CANDIDATE_URI_TAG
from skyprophet.params import EtlParams, RegisterParams, TrainParams
from skyprophet.science import fit, recipe
from skyprophet.storage import sha256_of
from steps import etl, register, train
from tests.factory import make_flights


def log_with_code(fitted: fit.FittedModel, code_dir, tmp_path) -> str:
    """Log ``fitted`` like train does, but bundling the ``pyfunc`` package from ``code_dir``."""
    fitted.booster.save_model(tmp_path / "booster.ubj")
    fitted.spec.save(str(tmp_path / "spec.json"))
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code_dir / "model.py"),
            artifacts={BOOSTER_ARTIFACT: str(tmp_path / "booster.ubj"), SPEC_ARTIFACT: str(tmp_path / "spec.json")},
            code_paths=[str(code_dir)],
            signature=model_signature(),
        )
    return info.model_uri


def test_gate_runs_each_model_on_its_own_code(tracking_store, flights_csv, tmp_path):
    processed = etl.run(EtlParams(data_uri=str(flights_csv), sha256=sha256_of(flights_csv))).processed_uri
    holdout_uri = f"{processed}/holdout.parquet"
    # Production: a model whose bundled code answers 0.5 for every flight (ROC AUC exactly 0.5).
    constant = tmp_path / "constant" / "pyfunc"
    shutil.copytree(config.PROJECT_ROOT / "pyfunc", constant, ignore=shutil.ignore_patterns("__pycache__"))
    model_py = constant / "model.py"
    source = model_py.read_text()
    scoring = "probability = self.spec.calibrate(score)"
    assert scoring in source
    model_py.write_text(source.replace(scoring, "probability = 0.5 + 0 * score"))
    local = mlflow.artifacts.download_artifacts(processed)
    fitted, _ = fit.fit_model(pd.read_parquet(f"{local}/train.parquet"), recipe.Recipe(n_estimators=30, cv_folds=2))
    constant_uri = log_with_code(fitted, constant, tmp_path)
    first = register.run(RegisterParams(model_uri=constant_uri, holdout_uri=holdout_uri))
    assert first.gate_passed and first.candidate_roc_auc == 0.5, "the constant model's own code scored it"
    client = mlflow.MlflowClient()
    assert client.get_model_version(MODEL_NAME, first.version).current_stage == "Staging", "staged, not promoted"
    assert registry.production_version(client, MODEL_NAME) is None, "register never moves production"
    registry.move_production(client, MODEL_NAME, first.version, "test set-up")

    candidate_uri = log_with_code(fitted, config.PROJECT_ROOT / "pyfunc", tmp_path)
    second = register.run(RegisterParams(model_uri=candidate_uri, holdout_uri=holdout_uri))
    assert second.production_roc_auc == 0.5, "Production was scored with its bundled code, not the checkout's"
    assert second.candidate_roc_auc > 0.6 and second.gate_passed
    staged = client.get_model_version_by_alias(MODEL_NAME, "staging")
    assert str(staged.version) == str(second.version) and staged.current_stage == "Staging"
    assert str(client.get_model_version_by_alias(MODEL_NAME, "production").version) == str(first.version)


def pattern_flights(start: str, days: int, seed: int, reverse: bool) -> pd.DataFrame:
    """Generated flights; with ``reverse`` the airlines' delay pattern is turned around (AAA <-> CCC)."""
    flights = make_flights(days=days, seed=seed, start=start)
    if reverse:
        swap = {"AAA": "CCC", "CCC": "AAA", "Alpha Air": "Gamma Jet", "Gamma Jet": "Alpha Air"}
        for column in ("Emp-I", "Emp-O", "OPERA"):
            flights[column] = flights[column].replace(swap)
    return flights


def test_the_gate_judges_on_the_latest_months_and_the_promoted_version_is_refitted_on_all(tracking_store, tmp_path):
    """Jan-Feb follow one pattern, March the reverse: only a time-forward gate prefers the March model."""
    raw = pd.concat(
        [pattern_flights("2017-01-01", 59, 1, reverse=False), pattern_flights("2017-03-01", 31, 2, reverse=True)],
        ignore_index=True,
    )
    raw.to_csv(tmp_path / "raw.csv", index=False)
    processed = etl.run(
        EtlParams(data_uri=str(tmp_path / "raw.csv"), sha256=sha256_of(tmp_path / "raw.csv"), holdout_months=1)
    ).processed_uri
    hyper = {"n_estimators": 40, "cv_folds": 2}
    # Production: trained on the old pattern (the file's first two months), registered by force.
    old = train.run(TrainParams(processed_uri=processed, **hyper))
    first = register.run(
        RegisterParams(model_uri=old.model_uri, holdout_uri=f"{processed}/holdout.parquet", promote="force")
    )
    registry.move_production(mlflow.MlflowClient(), MODEL_NAME, first.version, "test set-up")
    # The candidate: the same recipe trained on flights of the new pattern (another file's March).
    new_raw = pattern_flights("2016-03-01", 31, 3, reverse=True)
    new_raw.to_csv(tmp_path / "new.csv", index=False)
    new_processed = etl.run(
        EtlParams(data_uri=str(tmp_path / "new.csv"), sha256=sha256_of(tmp_path / "new.csv"), split="day")
    ).processed_uri
    candidate = train.run(TrainParams(processed_uri=new_processed, **hyper))
    second = register.run(RegisterParams(model_uri=candidate.model_uri, holdout_uri=f"{processed}/holdout.parquet"))

    client = mlflow.MlflowClient()
    version = client.get_model_version(MODEL_NAME, second.version)
    assert version.tags["gate.period"] == "2017-03-01 to 2017-03-31", "the holdout is the file's last month"
    assert second.gate_passed and version.tags["gate.decision"] == "promoted", version.tags
    assert float(version.tags["gate.candidate_roc_auc"]) > float(version.tags["gate.production_roc_auc"]) + 0.1
    assert version.tags["gate.production_scored_as"].startswith("recipe refitted"), "v1 was refitted on March too"
    assert "Gate on the latest period (2017-03-01 to 2017-03-31)" in version.description
    # What serves was refitted on every flight of the gate's file, in a run linked from the version.
    refit = client.get_run(version.run_id)
    assert version.run_id == second.refit_run_id == version.tags["skyprophet.refit_run_id"]
    assert refit.data.tags["skyprophet.step"] == "refit"
    assert refit.data.tags["skyprophet.refit_of"] == candidate.run_id
    assert refit.data.params["n_estimators"] == "40"
    assert version.tags["skyprophet.trained_through"] == raw["Fecha-I"].max()
    (dataset,) = [d for d in refit.inputs.dataset_inputs if d.dataset.name == "train"]
    assert json.loads(dataset.dataset.profile)["num_rows"] == len(raw), "train + holdout: all flights"


def test_a_failing_refit_leaves_no_version_behind(tracking_store, flights_csv, monkeypatch):
    processed = etl.run(
        EtlParams(data_uri=str(flights_csv), sha256=sha256_of(flights_csv), holdout_months=1)
    ).processed_uri
    trained = train.run(TrainParams(processed_uri=processed, n_estimators=20, cv_folds=2))

    def broken(*args, **kwargs):
        raise RuntimeError("the machine went away mid-refit")

    monkeypatch.setattr(candidates, "log_fitted", broken)
    with pytest.raises(RuntimeError, match="mid-refit"):
        register.run(RegisterParams(model_uri=trained.model_uri, holdout_uri=f"{processed}/holdout.parquet"))
    assert mlflow.MlflowClient().search_model_versions(f"name = '{MODEL_NAME}'") == []


def test_a_version_is_created_with_its_gate_tags_so_a_failure_after_leaves_none_untagged(
    tracking_store, flights_csv, monkeypatch
):
    """Under auth the pipeline may not delete a version (MANAGE): it must never exist without its gate tags."""
    processed = etl.run(
        EtlParams(data_uri=str(flights_csv), sha256=sha256_of(flights_csv), holdout_months=1)
    ).processed_uri
    trained = train.run(TrainParams(processed_uri=processed, n_estimators=20, cv_folds=2))
    holdout = f"{processed}/holdout.parquet"

    def refused(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("Permission denied", error_code="PERMISSION_DENIED")

    with monkeypatch.context() as patch:
        patch.setattr(registration, "stage", refused)  # a 403 on the staging alias, after the version exists
        patch.setattr(mlflow.MlflowClient, "delete_model_version", refused)  # and no MANAGE to clean up
        with pytest.raises(mlflow.exceptions.MlflowException, match="Permission denied"):
            register.run(RegisterParams(model_uri=trained.model_uri, holdout_uri=holdout))
    client = mlflow.MlflowClient()
    (left,) = client.search_model_versions(f"name = '{MODEL_NAME}'")
    for tag in ("gate.decision", "gate.candidate_roc_auc", "gate.holdout_uri", "model.threshold"):
        assert tag in left.tags, f"{tag} missing on the version left behind"
    assert left.tags[CANDIDATE_URI_TAG] == trained.model_uri
    again = register.run(RegisterParams(model_uri=trained.model_uri, holdout_uri=holdout))
    assert again.version == left.version, "the rerun reuses it"
    assert client.get_model_version(MODEL_NAME, left.version).aliases == ["staging"]
