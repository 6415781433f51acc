"""register's gate scores each model with the code it was logged with, not the checkout's."""

import shutil

import mlflow
import pandas as pd

from pyfunc.model import BOOSTER_ARTIFACT, SPEC_ARTIFACT
from pyfunc.schema import model_signature
from steps import config, etl, register, train


def log_with_code(fitted: train.FittedModel, code_dir, tmp_path) -> str:
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
    processed = etl.run(data_uri=str(flights_csv)).processed_uri
    holdout_uri = f"{processed}/holdout.parquet"
    # Production: a model whose bundled code answers 0.5 for every flight (ROC AUC exactly 0.5).
    constant = tmp_path / "constant" / "pyfunc"
    shutil.copytree(config.PROJECT_ROOT / "pyfunc", constant, ignore=shutil.ignore_patterns("__pycache__"))
    model_py = constant / "model.py"
    source = model_py.read_text()
    scoring = "probability = self.spec.calibrate(booster.inplace_predict(features))"
    assert scoring in source
    model_py.write_text(source.replace(scoring, "probability = 0.5 + 0 * booster.inplace_predict(features)"))
    local = mlflow.artifacts.download_artifacts(processed)
    fitted, _ = train.fit_model(
        pd.read_parquet(f"{local}/train.parquet"), {**train.config.DEFAULTS["train"], "n_estimators": 30, "cv_folds": 2}
    )
    constant_uri = log_with_code(fitted, constant, tmp_path)
    first = register.run(model_uri=constant_uri, holdout_uri=holdout_uri)
    assert first.promoted and first.candidate_roc_auc == 0.5, "the constant model's own code scored it"

    candidate_uri = log_with_code(fitted, config.PROJECT_ROOT / "pyfunc", tmp_path)
    second = register.run(model_uri=candidate_uri, holdout_uri=holdout_uri)
    assert second.production_roc_auc == 0.5, "Production was scored with its bundled code, not the checkout's"
    assert second.candidate_roc_auc > 0.6 and second.promoted
