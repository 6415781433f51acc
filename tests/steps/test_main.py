"""End to end with real processes: `mlflow run . -e main` (through staging and promote), then `mlflow models serve`."""

import subprocess

import mlflow
import pytest

from skyprophet.config import MODEL_NAME, PROJECT_ROOT
from skyprophet.ops.processes import mlflow_run_command, process_env
from skyprophet.storage import sha256_of
from tests.factory import make_flights

pytestmark = [pytest.mark.slow]
MAIN_TIMEOUT = 600


def mlflow_run(entry_point: str, env: dict[str, str], **params) -> subprocess.CompletedProcess:
    """`mlflow run . -e <entry_point> --env-manager local` with -P parameters, as a user types it."""
    command = mlflow_run_command(entry_point, env["MLFLOW_EXPERIMENT_NAME"], **params)
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=process_env(env), capture_output=True, text=True, timeout=MAIN_TIMEOUT
    )


LOAD = {"users": 2, "spawn_rate": 2, "duration": "3s", "p95_ms": 5000}


def test_main_registers_promotes_and_serves(tracking_store, flights_csv, serve_model):
    done = mlflow_run(
        "main", tracking_store, data_uri=flights_csv, sha256=sha256_of(flights_csv), n_estimators=40, cv_folds=2, **LOAD
    )
    assert done.returncode == 0, done.stderr[-4000:]
    client = mlflow.MlflowClient()
    first = client.get_model_version_by_alias(MODEL_NAME, "production")
    assert str(first.version) == "1" and first.current_stage == "Production"
    assert first.tags["gate.decision"] == "promoted" and first.tags["gate.production_version"] == "none"
    assert all(first.tags[f"acceptance.{c}"] == "passed" for c in ("smoke", "contract", "load", "quality"))
    assert first.tags["acceptance.verdict"] == "passed" and first.tags["acceptance.artifact_digest"].startswith(
        "sha256:"
    )

    flights = make_flights(days=3, seed=99)
    server = serve_model(f"models:/{MODEL_NAME}@production", tracking_store)
    records = flights.drop(columns=["Fecha-O"]).to_dict(orient="records")
    for payload in (
        {"dataframe_records": records},
        {"dataframe_split": flights.to_dict(orient="split", index=False)},
    ):
        answer = server.invoke(payload)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert len(predictions) == len(flights), "one prediction per flight sent"
        assert all(0.0 <= p["delay_probability"] <= 1.0 and p["delay"] in (0, 1) for p in predictions)

    # A deliberately weak model: version 2 stays in Staging (quality failed), Production stays at version 1;
    # under promote=auto that is an outcome, not a failure of main.
    done = mlflow_run(
        "main",
        tracking_store,
        data_uri=flights_csv,
        sha256=sha256_of(flights_csv),
        n_estimators=1,
        max_depth=1,
        cv_folds=2,
        **LOAD,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    second = client.get_model_version(MODEL_NAME, "2")
    assert second.tags["gate.decision"] == "not promoted", second.tags
    assert float(second.tags["gate.candidate_roc_auc"]) < float(second.tags["gate.production_roc_auc"])
    # promote scored both itself (the gate's tags are only a hint, quoted in the reason).
    quality = second.tags["acceptance.quality"]
    assert quality.startswith("failed: below Production (ROC AUC ") and "vs Production v1 " in quality, quality
    assert quality.endswith("the gate recorded: not promoted)"), quality
    assert second.tags["acceptance.verdict"] == "failed: quality"
    assert second.tags["acceptance.smoke"] == "passed"
    assert str(client.get_model_version_by_alias(MODEL_NAME, "production").version) == "1"
    assert client.get_model_version(MODEL_NAME, "1").current_stage == "Production"
    assert second.current_stage == "Staging" and second.aliases == ["staging"]


def test_each_step_runs_alone_and_says_what_is_missing(tracking_store, flights_csv):
    missing = mlflow_run("train", tracking_store)
    assert missing.returncode != 0
    assert "mlflow run . -e etl" in missing.stderr, "train without etl output says to run etl first"
    nothing = mlflow_run("promote", tracking_store)
    assert nothing.returncode != 0 and "run `mlflow run . -e register`" in nothing.stderr
    steps = (
        ("etl", {"data_uri": flights_csv, "sha256": sha256_of(flights_csv)}),
        ("train", {"n_estimators": 30, "cv_folds": 2}),
        ("register", {}),
    )
    for entry_point, params in steps:
        done = mlflow_run(entry_point, tracking_store, **params)
        assert done.returncode == 0, f"{entry_point}: {done.stderr[-3000:]}"
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL_NAME, "staging").version) == "1"
    done = mlflow_run("promote", tracking_store, version=1, **LOAD)
    assert done.returncode == 0, done.stderr[-3000:]
    version = client.get_model_version_by_alias(MODEL_NAME, "production")
    assert str(version.version) == "1" and version.current_stage == "Production"
    again = mlflow_run("register", tracking_store, promote="force")
    assert again.returncode == 0, again.stderr[-3000:]
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert len(versions) == 1, "registering the same train run twice makes no second version"
    assert versions[0].current_stage == "Production", "a rerun of register does not pull Production back to Staging"
