"""The /ping and /health sidecar as a real process beside a real `mlflow models serve`.

The model server is started late, killed, and replaced by one whose model refuses the canary:
/health follows each within a couple of seconds; /ping stays 200 throughout. /health names the
version the alias ``production`` points at beside the served one, and flags a stale server.
"""

import json
import os
import shutil
import signal
import time
from pathlib import Path

import mlflow
import pytest
import requests

from skyprophet.mlops.digest import DIGEST_TAG
from skyprophet.ops.processes import (
    BIN,
    ServedModel,
    free_port,
    start_logged,
    stop_process_group,
    wait_for_http,
)

pytestmark = [pytest.mark.slow]


class Sidecar:
    """``python -m sidecar.app`` on a free port, watching ``model_server_url``."""

    def __init__(
        self, env: dict[str, str], model_server_url: str, log_path: Path, model_uri: str, extra: dict | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        sidecar_env = {
            **env,
            "MODEL_SERVER_URL": model_server_url,
            "MODEL_URI": model_uri,
            "SIDECAR_HOST": "127.0.0.1",
            "SIDECAR_PORT": str(self.port),
            "SIDECAR_POLL_SECONDS": "0.5",
            **(extra or {}),
        }
        self.process = start_logged([str(BIN / "python"), "-m", "sidecar.app"], sidecar_env, log_path)
        wait_for_http(f"{self.url}/ping", timeout=30, process=self.process)

    def health(self) -> requests.Response:
        return requests.get(f"{self.url}/health", timeout=2)

    def wait_for_health(self, code: int, timeout: float) -> tuple[requests.Response, float]:
        """Poll /health until it answers ``code``; returns the answer and the seconds it took."""
        started = time.monotonic()
        answer = self.health()
        while answer.status_code != code and time.monotonic() - started < timeout:
            time.sleep(0.1)
            answer = self.health()
        assert answer.status_code == code, (
            f"/health still {answer.status_code} after {timeout} s: {answer.text}\n{self.log_path.read_text()[-2000:]}"
        )
        return answer, time.monotonic() - started

    def wait_for_reason(self, words: str, timeout: float = 30) -> dict:
        """Poll /health until its 503 reason contains ``words`` (the first check reads the registry)."""
        deadline = time.monotonic() + timeout
        body = self.health().json()
        while words not in body["reason"] and time.monotonic() < deadline:
            time.sleep(0.2)
            body = self.health().json()
        assert words in body["reason"], f"/health reason never said {words!r}: {body}"
        return body

    def stop(self) -> None:
        stop_process_group(self.process)


@pytest.fixture
def registry(registered_model, monkeypatch) -> dict:
    """The registered model, with this process's MLflow pointed at its store too."""
    for key, value in registered_model["env"].items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(registered_model["env"]["MLFLOW_TRACKING_URI"])
    return registered_model


@pytest.fixture
def sidecars(registered_model, tmp_path):
    started: list[Sidecar] = []

    def start(model_server_url: str, model_uri: str = registered_model["model_uri"], **extra: str) -> Sidecar:
        sidecar = Sidecar(
            registered_model["env"], model_server_url, tmp_path / f"sidecar-{len(started)}.log", model_uri, extra
        )
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        sidecar.stop()


def ping(sidecar: Sidecar) -> int:
    return requests.get(f"{sidecar.url}/ping", timeout=2).status_code


def test_health_follows_the_model_server_from_start_to_death(registry, sidecars, tmp_path):
    port = free_port()
    sidecar = sidecars(f"http://127.0.0.1:{port}")
    answer, _ = sidecar.wait_for_health(503, timeout=15)
    assert answer.json()["reason"].startswith(("starting", "reading")), f"before the model server: {answer.json()}"
    assert ping(sidecar) == 200, "/ping is liveness of the sidecar alone"

    # On the port the sidecar was told before it started.
    server = ServedModel(registry["model_uri"], tmp_path / "serve.log", registry["env"], port=port, timeout=90)
    try:
        answer, _ = sidecar.wait_for_health(200, timeout=30)
        body = answer.json()
        client = mlflow.MlflowClient(registry["env"]["MLFLOW_TRACKING_URI"])
        version = client.get_model_version_by_alias(registry["model_name"], "production")
        model = body["model"]
        assert (model["name"], model["version"]) == (registry["model_name"], str(version.version)), model
        assert model["stage"] == "Production" and model["aliases"] == ["production"], model
        assert model["run_id"] == version.run_id, f"run id should be the version's: {model}"
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{registry['model_name']}/{version.version}")
        threshold = json.loads((Path(local) / "artifacts/spec.json").read_text())["threshold"]
        assert model["threshold"] == pytest.approx(threshold), "the threshold shipped in the model"
        assert model["canary_rows"] >= 1 and body["canary_ms"] is not None, body
        assert body["status"] == "ready", body
        assert body["production"]["version"] == str(version.version), "the alias production, read beside"
        assert body["serves_production"] is True and "warning" not in body, body
        os.killpg(server.process.pid, signal.SIGKILL)  # a crash, not a clean stop
        server.process.wait()
    finally:
        server.stop()
    answer, seconds = sidecar.wait_for_health(503, timeout=3)
    assert seconds <= 2.5, f"a dead model server should show within about a second, took {seconds:.1f} s"
    assert answer.json()["reason"].startswith("model server down"), answer.json()
    assert answer.json()["model"]["version"] == str(version.version), "the model is still described while down"
    assert ping(sidecar) == 200, "/ping stays 200 while the sidecar runs"


def test_health_is_503_when_the_model_refuses_the_canary(registry, sidecars, tmp_path):
    """A real model server whose model never saw the example's airlines: /ping 200, canary 400."""
    env = registry["env"]
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=registry["model_uri"]))
    broken = tmp_path / "model-unknown-airlines"
    shutil.copytree(local, broken)
    spec_path = broken / "artifacts/spec.json"
    spec = json.loads(spec_path.read_text())
    spec["features"]["vocabulary"]["OPERA"] = ["NOBODY AIR"]
    spec_path.write_text(json.dumps(spec))
    server = ServedModel(str(broken), tmp_path / "serve-broken.log", env, timeout=90)
    try:
        assert requests.get(f"{server.url}/ping", timeout=2).status_code == 200, "the model server itself is up"
        sidecar = sidecars(server.url)
        reason = sidecar.wait_for_reason("canary prediction failed: HTTP 400")["reason"]
        assert "OPERA" in reason and "never seen" in reason, f"the canary's failure says why: {reason}"
        assert sidecar.health().status_code == 503
    finally:
        server.stop()


def test_health_is_503_naming_the_registry_problem_and_other_paths_are_404(sidecars):
    sidecar = sidecars(f"http://127.0.0.1:{free_port()}", model_uri="models:/no-such-model/Production")
    body = sidecar.wait_for_reason("registry lookup of models:/no-such-model/Production failed")
    assert "no-such-model" in body["reason"] and sidecar.health().status_code == 503, body
    assert ping(sidecar) == 200
    answer = requests.get(f"{sidecar.url}/nope", timeout=2)
    assert answer.status_code == 404 and "/health" in answer.json()["error"], answer.text


def test_health_flags_a_server_whose_version_is_not_the_one_production_names(registry, sidecars):
    """Two versions of a model of its own (this store's flight-delay stays as it is); production moves."""
    client = mlflow.MlflowClient(registry["env"]["MLFLOW_TRACKING_URI"])
    source = client.get_model_version(registry["model_name"], registry["version"])
    name = "sidecar-stale-check"
    client.create_registered_model(name)
    served, promoted = (client.create_model_version(name, source.source, run_id=source.run_id) for _ in range(2))
    client.set_registered_model_alias(name, "production", promoted.version)
    # No model server needed: the registry part of /health is there in a 503 too.
    sidecar = sidecars(
        f"http://127.0.0.1:{free_port()}",
        model_uri=f"models:/{name}/{served.version}",
        SIDECAR_REGISTRY_POLL_SECONDS="0.5",
    )

    def wait_for_production(version: str | None) -> dict:
        deadline = time.monotonic() + 30
        body = sidecar.health().json()
        while body.get("production", {}).get("version") != version and time.monotonic() < deadline:
            time.sleep(0.2)
            body = sidecar.health().json()
        assert body["production"]["version"] == version, f"/health never saw production at {version}: {body}"
        return body

    body = wait_for_production(str(promoted.version))
    assert body["model"]["version"] == str(served.version) and body["serves_production"] is False, body
    expected = f"serving version {served.version} but production names version {promoted.version}"
    assert expected in body["warning"], body

    client.set_registered_model_alias(name, "production", served.version)
    body = wait_for_production(str(served.version))
    assert body["serves_production"] is True and "warning" not in body, body

    client.delete_registered_model_alias(name, "production")
    body = wait_for_production(None)
    assert body["serves_production"] is False and "production" in body["production"]["error"], body
    assert body["warning"] == "cannot tell which version production names", body


def test_health_is_503_naming_the_version_whose_artifacts_changed_after_acceptance(registry, sidecars):
    """A version whose recorded digest no longer matches its files: the sidecar refuses it, naming it."""
    client = mlflow.MlflowClient(registry["env"]["MLFLOW_TRACKING_URI"])
    source = client.get_model_version(registry["model_name"], registry["version"])
    name = "sidecar-digest-check"
    client.create_registered_model(name)
    version = client.create_model_version(name, source.source, run_id=source.run_id)
    client.set_model_version_tag(name, version.version, DIGEST_TAG, "sha256:" + "0" * 64)  # not these files
    sidecar = sidecars(f"http://127.0.0.1:{free_port()}", model_uri=f"models:/{name}/{version.version}")
    body = sidecar.wait_for_reason("artifacts changed after acceptance")
    assert f"version {version.version} of {name!r}" in body["reason"], body
