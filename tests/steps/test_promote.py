"""promote: real `mlflow models serve` of the staged version, the acceptance checks, production moved only on a pass.

Every promote here starts a real model server and a real (short) locust run; the UI check renders
the version page of a real `mlflow server` in headless Chromium.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pandas as pd
import pytest

from skyprophet import config
from skyprophet.config import MODEL_NAME
from skyprophet.lifecycle import acceptance_record
from skyprophet.mlops import digest, promotion_lock, registry
from skyprophet.ops import acceptance
from skyprophet.ops.processes import (
    ServedModel,
    free_port,
    process_env,
    start_logged,
    stop_process_group,
    wait_for_http,
)
from skyprophet.params import EtlParams, PromoteParams, RegisterParams, ScoreParams, TrainParams
from skyprophet.science import fit, recipe
from skyprophet.storage import sha256_of
from steps import etl, promote, register, score, train
from tests.factory import write_flights
from tests.steps.test_register import log_with_code

pytestmark = [pytest.mark.slow]
NAME = MODEL_NAME
HYPER = {"n_estimators": 20, "cv_folds": 2}
LOAD = {"users": 2, "spawn_rate": 2.0, "duration": "3s", "p95_ms": 5000.0}


@pytest.fixture
def staged(tracking_store, flights_csv):
    """etl -> train -> register on generated flights: version 1 on staging, nothing in Production."""
    processed = etl.run(EtlParams(data_uri=str(flights_csv), sha256=sha256_of(flights_csv))).processed_uri
    trained = train.run(TrainParams(processed_uri=processed, **HYPER))
    registered = register.run(RegisterParams(model_uri=trained.model_uri, holdout_uri=f"{processed}/holdout.parquet"))
    return {"processed": processed, "registered": registered}


def broken_code(tmp_path, old: str, new: str):
    """A copy of ``pyfunc/`` whose model.py has ``old`` replaced by ``new``."""
    code = tmp_path / "broken" / "pyfunc"
    shutil.copytree(config.PROJECT_ROOT / "pyfunc", code, ignore=shutil.ignore_patterns("__pycache__"))
    source = (code / "model.py").read_text()
    assert old in source
    (code / "model.py").write_text(source.replace(old, new))
    return code


def fitted_on(processed: str) -> fit.FittedModel:
    local = mlflow.artifacts.download_artifacts(processed)
    fitted, _ = fit.fit_model(pd.read_parquet(f"{local}/train.parquet"), recipe.Recipe.of(HYPER))
    return fitted


def stage_by_hand(client: mlflow.MlflowClient, model_uri: str, gate_of: str) -> str:
    """Register ``model_uri`` and stage it with the gate figures of version ``gate_of`` (as if the gate passed it)."""
    version = mlflow.register_model(model_uri, NAME)
    assert registry.stage(client, NAME, version)
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

    result = promote.promote(PromoteParams(**LOAD))
    assert result.promoted and result.version == "1" and result.previous_version == ""
    first = client.get_model_version(NAME, "1")
    assert first.current_stage == "Production" and first.aliases == ["production"], "staging left with the stage"
    for check in ("smoke", "contract", "load", "quality"):
        assert first.tags[f"acceptance.{check}"] == "passed", first.tags
    assert first.tags["acceptance.verdict"] == "passed"
    local = registry.download_version(NAME, "1", tmp_path / "v1")
    assert first.tags["acceptance.artifact_digest"] == digest.artifact_digest(local), "the digest of what was served"
    assert "### Acceptance checks" in first.description and "- load: passed" in first.description
    assert "**All checks passed: promoted to Production.**" in first.description, "recorded after the move"

    # A second version, through the gate by force (acceptance still runs every check).
    trained = train.run(TrainParams(processed_uri=staged["processed"], seed=7, **HYPER))
    holdout = f"{staged['processed']}/holdout.parquet"
    second = register.run(RegisterParams(model_uri=trained.model_uri, holdout_uri=holdout, promote="force"))
    assert client.get_model_version(NAME, second.version).current_stage == "Staging"
    assert production_version(client) == "1", "register left production alone"
    result = promote.promote(PromoteParams(promote="force", **LOAD))
    assert result.promoted and result.version == "2" and result.previous_version == "1"
    assert client.get_model_version(NAME, "1").current_stage == "Archived"
    two = client.get_model_version(NAME, "2")
    assert two.current_stage == "Production" and two.tags["promotion.previous_version"] == "1"
    assert client.get_model_version(NAME, "1").tags["promotion.superseded_by"] == "2"
    assert client.get_registered_model(NAME).tags[registry.HISTORY_TAG] == "1,2"

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
    assert client.get_registered_model(NAME).tags[registry.HISTORY_TAG] == "1"


def test_a_version_whose_code_refuses_valid_flights_stays_in_staging(staged, tmp_path):
    client = mlflow.MlflowClient()
    registry.move_production(client, NAME, "1", "test set-up")
    code = broken_code(
        tmp_path,
        "clean, unknown = validate_request(model_input, self.vocabulary, choice)",
        'raise ValueError("this build refuses every flight")',
    )
    broken = stage_by_hand(client, log_with_code(fitted_on(staged["processed"]), code, tmp_path), gate_of="1")

    with pytest.raises(promote.AcceptanceFailed) as failed:
        promote.promote(PromoteParams(**LOAD))
    assert f"version {broken} stays in Staging" in str(failed.value)
    tags = client.get_model_version(NAME, broken).tags
    assert tags["acceptance.smoke"].startswith("failed: HTTP"), tags
    assert "valid flights" in tags["acceptance.smoke"]
    assert tags["acceptance.load"].startswith("failed: "), tags
    assert tags["acceptance.quality"].startswith("failed: the candidate did not score the holdout"), tags
    assert tags["acceptance.verdict"] == "failed: smoke, contract, load, quality", "the verdict the server checks"
    assert client.get_model_version(NAME, broken).current_stage == "Staging"
    assert "Failed: smoke" in client.get_model_version(NAME, broken).description
    assert production_version(client) == "1" and client.get_model_version(NAME, "1").current_stage == "Production"


def test_a_version_that_scores_bad_requests_fails_the_contract(staged, tmp_path):
    client = mlflow.MlflowClient()
    registry.move_production(client, NAME, "1", "test set-up")
    # Unknown categories scored silently (a 200 with a made-up answer) instead of a 400 naming the field.
    code = broken_code(
        tmp_path,
        'choice = check_unknown_categories_choice(params.get("unknown_categories", "refuse"))',
        'choice = "score"',
    )
    model_uri = log_with_code(fitted_on(staged["processed"]), code, tmp_path)
    holdout = f"{staged['processed']}/holdout.parquet"
    broken = register.run(RegisterParams(model_uri=model_uri, holdout_uri=holdout, promote="force")).version

    # The acceptance program alone, as Cloud Build runs it against a URL.
    with ServedModel(f"models:/{NAME}/{broken}", tmp_path / "serve.log") as server:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "skyprophet.ops.acceptance",
                "--url",
                server.url,
                "--model-uri",
                f"models:/{NAME}/{broken}",
            ]
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
        promote.promote(PromoteParams(promote="force", **LOAD))
    tags = client.get_model_version(NAME, broken).tags
    assert tags["acceptance.smoke"] == "passed" and tags["acceptance.load"] == "passed", tags
    assert (
        tags["acceptance.contract"].startswith("failed: ")
        and "unknown airline: HTTP 200" in tags["acceptance.contract"]
    )
    assert tags["acceptance.verdict"] == "failed: contract"
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


# --- trust: the promotion lock, crashes between the writes, changed artifacts, the candidate's environment ---

PUBLISH = """
import sys
from pathlib import Path
import mlflow
from skyprophet.lifecycle import acceptance_record
from skyprophet.mlops import promotion_lock
from skyprophet.ops import acceptance
from skyprophet.mlops import digest
from skyprophet.mlops import registry
name, number, folder = sys.argv[1:4]
client = mlflow.MlflowClient()
results = [acceptance.CheckResult(check, True, "passed in the test's set-up") for check in acceptance.CHECKS]
with promotion_lock.promotion_lock(client, name, f"publish version {number}"):
    registry.sync(client, name)
    local = registry.download_version(name, number, Path(folder))
    version = client.get_model_version(name, number)
    acceptance_record.publish(client, version, results, "auto", digest.artifact_digest(local))
"""


def publish(version: str, folder: Path, crash_after: str = "") -> None:
    """promote's write half (lock, sync, tags + digest + verdict, alias, stage, records), as ``PUBLISH`` runs it.

    With ``crash_after``: in a real process that the hook stops dead after that write.
    """
    if not crash_after:
        client = mlflow.MlflowClient()
        results = [acceptance.CheckResult(check, True, "passed in the test's set-up") for check in acceptance.CHECKS]
        with promotion_lock.promotion_lock(client, NAME, f"publish version {version}"):
            registry.sync(client, NAME)
            local = registry.download_version(NAME, version, folder)
            acceptance_record.publish(
                client, client.get_model_version(NAME, version), results, "auto", digest.artifact_digest(local)
            )
        return
    crashed = subprocess.run(
        [sys.executable, "-c", PUBLISH, NAME, version, str(folder)],
        cwd=config.PROJECT_ROOT,
        env=process_env({registry.CRASH_ENV: crash_after}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crashed.returncode == 1 and f"{registry.CRASH_ENV}={crash_after}" in crashed.stderr, crashed.stderr[-3000:]


def pointers(client: mlflow.MlflowClient) -> tuple[str, list[str]]:
    """(version under the alias production, versions in the stage Production)."""
    in_stage = [
        str(v.version) for v in client.search_model_versions(f"name = '{NAME}'") if v.current_stage == "Production"
    ]
    return production_version(client), in_stage


def lock_is_free(client: mlflow.MlflowClient) -> bool:
    return not client.search_registered_models(f"name = '{NAME}{promotion_lock.LOCK_SUFFIX}'")


def rollback_cli() -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "steps.promote", "--rollback"],
        cwd=config.PROJECT_ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_held_promotion_lock_refuses_a_second_promotion_and_a_dead_holders_lock_is_taken_over(tracking_store):
    client = mlflow.MlflowClient()
    with promotion_lock.promotion_lock(client, NAME, "promote version 7"):
        refused = rollback_cli()
        assert refused.returncode == 3, refused.stderr[-2000:]
        assert f"holds the lock '{NAME}.promotion-lock'" in refused.stderr
        assert f"(pid {os.getpid()} on " in refused.stderr and "promote version 7" in refused.stderr, "names the holder"
        assert not lock_is_free(client), "the refused run left the holder's lock alone"
    assert lock_is_free(client), "released at the end"

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = {**promotion_lock.lock_holder(), "pid": gone.stdout.strip(), "action": "promote version 3"}
    client.create_registered_model(f"{NAME}{promotion_lock.LOCK_SUFFIX}", tags=dead)
    taken_over = rollback_cli()
    assert taken_over.returncode == 2, taken_over.stderr[-2000:]
    assert "taking over the stale promotion lock" in taken_over.stderr
    assert f"no {registry.PRODUCTION_ALIAS} version to roll back" in taken_over.stderr
    assert lock_is_free(client)


def tamper(version: mlflow.entities.model_registry.ModelVersion) -> Path:
    """Append a byte to the version's spec.json in the (local) artifact store, as a writer with EDIT could."""
    model_id = version.source.removeprefix("models:/")
    store = Path(unquote(urlparse(mlflow.get_logged_model(model_id).artifact_location).path))
    (spec,) = store.rglob("spec.json")
    spec.write_text(spec.read_text() + " ")
    return spec


def test_a_crash_between_any_two_writes_leaves_an_accepted_version_serving_and_the_next_run_agrees(staged, tmp_path):
    client = mlflow.MlflowClient()
    publish("1", tmp_path / "v1")
    assert pointers(client) == ("1", ["1"])
    second = str(mlflow.register_model(client.get_model_version(NAME, "1").source, NAME).version)
    # Each crash moves production from `before` to `after`: the other version each time.
    for crash_after, before, after in (("tags", "1", second), ("alias", second, "1"), ("stage", "1", second)):
        publish(after, tmp_path / f"crash-{crash_after}", crash_after)
        alias, in_stage = pointers(client)
        serving = client.get_model_version(NAME, alias)
        assert serving.tags["acceptance.verdict"] == "passed", f"after {crash_after}: alias on an unaccepted version"
        assert serving.tags["acceptance.artifact_digest"].startswith("sha256:")
        expected = {"tags": (before, [before]), "alias": (after, [before]), "stage": (after, [after])}
        assert (alias, in_stage) == expected[crash_after], f"crash after {crash_after}"
        assert not lock_is_free(client), "os._exit left the lock behind"

        publish(after, tmp_path / f"again-{crash_after}")  # the next promote: takes the lock over, repairs, moves
        assert pointers(client) == (after, [after]), f"after the crash at {crash_after} and a rerun"
        assert client.get_model_version(NAME, after).tags[registry.PREVIOUS_TAG] == before
        assert client.get_registered_model(NAME).tags[registry.HISTORY_TAG].endswith(f"{before},{after}")
        assert lock_is_free(client)

    # A rollback stopped after its alias move: production is back on 1, the stage follows at the next sync.
    crashed = subprocess.run(
        [sys.executable, "-m", "steps.promote", "--rollback"],
        cwd=config.PROJECT_ROOT,
        env=process_env({registry.CRASH_ENV: "alias"}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crashed.returncode == 1 and pointers(client) == ("1", [second]), crashed.stderr[-3000:]
    assert registry.sync(client, NAME) == "1" and pointers(client) == ("1", ["1"])

    # Artifacts changed in the store after acceptance: serve and score refuse, naming the version.
    tamper(client.get_model_version(NAME, "1"))
    serve = subprocess.run(
        [sys.executable, "-m", "steps.serve", "--model-uri", f"models:/{NAME}@production", "--port", str(free_port())],
        cwd=config.PROJECT_ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert serve.returncode != 0
    assert f"version 1 of '{NAME}': its artifacts changed after acceptance" in serve.stderr, serve.stderr[-2000:]
    with pytest.raises(digest.ArtifactDigestError, match=f"version 1 of '{NAME}': its artifacts changed"):
        score.run(
            ScoreParams(data=str(write_flights(tmp_path / "day.csv", days=1)), output=str(tmp_path / "scores.parquet"))
        )
    assert not (tmp_path / "scores.parquet").exists()


SECRETS = {
    "MLFLOW_TRACKING_USERNAME": "pipeline-user-xq7",
    "MLFLOW_TRACKING_PASSWORD": "password-xq7",
    "MLFLOW_TRACKING_TOKEN": "token-xq7",
    "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/credentials-xq7.json",
}


def test_two_concurrent_promotes_of_a_version_that_records_its_environment_end_consistent_and_leak_nothing(
    tracking_store, flights_csv, tmp_path
):
    processed = etl.run(EtlParams(data_uri=str(flights_csv), sha256=sha256_of(flights_csv))).processed_uri
    seen = tmp_path / "environment-seen-by-the-model.txt"
    # What a pipeline identity could register: a model.py that records os.environ whenever it is loaded.
    code = broken_code(
        tmp_path,
        '"""Load the booster (XGBoost\'s own UBJ format) and the JSON spec."""',
        f'with open({str(seen)!r}, "a") as seen:\n            seen.write(repr(dict(os.environ)) + "\\n")',
    )
    model_uri = log_with_code(fitted_on(processed), code, tmp_path)
    first = register.run(RegisterParams(model_uri=model_uri, holdout_uri=f"{processed}/holdout.parquet")).version
    client = mlflow.MlflowClient()
    second = stage_by_hand(client, model_uri, gate_of=str(first))
    assert seen.is_file(), "the gate loaded the model's own code"
    seen.unlink()  # what register's gate saw is not promote's business

    load = ["--users", "2", "--spawn-rate", "2", "--duration", "3s", "--p95-ms", "5000"]
    processes, logs = [], []
    for version in (str(first), second):
        logs.append(tmp_path / f"promote-{version}.log")
        command = [sys.executable, "-m", "steps.promote", "--version", version, *load]
        processes.append(start_logged(command, SECRETS, logs[-1]))
    codes = [process.wait(timeout=900) for process in processes]
    outputs = [log.read_text() for log in logs]
    assert sorted(codes) in ([0, 0], [0, 3]), outputs
    for process, code, output in zip(processes, codes, outputs, strict=True):
        if code == 3:  # refused while the other held the lock, naming it
            other = next(p for p in processes if p is not process)
            assert f"holds the lock '{NAME}.promotion-lock'" in output and f"(pid {other.pid} on " in output, output

    alias, in_stage = pointers(client)
    assert in_stage == [alias], "stage and alias agree"
    assert client.get_model_version(NAME, alias).tags["acceptance.verdict"] == "passed"
    assert client.get_registered_model(NAME).tags[registry.HISTORY_TAG].endswith(alias)
    assert lock_is_free(client)

    lines = seen.read_text().splitlines()
    # Each promote that ran served its candidate (whose copy also scores the quality check's holdout);
    # the second also scored the first, then Production, in an isolated scorer: the same recorded code.
    assert len(lines) >= codes.count(0), "the candidate's code ran under each promote that ran"
    for line in lines:
        environment = eval(line)  # noqa: S307 - the repr of a dict of strings written by the test's own model
        assert "PATH" in environment and "MLFLOW_TRACKING_URI" not in environment
        leaked = [key for key in environment if key in SECRETS or key.startswith(("MLFLOW_TRACKING", "GOOGLE_"))]
        assert not leaked, f"the candidate saw {leaked}"
        assert not [v for v in SECRETS.values() if v in line], "a credential's value reached the candidate"
