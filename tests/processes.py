"""Child processes for tests, the stress run and the bench: the project's helpers plus test-only commands."""

from __future__ import annotations

import subprocess
from pathlib import Path

from steps.config import PROJECT_ROOT
from steps.processes import (  # noqa: F401 - re-exported for the tests, the stress run and the bench
    BIN,
    MLFLOW_RUN_STATE,
    ServedModel,
    free_port,
    model_serve_command,
    process_env,
    start_logged,
    stop_process_group,
    wait_for_http,
)


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
