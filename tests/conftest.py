"""Shared fixtures: a temporary MLflow store, generated flights, real-data location, model servers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import requests

from steps.config import PROJECT_ROOT, SCL_SHA256
from tests.factory import make_flights, write_flights

REAL_DATA = Path(os.environ.get("SKYPROPHET_REAL_DATA", PROJECT_ROOT.parent / "shared/datasets/scl-2017/data.csv"))
BIN = Path(sys.executable).parent


@pytest.fixture
def tracking_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point MLflow and the datasets folder at a fresh temporary SQLite store and folder."""
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "SKYPROPHET_DATASETS_DIR": str(tmp_path / "datasets"),
        "MLFLOW_EXPERIMENT_NAME": "skyprophet-test",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    yield env
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def flights_csv(tmp_path: Path) -> Path:
    """A generated raw flights file (90 days, 3,600 flights)."""
    return write_flights(tmp_path / "flights.csv")


@pytest.fixture
def flights() -> pd.DataFrame:
    """Generated raw flights as a DataFrame."""
    return make_flights()


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The SCL 2017 file, or a skip saying where it was looked for."""
    if not REAL_DATA.is_file():
        pytest.skip(f"real data not found at {REAL_DATA} (set SKYPROPHET_REAL_DATA)")
    return REAL_DATA


@pytest.fixture(scope="session")
def real_sha256() -> str:
    """The published checksum of the SCL file."""
    return SCL_SHA256


def process_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment plus ``extra``, with the venv's bin first on PATH (mlflow runs uvicorn, python)."""
    return {**os.environ, **extra, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers 200, failing early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM a process started with ``start_new_session`` and all its children; SIGKILL if needed."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class ModelServer:
    """A real ``mlflow models serve`` process on a free port."""

    def __init__(self, model_uri: str, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            env=process_env(env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
        try:
            wait_for_http(f"{self.url}/ping", timeout=90, process=self.process)
        except Exception:
            self.stop()
            raise RuntimeError(f"model server failed to start: {log_path.read_text()[-3000:]}") from None

    def invoke(self, payload: dict | str) -> requests.Response:
        """POST /invocations with a JSON body (a dict) or raw text."""
        data = payload if isinstance(payload, str) else None
        return requests.post(
            f"{self.url}/invocations",
            json=None if data else payload,
            data=data,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )

    def stop(self) -> None:
        """Terminate the server and its workers."""
        stop_process_group(self.process)
        self.log.close()


@pytest.fixture
def serve_model(tmp_path: Path):
    """Start ``mlflow models serve`` for a model URI; every server is stopped after the test."""
    servers: list[ModelServer] = []

    def start(model_uri: str, env: dict[str, str]) -> ModelServer:
        server = ModelServer(model_uri, env, tmp_path / f"serve-{len(servers)}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
