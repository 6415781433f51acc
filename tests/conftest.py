"""Shared fixtures: a temporary MLflow store, generated flights, real-data location, model servers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from skyprophet.config import MODEL_NAME, PROJECT_ROOT, SCL_DATA_PATH, SCL_SHA256
from skyprophet.ops.processes import (
    BIN,
    MLFLOW_RUN_STATE,
    ServedModel,
    free_port,
    mlflow_run_command,
    process_env,
    start_logged,
    stop_process_group,
    wait_for_http,
)
from skyprophet.storage import sha256_of
from tests.factory import make_flights, write_flights

REAL_DATA = Path(os.environ.get("SKYPROPHET_REAL_DATA", SCL_DATA_PATH))


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
    # Artifacts in the temporary folder too, not in the checkout's mlruns/.
    mlflow.MlflowClient().create_experiment(
        env["MLFLOW_EXPERIMENT_NAME"], artifact_location=(tmp_path / "artifacts").as_uri()
    )
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


@pytest.fixture(autouse=True)
def no_leaked_mlflow_run_state():
    """``mlflow.set_experiment`` exports MLFLOW_EXPERIMENT_ID; drop it after every test."""
    yield
    for key in MLFLOW_RUN_STATE:
        os.environ.pop(key, None)


@pytest.fixture
def serve_model(tmp_path: Path):
    """Start ``mlflow models serve`` for a model URI; every server is stopped after the test."""
    servers: list[ServedModel] = []

    def start(model_uri: str, env: dict[str, str]) -> ServedModel:
        server = ServedModel(model_uri, tmp_path / f"serve-{len(servers)}.log", env, timeout=90)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(registered_model, tmp_path_factory):
    """One real model server of the session's Production model, shared by a test module's tests."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with ServedModel(registered_model["model_uri"], log, registered_model["env"], timeout=90) as started:
        yield started


@pytest.fixture(scope="session")
def registered_model(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train once per session with ``mlflow run . -e main``: ``MODEL_NAME`` version 1, alias + stage Production.

    Returns ``env`` (tracking store, datasets folder, experiment), ``model_name``, ``model_uri`` and
    ``version``. Small (40 trees, 3 folds, generated flights) so the whole thing takes about 25 s.
    """
    import mlflow

    root = tmp_path_factory.mktemp("registered")
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "SKYPROPHET_DATASETS_DIR": str(root / "datasets"),
        "MLFLOW_EXPERIMENT_NAME": "skyprophet-registered",
    }
    # Artifacts beside the temporary store, not in the checkout's mlruns/.
    mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).create_experiment(
        env["MLFLOW_EXPERIMENT_NAME"], artifact_location=(root / "artifacts").as_uri()
    )
    flights = write_flights(root / "flights.csv")
    command = mlflow_run_command(
        "main", env["MLFLOW_EXPERIMENT_NAME"], data_uri=flights, sha256=sha256_of(flights), n_estimators=40, cv_folds=3
    )
    done = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=process_env(env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"`mlflow run . -e main` failed for the registered_model fixture:\n{done.stderr[-4000:]}")
    return {"env": env, "model_name": MODEL_NAME, "model_uri": f"models:/{MODEL_NAME}/Production", "version": "1"}


# --- Production tracking topology: PostgreSQL database, GCS emulator, `make tracking-server` ---

POSTGRES_URL = os.environ.get("SKYPROPHET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def postgres_admin():
    """An autocommit connection to the maintenance database ``test``, or a failure saying what to start."""
    import psycopg2

    try:
        connection = psycopg2.connect(f"{POSTGRES_URL}/test", connect_timeout=5)
    except psycopg2.OperationalError as err:
        pytest.fail(f"PostgreSQL does not answer at {POSTGRES_URL} ({err}); .ci/run starts it")
    connection.autocommit = True
    return connection


@pytest.fixture(scope="module")
def postgres_database() -> str:
    """A fresh, empty PostgreSQL database for this test module, dropped afterwards; yields its ``postgresql://`` URI."""
    name = f"skyprophet_{os.getpid()}_{time.monotonic_ns()}"
    admin = postgres_admin()
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    yield f"{POSTGRES_URL}/{name}"
    admin = postgres_admin()  # a new connection: the test may have restarted PostgreSQL
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


class GcsEmulator:
    """A real ``gcp-storage-emulator`` process (in memory) on a free port."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Start (or start again, empty) on the same port."""
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [str(BIN / "gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(self.port)]
                + ["--in-memory"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_http(f"{self.url}/storage/v1/b", timeout=30, process=self.process)

    @property
    def env(self) -> dict[str, str]:
        """What points the Google client (and so MLflow and the pipeline) at this emulator."""
        return {"STORAGE_EMULATOR_HOST": self.url}

    def client(self):
        """A ``google.cloud.storage.Client`` on the emulator, without touching this process's environment."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.url}
        )

    def stop(self) -> None:
        """Terminate the emulator."""
        if self.process is not None:
            stop_process_group(self.process)


@pytest.fixture(scope="module")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory):
    """A GCS emulator for this test module; ``.env`` is what a process needs to use it, ``.client()`` for tests."""
    emulator = GcsEmulator(tmp_path_factory.mktemp("gcs") / "gcs-emulator.log")
    yield emulator
    emulator.stop()


class TrackingServer:
    """``python -m skyprophet.ops.tracking_server`` (what ``make tracking-server`` runs) on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self, timeout: float = 180) -> None:
        """Start (or start again) on the same port and wait for ``/health``."""
        command = [sys.executable, "-m", "skyprophet.ops.tracking_server", "--port", str(self.port), "--workers", "1"]
        self.process = start_logged(command, self.env, self.log_path, mode="a")
        try:
            wait_for_http(f"{self.url}/health", timeout=timeout, process=self.process)
        except Exception:
            self.stop()
            raise RuntimeError(f"tracking server failed to start: {self.log_path.read_text()[-3000:]}") from None

    def stop(self) -> None:
        """Terminate the server and its workers."""
        if self.process is not None:
            stop_process_group(self.process)


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory):
    """Start ``make tracking-server``'s module with an environment (backend store, artifacts destination, …).

    Module-scoped (a server takes ~30 s to upgrade its database and start): every server started
    in a test module is stopped after the module.
    """
    servers: list[TrackingServer] = []
    logs = tmp_path_factory.mktemp("tracking-server")

    def start(env: dict[str, str]) -> TrackingServer:
        server = TrackingServer(env, logs / f"tracking-server-{len(servers)}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def model_env(registered_model, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process pointed at the registered model's store (for in-process score, report and what-if runs)."""
    for key, value in registered_model["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(registered_model["env"]["MLFLOW_TRACKING_URI"])
    yield registered_model["env"]
    while mlflow.active_run():
        mlflow.end_run()
