"""promote: real `mlflow models serve` of the staged version, the acceptance checks, production moved only on a pass.

Every promote here starts a real model server and a real (short) locust run; the UI check renders
the version page of a real `mlflow server` in headless Chromium.
"""

import os
import re
import shutil
import subprocess
import sys

import mlflow
import pandas as pd
import pytest

from steps import config, etl, promote, register, registry, train
from steps.config import MODEL_NAME
from steps.processes import ServedModel, free_port, process_env, start_logged, stop_process_group, wait_for_http
from steps.storage import sha256_of
from tests.steps.test_register import log_with_code

pytestmark = [pytest.mark.slow]
NAME = MODEL_NAME
HYPER = {"n_estimators": 20, "cv_folds": 2}
LOAD = {"users": 2, "spawn_rate": 2.0, "duration": "3s", "p95_ms": 5000.0}


@pytest.fixture
def staged(tracking_store, flights_csv):
    """etl -> train -> register on generated flights: version 1 on staging, nothing in Production."""
    processed = etl.run(data_uri=str(flights_csv), sha256=sha256_of(flights_csv)).processed_uri
    trained = train.run(processed_uri=processed, **HYPER)
    registered = register.run(model_uri=trained.model_uri, holdout_uri=f"{processed}/holdout.parquet")
    return {"processed": processed, "registered": registered}


def broken_code(tmp_path, old: str, new: str):
    """A copy of ``pyfunc/`` whose model.py has ``old`` replaced by ``new``."""
    code = tmp_path / "broken" / "pyfunc"
    shutil.copytree(config.PROJECT_ROOT / "pyfunc", code, ignore=shutil.ignore_patterns("__pycache__"))
    source = (code / "model.py").read_text()
    assert old in source
    (code / "model.py").write_text(source.replace(old, new))
    return code


def fitted_on(processed: str) -> train.FittedModel:
    local = mlflow.artifacts.download_artifacts(processed)
    fitted, _ = train.fit_model(pd.read_parquet(f"{local}/train.parquet"), train.Recipe.of(HYPER))
    return fitted


def stage_by_hand(client: mlflow.MlflowClient, model_uri: str, gate_of: str) -> str:
    """Register ``model_uri`` and stage it with the gate figures of version ``gate_of`` (as if the gate passed it)."""
    version = mlflow.register_model(model_uri, NAME)
    assert register.stage(client, NAME, version)
    for key, value in client.get_model_version(NAME, gate_of).tags.items():
        if key.startswith("gate."):
            client.set_model_version_tag(NAME, version.version, key, value)
    return str(version.version)


def production_version(client: mlflow.MlflowClient) -> str:
    return str(client.get_model_version_by_alias(NAME, "production").version)


def test_register_stages_and_a_good_version_moves_then_rollback_restores(staged, tmp_path):
    client = mlflow.MlflowClient()
    first = client.get_model_version(NAME, "1")
    assert first.current_stage == "Staging" and first.aliases == ["staging"], "register stages, never promotes"
    assert first.tags["gate.decision"] == "promoted" and "model.threshold" in first.tags
    assert registry.production_version(client, NAME) is None

    result = promote.promote(**LOAD)
    assert result.promoted and result.version == "1" and result.previous_version == ""
    first = client.get_model_version(NAME, "1")
    assert first.current_stage == "Production" and first.aliases == ["production"], "staging left with the stage"
    for check in ("smoke", "contract", "load", "quality"):
        assert first.tags[f"acceptance.{check}"] == "passed", first.tags
    assert "### Acceptance checks" in first.description and "- load: passed" in first.description

    # A second version, through the gate by force (acceptance still runs every check).
    trained = train.run(processed_uri=staged["processed"], seed=7, **HYPER)
    holdout = f"{staged['processed']}/holdout.parquet"
    second = register.run(model_uri=trained.model_uri, holdout_uri=holdout, promote_mode="force")
    assert client.get_model_version(NAME, second.version).current_stage == "Staging"
    assert production_version(client) == "1", "register left production alone"
    result = promote.promote(promote_mode="force", **LOAD)
    assert result.promoted and result.version == "2" and result.previous_version == "1"
    assert client.get_model_version(NAME, "1").current_stage == "Archived"
    two = client.get_model_version(NAME, "2")
    assert two.current_stage == "Production" and two.tags["promotion.previous_version"] == "1"
    assert client.get_model_version(NAME, "1").tags["promotion.superseded_by"] == "2"
    assert client.get_registered_model(NAME).tags[promote.HISTORY_TAG] == "1,2"

    # What a person sees on the version page: headline figures, Production's beside them, acceptance, threshold.
    page = rendered_version_page(tmp_path, "2")
    for figure in ("gate.candidate_roc_auc", "gate.candidate_pr_auc", "gate.candidate_ece"):
        assert f"{float(two.tags[figure]):.4f}" in page, f"{figure} {two.tags[figure]} not on the page"
    assert f"{float(two.tags['gate.production_roc_auc']):.4f}" in page, "Production's ROC AUC beside the candidate's"
    for text in ("ROC AUC", "PR AUC", "ECE", "production v1", "Decision threshold", "Acceptance checks"):
        assert text in page, f"{text!r} not on the version page"
    for check in ("smoke", "contract", "load", "quality"):
        assert re.search(rf"{check}: passed", page), f"acceptance {check} not on the page"
        assert f"acceptance.{check}" in page, f"tag acceptance.{check} not on the page"
    assert f"{float(two.tags['model.threshold']):.4f}" in page

    # Rollback, as a person runs it: production back to 1, history kept.
    done = subprocess.run(
        [sys.executable, "-m", "steps.promote", "--rollback"],
        cwd=config.PROJECT_ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "production is version 1 again (was 2)" in done.stdout
    assert production_version(client) == "1" and client.get_model_version(NAME, "1").current_stage == "Production"
    assert client.get_model_version(NAME, "2").current_stage == "Archived"
    assert client.get_model_version(NAME, "2").tags["promotion.rolled_back_to"] == "1"
    assert client.get_model_version(NAME, "1").tags["promotion.restored_from"] == "2"
    assert client.get_registered_model(NAME).tags[promote.HISTORY_TAG] == "1"


def test_a_version_whose_code_refuses_valid_flights_stays_in_staging(staged, tmp_path):
    client = mlflow.MlflowClient()
    promote.move_production(client, NAME, "1", "test set-up")
    code = broken_code(
        tmp_path,
        "clean, unknown = validate_request(model_input, self.vocabulary, choice)",
        'raise ValueError("this build refuses every flight")',
    )
    broken = stage_by_hand(client, log_with_code(fitted_on(staged["processed"]), code, tmp_path), gate_of="1")

    with pytest.raises(promote.AcceptanceFailed) as failed:
        promote.promote(**LOAD)
    assert f"version {broken} stays in Staging" in str(failed.value)
    tags = client.get_model_version(NAME, broken).tags
    assert tags["acceptance.smoke"].startswith("failed: HTTP"), tags
    assert "valid flights" in tags["acceptance.smoke"]
    assert tags["acceptance.load"].startswith("failed: "), tags
    assert tags["acceptance.quality"] == "passed"
    assert client.get_model_version(NAME, broken).current_stage == "Staging"
    assert "Failed: smoke" in client.get_model_version(NAME, broken).description
    assert production_version(client) == "1" and client.get_model_version(NAME, "1").current_stage == "Production"


def test_a_version_that_scores_bad_requests_fails_the_contract(staged, tmp_path):
    client = mlflow.MlflowClient()
    promote.move_production(client, NAME, "1", "test set-up")
    # Unknown categories scored silently (a 200 with a made-up answer) instead of a 400 naming the field.
    code = broken_code(
        tmp_path,
        'choice = check_unknown_categories_choice(params.get("unknown_categories", "refuse"))',
        'choice = "score"',
    )
    model_uri = log_with_code(fitted_on(staged["processed"]), code, tmp_path)
    holdout = f"{staged['processed']}/holdout.parquet"
    broken = register.run(model_uri=model_uri, holdout_uri=holdout, promote_mode="force").version

    # The acceptance program alone, as Cloud Build runs it against a URL.
    with ServedModel(f"models:/{NAME}/{broken}", tmp_path / "serve.log") as server:
        done = subprocess.run(
            [sys.executable, "-m", "steps.acceptance", "--url", server.url, "--model-uri", f"models:/{NAME}/{broken}"]
            + ["--checks", "smoke,contract", "--id-token", "a-token-the-local-server-ignores"],
            cwd=config.PROJECT_ROOT,
            env=process_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    assert "acceptance smoke: passed" in done.stdout
    assert "acceptance contract: failed" in done.stdout and "unknown destination: HTTP 200" in done.stdout

    with pytest.raises(promote.AcceptanceFailed):
        promote.promote(promote_mode="force", **LOAD)
    tags = client.get_model_version(NAME, broken).tags
    assert tags["acceptance.smoke"] == "passed" and tags["acceptance.load"] == "passed", tags
    assert (
        tags["acceptance.contract"].startswith("failed: ")
        and "unknown airline: HTTP 200" in tags["acceptance.contract"]
    )
    assert client.get_model_version(NAME, broken).current_stage == "Staging"
    assert production_version(client) == "1"


def test_promote_without_a_staging_version_says_what_to_run_first(tracking_store):
    done = subprocess.run(
        [sys.executable, "-m", "steps.promote"],
        cwd=config.PROJECT_ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"no version of '{MODEL_NAME}' on the alias 'staging'" in done.stderr
    assert "run `mlflow run . -e register` (or `make pipeline`) first" in done.stderr
    rollback = subprocess.run(
        [sys.executable, "-m", "steps.promote", "--rollback"],
        cwd=config.PROJECT_ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rollback.returncode == 2 and "no production version to roll back" in rollback.stderr


def chromium() -> str:
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")  # Debian; GitHub's runners
    found = next((path for path in map(shutil.which, names) if path), None)
    if not found:
        message = "headless Chromium not found: apt-get install -y chromium (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def rendered_version_page(tmp_path, version: str) -> str:
    """The version page of a real `mlflow server` on this store, as headless Chromium renders it (DOM + PNG)."""
    browser = chromium()
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", mlflow.get_tracking_uri()]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = start_logged(command, {}, tmp_path / "mlflow-server.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=180, process=server)
        url = f"http://127.0.0.1:{port}/#/models/{NAME}/versions/{version}"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]
        flags += ["--virtual-time-budget=25000", "--window-size=1400,2000"]
        run = {"capture_output": True, "text": True, "timeout": 180}
        subprocess.run([browser, *flags, f"--screenshot={tmp_path / f'version-{version}.png'}", url], **run)
        return subprocess.run([browser, *flags, "--dump-dom", url], **run).stdout
    finally:
        stop_process_group(server)
