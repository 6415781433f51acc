"""Child processes: environment, free port, readiness, stop; a served model version (promote, tests, bench)."""

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
    """The current environment plus ``extra``, with the venv's bin first on PATH (mlflow runs uvicorn, python)."""
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


class ServedModel:
    """A real ``mlflow models serve`` of ``model_uri`` on a free port of 127.0.0.1, stopped by ``stop()``.

    Usable as a context manager. ``timeout``: seconds to the first ``/ping`` 200; on failure the
    server is stopped and the error carries the log's tail.
    """

    def __init__(
        self,
        model_uri: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        workers: int | None = None,
        timeout: float = 180,
    ) -> None:
        self.model_uri = model_uri
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = start_logged(model_serve_command(model_uri, self.port, workers), env or {}, log_path)
        try:
            wait_for_http(f"{self.url}/ping", timeout=timeout, process=self.process)
        except Exception as err:
            self.stop()
            tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
            raise RuntimeError(f"model server for {model_uri} failed to start ({err}):\n{tail}") from None

    def stop(self) -> None:
        """Terminate the server and its workers."""
        stop_process_group(self.process)

    def __enter__(self) -> ServedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
