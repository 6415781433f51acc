"""Child processes for tests, the stress run and the bench: environment, free port, readiness, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from steps.config import PROJECT_ROOT

BIN = Path(sys.executable).parent
# What an in-process MLflow run or set_experiment leaves in os.environ; never for a child process,
# which names its own experiment (`mlflow run` refuses both an experiment id and a name).
MLFLOW_RUN_STATE = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")


def process_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment plus ``extra``, with the venv's bin first on PATH (mlflow runs uvicorn, python)."""
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_RUN_STATE}
    return {**env, **(extra or {}), "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}


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


def start_logged(command: list[str], env: dict[str, str], log_path: Path, mode: str = "w") -> subprocess.Popen:
    """``command`` from the checkout in its own session (stopping it stops its workers), output to ``log_path``.

    The log file is closed here at once: the child keeps its own handle.
    """
    with open(log_path, mode, encoding="utf-8") as log:
        return subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=process_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def model_serve_command(model_uri: str, port: int, workers: int | None = None) -> list[str]:
    """``mlflow models serve`` of ``model_uri`` on 127.0.0.1:``port`` from this environment."""
    command = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"]
    command += ["-h", "127.0.0.1", "-p", str(port)]
    return command + (["-w", str(workers)] if workers else [])


def mlflow_run_command(entry_point: str, experiment: str, **params: object) -> list[str]:
    """``mlflow run . -e <entry_point> --env-manager local -P key=value …``, as a user types it."""
    command = [str(BIN / "mlflow"), "run", ".", "-e", entry_point, "--env-manager", "local"]
    command += ["--experiment-name", experiment]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    return command


def run_logged(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.CompletedProcess:
    """``command`` from the checkout, to its end, output to ``log_path``."""
    with open(log_path, "w", encoding="utf-8") as log:
        return subprocess.run(command, cwd=PROJECT_ROOT, env=process_env(env), stdout=log, stderr=subprocess.STDOUT)


def locust_command(url: str, users: int, spawn_rate: float, duration: str, csv_prefix: Path) -> list[str]:
    """Headless locust with ``tests/stress/locustfile.py`` against ``url``, summary CSVs at ``csv_prefix``."""
    command = [str(BIN / "locust"), "-f", str(PROJECT_ROOT / "tests" / "stress" / "locustfile.py"), "--headless"]
    command += ["-u", str(users), "-r", str(spawn_rate), "-t", duration, "-H", url]
    return command + ["--csv", str(csv_prefix), "--only-summary"]
