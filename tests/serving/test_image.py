"""The model image without a Docker engine: the generated context, its entrypoint, our Dockerfile and compose file.

`mlflow models generate-dockerfile` writes the same context `mlflow models build-docker` builds.
Its model directory must load and predict, and the image's own ENTRYPOINT, run here against
that directory with DISABLE_NGINX=true (as on Cloud Run), must serve /invocations, also with two
workers with TCP_NODELAY on every accepted connection (uvloop, from the model's requirements).
"""

import http.client
import json
import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
import yaml

from bench.run import nodelay_connections, worker_pids
from skyprophet.config import PROJECT_ROOT
from skyprophet.ops.processes import BIN, free_port, process_env, stop_process_group, wait_for_http

pytestmark = [pytest.mark.slow]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    parsed = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            parsed.append((keyword.upper(), rest.strip()))
    return parsed


@pytest.fixture(scope="module")
def context(registered_model, tmp_path_factory) -> Path:
    """The build context `mlflow models build-docker -m models:/flight-delay/Production` would build."""
    out = tmp_path_factory.mktemp("image") / "context"
    done = subprocess.run(
        [str(BIN / "mlflow"), "models", "generate-dockerfile", "-m", registered_model["model_uri"], "-d", str(out)],
        env=process_env(registered_model["env"]),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_generated_context_holds_a_model_that_loads_and_predicts(context):
    dockerfile = instructions(context / "Dockerfile")
    assert ("COPY", "model_dir /opt/ml/model") in dockerfile, "the model directory is copied into the image"
    assert any(k == "FROM" and args.startswith("python:3.11") for k, args in dockerfile), dockerfile[0]
    assert ("RUN", f"pip install mlflow=={mlflow.__version__}") in dockerfile, "the image pins this MLflow"
    model_dir = context / "model_dir"
    required = (model_dir / "requirements.txt").read_text().split()
    for package in ("uvloop", "httptools"):  # MLflow's uvicorn comes without them (uvicorn issue 3149)
        assert f"{package}=={version(package)}" in required, f"the image installs {package}: {required}"
    model = mlflow.pyfunc.load_model(str(model_dir))
    example = json.loads((model_dir / "serving_input_example.json").read_text())["dataframe_split"]
    flights = pd.DataFrame(example["data"], columns=example["columns"])
    predictions = model.predict(flights)
    assert list(predictions.columns) == ["delay_probability", "delay"]
    assert len(predictions) == len(flights) and predictions["delay_probability"].between(0, 1).all()


def test_image_entrypoint_serves_invocations_outside_docker(context, tmp_path):
    """Run the image's ENTRYPOINT with its ENV, nginx off, against the context's model directory.

    Only two constants of the entrypoint's module are rebound: the model path (/opt/ml/model in
    the image) and the inference port (8000 in the image; a free port here).
    """
    dockerfile = instructions(context / "Dockerfile")
    entrypoint = json.loads(next(args for k, args in dockerfile if k == "ENTRYPOINT"))
    assert entrypoint[:2] == ["python", "-c"] and "C._serve(" in entrypoint[2], entrypoint
    image_env = dict(re.findall(r"(\w+)=(\S+)", " ".join(args for k, args in dockerfile if k == "ENV")))
    assert image_env.get("MLFLOW_DISABLE_ENV_CREATION") == "True", "the image installs no environment at start"
    port = free_port()
    program = entrypoint[2].replace(
        "C._serve(",
        f"C.MODEL_PATH = {str(context / 'model_dir')!r}; C.DEFAULT_INFERENCE_SERVER_PORT = {port}; C._serve(",
    )
    # UVICORN_HOST is how Cloud Run's 0.0.0.0 is set; a second loopback address proves it is honoured.
    # Two workers (MLflow's default in the image is one per core) on the loop uvicorn picks from
    # what the model's requirements install (uvloop): accepted connections must have TCP_NODELAY.
    env = {**image_env, "DISABLE_NGINX": "true", "UVICORN_HOST": "127.0.0.2", "MLFLOW_MODELS_WORKERS": "2"}
    with open(tmp_path / "entrypoint.log", "w") as log:
        process = subprocess.Popen(
            [str(BIN / "python"), "-c", program],
            env=process_env(env),
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.2:{port}"
    try:
        wait_for_http(f"{url}/ping", timeout=90, process=process)
        body = (context / "model_dir" / "serving_input_example.json").read_text()
        answer = requests.post(
            f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=30
        )
        assert answer.status_code == 200, answer.text[:500]
        rows = len(json.loads(body)["dataframe_split"]["data"])
        assert len(answer.json()["predictions"]) == rows, "one prediction per flight of the example"
        bad = requests.post(
            f"{url}/invocations",
            data='{"dataframe_records": [{"Fecha-I": "x"}]}',
            timeout=30,
            headers={"Content-Type": "application/json"},
        )
        assert bad.status_code == 400, f"the image answers bad input like mlflow models serve: {bad.text[:300]}"
        connections = [http.client.HTTPConnection("127.0.0.2", port, timeout=30) for _ in range(3)]
        for connection in connections * 2:
            connection.request("GET", "/ping")
            connection.getresponse().read()
        assert len(worker_pids(process.pid)) == 2
        with_nodelay, held = nodelay_connections(process.pid, port)  # ours, and the requests above kept alive
        assert held >= 3 and with_nodelay == held, f"TCP_NODELAY on {with_nodelay} of {held} accepted connections"
        for connection in connections:
            connection.close()
    finally:
        stop_process_group(process)


def stages(dockerfile: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage, keyed by the stage name (``FROM ... AS name``)."""
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, args in dockerfile:
        if keyword == "FROM":
            current = args.split()[-1] if " AS " in args.upper() else args
            result[current] = []
        elif current is not None:
            result[current].append((keyword, args))
    return result


def pinned_requirements() -> dict[str, str]:
    pins = {}
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (PROJECT_ROOT / name).read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                package, version = line.split("==")
                pins[package.strip().lower()] = version.strip()
    return pins


def test_dockerfile_builds_a_small_pinned_non_root_sidecar():
    dockerfile = instructions(PROJECT_ROOT / "Dockerfile")
    by_stage = stages(dockerfile)
    assert list(by_stage)[-1] == "sidecar", "the default target (last stage) is the sidecar"
    assert {"base", "tracking", "gcs-emulator", "sidecar"} <= set(by_stage), list(by_stage)
    base_image = next(args for k, args in dockerfile if k == "ARG" and args.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim(-\w+)?", base_image), f"slim, pinned base: {base_image}"
    pins = pinned_requirements()
    for keyword, args in dockerfile:
        if keyword == "RUN" and "pip install" in args:
            for spec in args.split("pip install", 1)[1].split():
                package, _, version = spec.partition("==")
                assert version, f"unpinned package in the Dockerfile: {spec}"
                expected = pins.get(package.lower()) or pins.get(package.lower().replace("-skinny", ""))
                assert version == expected, f"{package}=={version} should match the requirements' {expected}"
    sidecar = dict(by_stage["sidecar"])
    for stage in ("sidecar", "tracking", "gcs-emulator"):
        user = dict(by_stage[stage]).get("USER", "root")
        assert user not in ("root", "0"), f"{stage} runs as a non-root user, not {user}"
    assert "/ping" in sidecar["HEALTHCHECK"] and "SIDECAR_PORT" in sidecar["HEALTHCHECK"], sidecar["HEALTHCHECK"]
    assert sidecar["EXPOSE"] == "8081"
    assert json.loads(sidecar["CMD"]) == ["python", "-m", "sidecar.app"]
    assert ("COPY", "sidecar/ /app/sidecar/") in by_stage["sidecar"]


def test_compose_starts_model_and_sidecar_with_the_stack():
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"model", "sidecar", "tracking", "postgres", "gcs"} <= set(services), list(services)
    model, sidecar, tracking = services["model"], services["sidecar"], services["tracking"]
    assert model["image"] == "skyprophet-model", "the image `make image` builds with mlflow models build-docker"
    assert "8080:8080" in model["ports"] and any("/ping" in part for part in model["healthcheck"]["test"])
    assert sidecar["build"]["target"] == "sidecar" and "8081:8081" in sidecar["ports"]
    assert sidecar["environment"]["MODEL_SERVER_URL"] == "http://model:8080", "the sidecar checks the model service"
    assert sidecar["environment"]["MLFLOW_TRACKING_URI"] == "http://tracking:5000"
    assert any("/ping" in part for part in sidecar["healthcheck"]["test"])
    assert "model" in sidecar["depends_on"] and tracking["depends_on"]["postgres"]["condition"] == "service_healthy"
    command = " ".join(tracking["command"])
    assert "postgresql://" in command and "gs://" in command, command
    assert tracking["environment"]["STORAGE_EMULATOR_HOST"] == "http://gcs:9023"
    stage_names = set(stages(instructions(PROJECT_ROOT / "Dockerfile")))
    for name, service in services.items():
        if "build" in service:
            assert service["build"]["target"] in stage_names, f"{name} builds a Dockerfile stage that exists"


def test_make_image_builds_both_images_from_the_registry():
    done = subprocess.run(["make", "-n", "image"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    commands = done.stdout.splitlines()
    assert "mlflow models build-docker -m models:/flight-delay@production -n skyprophet-model" in commands, done.stdout
    assert "docker build --target sidecar -t skyprophet-sidecar ." in commands, done.stdout
