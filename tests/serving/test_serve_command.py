"""`python -m steps.serve` (what `make serve` and `make run` call) stops its model server on any stop signal."""

import signal
import subprocess
import sys

import pytest
import requests

from steps.config import PROJECT_ROOT
from tests.processes import free_port, process_env, stop_process_group, wait_for_http

pytestmark = [pytest.mark.slow]


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_serve_stops_the_model_server_on_a_stop_signal(registered_model, tmp_path, stop_signal):
    port = free_port()
    command = [sys.executable, "-m", "steps.serve", "--model-uri", registered_model["model_uri"]]
    command += ["--port", str(port), "--workers", "1"]
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    serve = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=process_env(registered_model["env"]),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ping = f"http://127.0.0.1:{port}/ping"
    try:
        wait_for_http(ping, timeout=90, process=serve)
        serve.send_signal(stop_signal)  # to steps.serve only: the model server runs in its own session
        serve.wait(timeout=30)
        assert not answers(ping), f"the model server outlived steps.serve after {stop_signal.name}"
        assert "Stopped." in (tmp_path / "serve.log").read_text()
    finally:
        stop_process_group(serve)
        log.close()
