"""The registry webhook receiver (sidecar/webhook.py) as a real process, called by a real tracking server.

A `production` move on `make tracking-server` (PostgreSQL backend) reaches the receiver signed,
and the receiver runs the configured deploy command with that version; other aliases are ignored.
Calls an attacker could make are refused: unsigned, signed with another secret, replayed late,
replayed with the same delivery id, or with a version that is not a number.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import pytest
import requests

from sidecar.webhook import signature
from skyprophet.ops.processes import BIN, free_port, process_env, start_logged, stop_process_group, wait_for_http

pytestmark = [pytest.mark.slow]

SECRET = "s3cret-for-the-webhook-test"
MODEL = "flight-delay"
# Appends its arguments as one line to the file given first: what `gcloud builds triggers run` stands for.
RECORDER = "import sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + '\\n')"


class Receiver:
    """``python -m sidecar.webhook`` on a free port, its deploy command appending to ``calls``."""

    def __init__(self, tmp_path: Path, command: list[str] | None = None, name: str = "receiver") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.calls = tmp_path / f"{name}-calls.txt"
        self.log_path = tmp_path / f"{name}.log"
        command = command or [sys.executable, "-c", RECORDER, str(self.calls)]
        env = {
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_DEPLOY_COMMAND": shlex.join([*command, "--substitutions=_MODEL_VERSION={version}", "{name}"]),
            "WEBHOOK_HOST": "127.0.0.1",
            "WEBHOOK_PORT": str(self.port),
        }
        self.process = start_logged([str(BIN / "python"), "-m", "sidecar.webhook"], env, self.log_path)
        wait_for_http(f"{self.url}/ping", timeout=30, process=self.process)

    def lines(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def wait_for(self, predicate, what: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"never saw {what}; receiver log:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_process_group(self.process)


def post(
    receiver: Receiver,
    data: dict,
    secret: str | None = SECRET,
    timestamp: int | None = None,
    delivery_id: str | None = None,
    event: tuple[str, str] = ("model_version_alias", "created"),
) -> requests.Response:
    """POST what MLflow posts (its body layout and headers), signed with ``secret`` (None: unsigned)."""
    body = json.dumps({"entity": event[0], "action": event[1], "timestamp": "2026-12-03T00:00:00Z", "data": data})
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id, "X-MLflow-Timestamp": stamp}
    if secret is not None:
        headers["X-MLflow-Signature"] = signature(secret, delivery_id, stamp, body.encode())
    return requests.post(f"{receiver.url}/webhook", data=body, headers=headers, timeout=30)


@pytest.fixture
def receivers(tmp_path):
    started: list[Receiver] = []

    def start(**kwargs) -> Receiver:
        receiver = Receiver(tmp_path, **kwargs)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture(scope="module")
def server(tracking_server, postgres_database, tmp_path_factory):
    """``make tracking-server`` on PostgreSQL, allowed to call a receiver on 127.0.0.1 over http (tests only)."""
    root = tmp_path_factory.mktemp("webhook-server")
    return tracking_server(
        {
            "MLFLOW_BACKEND_STORE_URI": postgres_database,
            "MLFLOW_ARTIFACTS_DESTINATION": str(root / "artifacts"),
            # Production keeps MLflow's defaults (https only, no private addresses); the receiver here is local.
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            # One key for every worker and restart, or a stored secret cannot be decrypted (docs/operations.md).
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        }
    )


def register_versions(client: mlflow.MlflowClient, count: int) -> list[str]:
    """``count`` versions of MODEL, each from a run's (placeholder) model folder on the server."""
    client.create_registered_model(MODEL)
    experiment = client.create_experiment(f"webhook-{uuid.uuid4().hex[:8]}")
    versions = []
    for _ in range(count):
        run = client.create_run(experiment)
        client.log_text(run.info.run_id, "placeholder", "model/MLmodel")
        client.set_terminated(run.info.run_id)
        source = f"{run.info.artifact_uri}/model"
        versions.append(client.create_model_version(MODEL, source, run_id=run.info.run_id).version)
    return [str(v) for v in versions]


def test_a_production_move_on_the_tracking_server_starts_the_deployment_of_that_version(server, receivers):
    receiver = receivers()
    client = mlflow.MlflowClient(server.url)
    first, second = register_versions(client, 2)
    hook = client.create_webhook(
        name="skyprophet-deploy",
        url=f"{receiver.url}/webhook",
        events=["model_version_alias.created"],
        secret=SECRET,
    )

    client.set_registered_model_alias(MODEL, "staging", first)
    receiver.wait_for(lambda: "alias 'staging'" in receiver.log_path.read_text(), "the staging move ignored")
    assert receiver.lines() == [], "a staging move deploys nothing"

    client.set_registered_model_alias(MODEL, "production", second)
    lines = receiver.wait_for(receiver.lines, "the deploy command run")
    assert lines == [f"--substitutions=_MODEL_VERSION={second} {MODEL}"], lines
    assert "X-MLflow-Signature" not in receiver.log_path.read_text(), "nothing was rejected"

    # MLflow's own test call (an example payload for another model) is signed too, and ignored.
    result = client.test_webhook(hook.webhook_id)
    assert result.success and result.response_status == 200, result
    assert json.loads(result.response_body)["status"] == "ignored", result.response_body
    time.sleep(1)  # any late second delivery would show now
    assert receiver.lines() == lines, "one production move, one deployment"


def test_unsigned_wrongly_signed_stale_and_replayed_calls_are_refused(receivers):
    receiver = receivers()
    move = {"name": MODEL, "alias": "production", "version": "3"}

    unsigned = post(receiver, move, secret=None)
    assert unsigned.status_code == 401 and "X-MLflow-Signature" in unsigned.json()["error"], unsigned.text
    forged = post(receiver, move, secret="not-the-secret")
    assert forged.status_code == 403 and "does not match" in forged.json()["error"], forged.text
    stale = post(receiver, move, timestamp=int(time.time()) - 3600)
    assert stale.status_code == 401 and "WEBHOOK_MAX_AGE_SECONDS=300" in stale.json()["error"], stale.text
    bad_version = post(receiver, {**move, "version": "3; rm -rf /"})
    assert bad_version.status_code == 400 and "data.version" in bad_version.json()["error"], bad_version.text
    assert receiver.lines() == [], "nothing ran for a refused call"

    delivery = str(uuid.uuid4())
    accepted = post(receiver, move, delivery_id=delivery)
    assert accepted.status_code == 202 and accepted.json()["version"] == "3", accepted.text
    replayed = post(receiver, move, delivery_id=delivery)
    assert replayed.status_code == 409 and delivery in replayed.json()["error"], replayed.text
    other_alias = post(receiver, {**move, "alias": "champion"})
    other_event = post(receiver, move, event=("model_version_tag", "set"))
    assert (other_alias.status_code, other_event.status_code) == (200, 200)
    assert receiver.lines() == [f"--substitutions=_MODEL_VERSION=3 {MODEL}"], "exactly one deployment"

    huge = requests.post(f"{receiver.url}/webhook", data=b"x" * 70000, timeout=10)
    assert huge.status_code == 413 and "WEBHOOK_MAX_BODY_BYTES" in huge.json()["error"], huge.text


def test_a_failing_deploy_command_is_a_502_naming_its_exit_and_the_receiver_needs_its_secret(receivers, tmp_path):
    failing = receivers(command=[sys.executable, "-c", "import sys; sys.exit(3)"], name="failing")
    answer = post(failing, {"name": MODEL, "alias": "production", "version": "4"})
    assert answer.status_code == 502 and "exited 3" in answer.json()["error"], answer.text

    env = {k: v for k, v in process_env().items() if not k.startswith("WEBHOOK_")}
    done = subprocess.run(
        [str(BIN / "python"), "-m", "sidecar.webhook"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0 and "WEBHOOK_SECRET is required" in done.stderr, done.stderr
