"""Child processes: environment, commands, free port, readiness, stop; the one wrapper of a served model.

Every tool that starts a process (promote, serve, the bench, the stress run, the tests) uses these.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from skyprophet.config import PROJECT_ROOT

BIN = Path(sys.executable).parent
# What an in-process MLflow run or set_experiment leaves in os.environ; never for a child process,
# which names its own experiment (`mlflow run` refuses both an experiment id and a name).
MLFLOW_RUN_STATE = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")


def process_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment plus ``extra``, with the venv's bin first on PATH (mlflow runs uvicorn, python)."""
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_RUN_STATE}
    return {**env, **(extra or {}), "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}


# What a model server of a candidate version may see (``isolated_env``): allow-listed, never
# credentials. Names with one of SECRET_WORDS are dropped even when their prefix is allowed.
ISOLATED_NAMES = ("PATH", "LANG", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
ISOLATED_PREFIXES = ("LC_", "SKYPROPHET_", "UVICORN_", "MLFLOW_SCORING_SERVER_", "MLFLOW_MODELS_")
SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET", "CREDENTIAL", "USERNAME", "KEY", "AUTH")


def isolated_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """An allow-listed environment for code we did not write (a candidate version's ``model.py``).

    No tracking URI or credentials (``MLFLOW_TRACKING_*``, ``*TOKEN*``, ``GOOGLE_*``, ``AWS_*``,
    ``STORAGE_EMULATOR_HOST``, ``MLFLOW_AUTH*``): the model is served from a local copy and needs
    none. ``HOME`` is ``home`` (an empty folder), so no ``~/.mlflow/credentials`` or gcloud config either.
    """
    allowed = {
        key: value
        for key, value in os.environ.items()
        if (key in ISOLATED_NAMES or key.startswith(ISOLATED_PREFIXES)) and not any(w in key for w in SECRET_WORDS)
    }
    return {**allowed, **(extra or {}), "HOME": str(home), "PATH": f"{BIN}{os.pathsep}{allowed.get('PATH', '')}"}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(
    url: str, timeout: float = 60.0, process: subprocess.Popen | None = None, interval: float = 0.2
) -> None:
    """Wait until ``url`` answers 200 (asking every ``interval`` s), failing early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(interval)
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


def start_logged(
    command: list[str], env: dict[str, str], log_path: Path | None, mode: str = "w", isolated: bool = False
) -> subprocess.Popen:
    """``command`` from the checkout in its own session (stopping it stops its workers), output to ``log_path``.

    The log file is closed here at once: the child keeps its own handle. ``log_path`` None: the
    child writes to this process's own stdout and stderr (``make serve``). ``isolated``: ``env``
    is the whole environment (``isolated_env``), nothing of ours is added.
    """
    full_env = env if isolated else process_env(env)
    if log_path is None:
        return subprocess.Popen(command, cwd=PROJECT_ROOT, env=full_env, start_new_session=True)
    with open(log_path, mode, encoding="utf-8") as log:
        return subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def run_logged(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.CompletedProcess:
    """``command`` from the checkout, to its end, output to ``log_path``."""
    with open(log_path, "w", encoding="utf-8") as log:
        return subprocess.run(command, cwd=PROJECT_ROOT, env=process_env(env), stdout=log, stderr=subprocess.STDOUT)


def mlflow_run_command(entry_point: str, experiment: str, **params: object) -> list[str]:
    """``mlflow run . -e <entry_point> --env-manager local -P key=value …``, as a user types it."""
    command = [str(BIN / "mlflow"), "run", ".", "-e", entry_point, "--env-manager", "local"]
    command += ["--experiment-name", experiment]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    return command


def locust_command(url: str, users: int, spawn_rate: float, duration: str, csv_prefix: Path) -> list[str]:
    """Headless locust with ``bench/locustfile.py`` against ``url``, summary CSVs at ``csv_prefix``."""
    command = [str(BIN / "locust"), "-f", str(PROJECT_ROOT / "bench" / "locustfile.py"), "--headless"]
    command += ["-u", str(users), "-r", str(spawn_rate), "-t", duration, "-H", url]
    return command + ["--csv", str(csv_prefix), "--only-summary"]


def model_serve_command(model_uri: str, port: int, workers: int | None = None, host: str = "127.0.0.1") -> list[str]:
    """``mlflow models serve`` of ``model_uri`` on ``host``:``port`` from this environment."""
    command = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"]
    command += ["-h", host, "-p", str(port)]
    return command + (["-w", str(workers)] if workers else [])


class ServedModel:
    """A real ``mlflow models serve`` of ``model_uri`` in its own process group, stopped by ``stop()``.

    The one way the project starts a model server (promote's acceptance, ``make serve``, the bench,
    the stress run, the tests). Usable as a context manager. ``port`` None: a free port.
    ``wait``: block until the first ``/ping`` 200 (``timeout`` seconds); on failure the server is
    stopped and the error carries the log's tail. ``log_path`` None: output to this terminal.
    ``isolated``: ``env`` is the server's whole environment (``isolated_env``: a candidate's code
    runs in it), not added to ours.
    """

    def __init__(
        self,
        model_uri: str,
        log_path: Path | None,
        env: dict[str, str] | None = None,
        workers: int | None = None,
        timeout: float = 180,
        host: str = "127.0.0.1",
        port: int | None = None,
        wait: bool = True,
        isolated: bool = False,
    ) -> None:
        self.model_uri = model_uri
        self.log_path = log_path
        self.workers = workers or 1
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.started = time.monotonic()
        self.process = start_logged(
            model_serve_command(model_uri, self.port, workers, host), env or {}, log_path, isolated=isolated
        )
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 180) -> float:
        """Seconds from the server's start to its first ``/ping`` 200; stops it and raises if none comes."""
        try:
            wait_for_http(
                f"{self.url}/ping",
                timeout=self.started + timeout - time.monotonic(),
                process=self.process,
                interval=0.02,
            )
        except Exception as err:
            self.stop()
            log = self.log_path
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"model server for {self.model_uri} failed to start ({err}):\n{tail}") from None
        return time.monotonic() - self.started

    def invoke(self, body: dict | str, timeout: float = 60) -> requests.Response:
        """POST ``/invocations`` with a JSON body: a dict, or the text as it stands."""
        text = isinstance(body, str)
        return requests.post(
            f"{self.url}/invocations",
            data=body if text else None,
            json=None if text else body,
            headers={"Content-Type": "application/json"},
            timeout=timeout,
        )

    def stop(self) -> None:
        """Terminate the server and its workers."""
        stop_process_group(self.process)

    def __enter__(self) -> ServedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The event loop of every uvicorn worker, through the UVICORN_* environment the `uvicorn` CLI that
# `mlflow models serve` runs reads. uvloop sets TCP_NODELAY on every accepted connection. asyncio's
# loop does so only when the listening socket says IPPROTO_TCP, and with `--workers N` uvicorn binds
# that socket itself without it (uvicorn issue 3149): every keep-alive response after the first then
# waits about 40 ms for the client's delayed ACK. Named explicitly so that a missing uvloop is an
# error at start, not a silent fallback to asyncio.
UVICORN_LOOP = "uvloop"


def server_env(workers: int) -> dict[str, str]:
    """What `mlflow models serve` needs beyond our environment: UVICORN_LOOP=uvloop unless already set."""
    env = {"UVICORN_LOOP": os.environ.get("UVICORN_LOOP", UVICORN_LOOP)}
    if env["UVICORN_LOOP"] == UVICORN_LOOP and importlib.util.find_spec("uvloop") is None:
        raise SystemExit(
            "serve: uvloop is not installed (pip install -r requirements.txt). Without it uvicorn's workers "
            "leave TCP_NODELAY off on accepted connections (uvicorn issue 3149, about 40 ms more per keep-alive "
            f"request with --workers {workers}); set UVICORN_LOOP=asyncio to serve anyway."
        )
    return env


def ingress_command(host: str, port: int, upstream: str) -> list[str]:
    """``python -m ingress.run`` on the public address, forwarding to the model server at ``upstream``."""
    return [str(BIN / "python"), "-m", "ingress.run", "--host", host, "--port", str(port), "--upstream", upstream]
