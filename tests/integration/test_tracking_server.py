"""The production topology for real: `make tracking-server` on PostgreSQL + a gs:// bucket (GCS emulator).

The module shares one fresh PostgreSQL database, one emulator and one tracking server (fixtures
in tests/conftest.py; a server takes ~30 s to start); each test keeps to its own experiment and
model name. The pipeline runs as users run it (`mlflow run . -e …`, `python -m steps.…`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import psycopg2
import pytest

from skyprophet.config import MODEL_NAME, PROJECT_ROOT
from skyprophet.ops.processes import BIN, free_port, mlflow_run_command, process_env
from skyprophet.storage import sha256_of
from tests.conftest import GcsEmulator, TrackingServer
from tests.factory import make_flights, write_flights

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ARTIFACT_BUCKET = "skyprophet-artifacts"
DATA_BUCKET = "skyprophet-data"
PREFIX = "mlflow"
TIMEOUT = 600
FAST = 60  # seconds: "at once", against MLflow's ~4 minutes of retries


@dataclass
class Topology:
    """A running tracking server on a fresh database and bucket, and what client processes need."""

    database: str
    emulator: GcsEmulator
    server: TrackingServer
    data_uri: str
    datasets: Path
    data_sha256: str

    def env(self, experiment: str) -> dict[str, str]:
        """A client process's environment: the server, an experiment, and the emulator for gs:// raw data."""
        return {
            "MLFLOW_TRACKING_URI": self.server.url,
            "MLFLOW_EXPERIMENT_NAME": experiment,
            "SKYPROPHET_DATASETS_DIR": str(self.datasets / experiment),
            **self.emulator.env,
        }


@pytest.fixture(scope="module")
def topology(postgres_database, gcs_emulator, tracking_server, tmp_path_factory) -> Topology:
    root = tmp_path_factory.mktemp("topology")
    gcs = gcs_emulator.client()
    gcs.create_bucket(ARTIFACT_BUCKET)
    flights = write_flights(root / "flights.csv")
    gcs.create_bucket(DATA_BUCKET).blob("raw/flights.csv").upload_from_filename(str(flights))
    server = tracking_server(
        {
            "MLFLOW_BACKEND_STORE_URI": postgres_database,
            "MLFLOW_ARTIFACTS_DESTINATION": f"gs://{ARTIFACT_BUCKET}/{PREFIX}",
            **gcs_emulator.env,
        }
    )
    data_uri = f"gs://{DATA_BUCKET}/raw/flights.csv"
    return Topology(postgres_database, gcs_emulator, server, data_uri, root / "datasets", sha256_of(flights))


def run_command(command: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    """Run a command from the checkout; returns the result and its wall time."""
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=PROJECT_ROOT, env=process_env(env), capture_output=True, text=True, timeout=TIMEOUT
    )
    return done, time.monotonic() - started


def mlflow_run(entry_point: str, env: dict[str, str], **params) -> subprocess.CompletedProcess:
    """`mlflow run . -e <entry_point> --env-manager local -P …`, as a user types it."""
    return run_command(mlflow_run_command(entry_point, env["MLFLOW_EXPERIMENT_NAME"], **params), env)[0]


def step(name: str, env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m steps.<name> …` (a step started without `mlflow run`)."""
    return run_command([sys.executable, "-m", f"steps.{name}", *args], env)


def rows(database: str, query: str, *params) -> list[tuple]:
    """Rows of a query on the tracking database, read with psycopg2 behind MLflow's back."""
    connection = psycopg2.connect(database, connect_timeout=5)
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()
    finally:
        connection.close()


def step_runs(database: str, experiment: str) -> dict[str, str]:
    """run id -> the step it ran (tag skyprophet.step), for the finished runs of one experiment."""
    query = (
        "select r.run_uuid, t.value from runs r join tags t on t.run_uuid = r.run_uuid "
        "join experiments e on e.experiment_id = r.experiment_id "
        "where t.key = 'skyprophet.step' and r.status = 'FINISHED' and e.name = %s"
    )
    return dict(rows(database, query, experiment))


def versions(database: str, model: str) -> list[tuple]:
    """(version, stage, storage location) of a registered model, from PostgreSQL."""
    query = "select version, current_stage, storage_location from model_versions where name = %s order by version"
    return rows(database, query, model)


def model_blobs(emulator: GcsEmulator, storage_location: str) -> set[str]:
    """Object names in the artifact bucket under a model version's storage location."""
    assert storage_location.startswith("mlflow-artifacts:/"), f"artifacts are proxied: {storage_location}"
    prefix = f"{PREFIX}/{storage_location.removeprefix('mlflow-artifacts:/')}/"
    return {b.name.removeprefix(prefix) for b in emulator.client().list_blobs(ARTIFACT_BUCKET, prefix=prefix)}


def restart_postgres() -> None:
    """Restart PostgreSQL for real (``$SKYPROPHET_POSTGRES_RESTART``, else pg_ctlcluster) and wait for it."""
    command = os.environ.get("SKYPROPHET_POSTGRES_RESTART")
    if not command:
        clusters = sorted(p.name for p in Path("/etc/postgresql").iterdir()) if Path("/etc/postgresql").is_dir() else []
        if not clusters or shutil.which("pg_ctlcluster") is None:
            pytest.skip("cannot restart PostgreSQL here: set SKYPROPHET_POSTGRES_RESTART to a shell command that does")
        command = f"pg_ctlcluster --skip-systemctl-redirect {clusters[0]} main restart"
    subprocess.run(command, shell=True, check=True, timeout=120)
    for _ in range(60):
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0:
            return
        time.sleep(0.5)
    raise TimeoutError("PostgreSQL did not come back within 30 s of its restart")


def test_pipeline_registers_and_serves_on_postgres_and_gcs_and_survives_a_postgres_restart(topology, serve_model):
    env, model = topology.env("pipeline"), MODEL_NAME
    done = mlflow_run("main", env, data_uri=topology.data_uri, sha256=topology.data_sha256, n_estimators=40, cv_folds=3)
    assert done.returncode == 0, done.stderr[-4000:]

    first_runs = step_runs(topology.database, "pipeline")
    assert sorted(first_runs.values()) == ["etl", "main", "promote", "refit", "register", "train"], first_runs
    etl_run = next(run for run, name in first_runs.items() if name == "etl")
    data_uri = rows(topology.database, "select value from params where run_uuid = %s and key = 'data_uri'", etl_run)
    assert data_uri == [(topology.data_uri,)], "etl read the raw data from the gs:// URI"
    first = versions(topology.database, model)
    assert [(v, stage) for v, stage, _ in first] == [(1, "Production")], first
    alias = rows(topology.database, "select version from registered_model_aliases where name = %s", model)
    assert alias == [(1,)], "alias production on version 1"
    files = model_blobs(topology.emulator, first[0][2])
    for name in ("MLmodel", "artifacts/booster.ubj", "artifacts/spec.json", "code/pyfunc/model.py"):
        assert name in files, f"{name} of version 1 is an object in gs://{ARTIFACT_BUCKET}: {sorted(files)}"

    # The model server gets only the tracking URI: the files come through the server's artifact proxy.
    server = serve_model(f"models:/{model}/Production", {"MLFLOW_TRACKING_URI": topology.server.url})
    flights = make_flights(days=2, seed=7).drop(columns=["Fecha-O"])
    answer = server.invoke({"dataframe_records": flights.to_dict(orient="records")})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert len(predictions) == len(flights), "one prediction per flight"
    assert all(0.0 <= p["delay_probability"] <= 1.0 for p in predictions), predictions[:3]
    server.stop()

    restart_postgres()

    done = mlflow_run(
        "main", env, data_uri=topology.data_uri, sha256=topology.data_sha256, n_estimators=1, max_depth=1, cv_folds=2
    )
    assert done.returncode == 0, f"second run after the PostgreSQL restart: {done.stderr[-4000:]}"
    all_runs = step_runs(topology.database, "pipeline")
    assert first_runs.items() <= all_runs.items(), "every run of the first pipeline is still there"
    # The weak model loses the gate: no refit, and main stops at staging.
    second_runs = ["etl", "main", "register", "train"]
    assert sorted(all_runs.values()) == sorted(["etl", "main", "promote", "refit", "register", "train"] + second_runs)
    second = versions(topology.database, model)
    assert [(v, stage) for v, stage, _ in second] == [(1, "Production"), (2, "Staging")], "weak model: not promoted"
    assert second[0] == first[0], "version 1's row is unchanged"
    assert model_blobs(topology.emulator, first[0][2]) == files, "version 1's files are untouched"
    production = mlflow.MlflowClient(topology.server.url).get_model_version_by_alias(model, "production")
    assert str(production.version) == "1", "the server reads the registry after the restart"


def test_step_fails_at_once_naming_the_uri_when_no_tracking_server_answers(tmp_path, flights_csv):
    url = f"http://127.0.0.1:{free_port()}"
    datasets = tmp_path / "datasets"
    env = {"MLFLOW_TRACKING_URI": url, "MLFLOW_EXPERIMENT_NAME": "down", "SKYPROPHET_DATASETS_DIR": str(datasets)}
    done, seconds = step("etl", env, "--data-uri", str(flights_csv))
    assert done.returncode != 0, "etl cannot succeed without its tracking server"
    assert f"MLflow tracking server at {url} does not answer" in done.stderr, done.stderr[-2000:]
    assert "make tracking-server" in done.stderr, "the message says what to do"
    assert seconds < FAST, f"failed after {seconds:.0f} s"
    assert not datasets.exists(), "nothing written: no data fetched"

    # `mlflow run` asks the server for the experiment before any step starts: with its retries
    # off (docs/operations.md says so) it fails at once too, naming the URI.
    done, seconds = run_command(
        [str(BIN / "mlflow"), "run", ".", "-e", "etl", "--env-manager", "local", "-P", f"data_uri={flights_csv}"],
        {**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
    )
    assert done.returncode != 0 and url in done.stderr, done.stderr[-2000:]
    assert seconds < FAST, f"failed after {seconds:.0f} s"
    assert not datasets.exists(), "nothing written"


def test_register_fails_cleanly_while_the_server_is_down_and_a_rerun_registers_one_version(topology):
    env, model = topology.env("outage"), "flight-delay-outage"
    for entry_point, params in (
        ("etl", {"data_uri": topology.data_uri, "sha256": topology.data_sha256}),
        ("train", {"n_estimators": 20}),
    ):
        done = mlflow_run(entry_point, env, **params)
        assert done.returncode == 0, f"{entry_point}: {done.stderr[-3000:]}"
    before = step_runs(topology.database, "outage")
    assert sorted(before.values()) == ["etl", "train"], before

    topology.server.stop()
    try:
        done, seconds = step("register", env, "--model-name", model)
    finally:
        topology.server.start()
    assert done.returncode != 0, "register cannot succeed without the tracking server"
    assert f"MLflow tracking server at {topology.server.url} does not answer" in done.stderr, done.stderr[-2000:]
    assert seconds < FAST, f"failed after {seconds:.0f} s"

    assert step_runs(topology.database, "outage") == before, "the failed register wrote no run"
    assert versions(topology.database, model) == [], "and no model version"
    done = mlflow_run("register", env, model_name=model)
    assert done.returncode == 0, f"register rerun: {done.stderr[-3000:]}"
    registered = versions(topology.database, model)
    assert [(v, stage) for v, stage, _ in registered] == [(1, "Staging")], "one version, staged (promote moves it)"
    assert {"MLmodel", "artifacts/booster.ubj"} <= model_blobs(topology.emulator, registered[0][2]), "with its files"


def test_missing_bucket_fails_before_training(topology, tracking_server, tmp_path, flights_csv):
    doomed = "skyprophet-doomed"
    topology.emulator.client().create_bucket(doomed)
    server = tracking_server({**topology.server.env, "MLFLOW_ARTIFACTS_DESTINATION": f"gs://{doomed}/{PREFIX}"})
    topology.emulator.client().bucket(doomed).delete(force=True)  # the bucket goes away while the server runs
    env = {**topology.env("doomed"), "MLFLOW_TRACKING_URI": server.url}
    done = mlflow_run("main", env, data_uri=topology.data_uri, sha256=topology.data_sha256, n_estimators=20, cv_folds=2)
    assert done.returncode != 0, "no pipeline without an artifact store"
    expected = f"the tracking server at {server.url} cannot write to its artifact destination"
    assert expected in done.stderr, done.stderr[-3000:]
    assert step_runs(topology.database, "doomed") == {}, "no step got past its start: nothing trained"
    assert not Path(env["SKYPROPHET_DATASETS_DIR"]).exists(), "no data fetched"
    server.stop()

    # `make tracking-server` refuses to start on a bucket that does not exist.
    done, seconds = run_command(
        [sys.executable, "-m", "skyprophet.ops.tracking_server", "--port", str(free_port())], server.env
    )
    assert done.returncode != 0, "the server must not start"
    assert f"bucket gs://{doomed} does not exist" in done.stderr, done.stderr[-2000:]
    assert seconds < FAST, f"failed after {seconds:.0f} s"

    # Direct artifact access (an experiment whose location is gs://…): the Google client's own probe.
    store = f"sqlite:///{tmp_path / 'direct.db'}"
    mlflow.MlflowClient(store).create_experiment("direct", artifact_location=f"gs://{doomed}/{PREFIX}")
    env = {**env, "MLFLOW_TRACKING_URI": store, "MLFLOW_EXPERIMENT_NAME": "direct"}
    done, seconds = step("etl", env, "--data-uri", str(flights_csv))
    assert done.returncode != 0 and f"bucket gs://{doomed} does not exist" in done.stderr, done.stderr[-2000:]
    assert seconds < FAST, f"failed after {seconds:.0f} s"
