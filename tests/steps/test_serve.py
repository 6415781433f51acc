"""`python -m steps.serve` (what `make serve` and `make run` call): stops its model server and ingress on any
stop signal, and their connections have TCP_NODELAY with one worker or two."""

import http.client
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from bench.run import nodelay_connections, worker_pids
from skyprophet.config import PROJECT_ROOT
from skyprophet.ops.processes import free_port, process_env, stop_process_group, wait_for_http

pytestmark = [pytest.mark.slow]


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def start_serve(registered_model, log) -> tuple[subprocess.Popen, int]:
    """``python -m steps.serve`` on a free port with one worker, in its own session, output to ``log``."""
    port = free_port()
    command = [sys.executable, "-m", "steps.serve", "--model-uri", registered_model["model_uri"]]
    command += ["--port", str(port), "--workers", "1"]
    serve = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=process_env(registered_model["env"]),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return serve, port


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_serve_stops_the_model_server_on_a_stop_signal(registered_model, tmp_path, stop_signal):
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    serve, port = start_serve(registered_model, log)
    ping = f"http://127.0.0.1:{port}/ping"
    try:
        wait_for_http(ping, timeout=90, process=serve)
        model_ping = f"http://127.0.0.1:{model_server_port(serve.pid)}/ping"
        assert answers(model_ping), "the model server answers on its private port behind the ingress"
        serve.send_signal(stop_signal)  # to steps.serve only: the servers run in their own sessions
        serve.wait(timeout=30)
        assert not answers(ping), f"the ingress outlived steps.serve after {stop_signal.name}"
        assert not answers(model_ping), f"the model server outlived steps.serve after {stop_signal.name}"
        assert "Stopped." in (tmp_path / "serve.log").read_text()
    finally:
        stop_process_group(serve)
        log.close()


def child_pids(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def model_server_port(serve_pid: int) -> int:
    """The private port steps.serve gave `mlflow models serve` (``-p`` on its command line)."""
    (server,) = [pid for pid in child_pids(serve_pid) if "ingress.run" not in cmdline(pid)]
    return int(cmdline(server).split(" -p ")[1].split()[0])


@pytest.mark.parametrize("workers", [1, 2])
def test_served_connections_have_tcp_nodelay(registered_model, tmp_path, workers):
    """uvicorn issue 3149: with --workers N on asyncio's loop, accepted sockets keep Nagle on (+40 ms a request).

    `steps.serve` runs the workers on uvloop, which sets TCP_NODELAY on every accepted connection;
    read here from the servers' own sockets (pidfd_getfd) after real keep-alive requests: the
    ingress's on the public port, the model server's on its private port (ours and the ingress's).
    """
    port = free_port()
    command = [sys.executable, "-m", "steps.serve", "--model-uri", registered_model["model_uri"]]
    command += ["--port", str(port), "--workers", str(workers)]
    env = {k: v for k, v in process_env(registered_model["env"]).items() if k != "UVICORN_LOOP"}
    with open(tmp_path / "serve.log", "w") as log:
        serve = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(4)]
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", timeout=90, process=serve)
        model_port = model_server_port(serve.pid)
        direct = [http.client.HTTPConnection("127.0.0.1", model_port, timeout=30) for _ in range(4)]
        connections += direct
        for connection in connections * 2:  # the second request on each connection is the one Nagle delays
            connection.request("GET", "/ping")
            assert connection.getresponse().read() is not None
        (server,) = [pid for pid in child_pids(serve.pid) if "ingress.run" not in cmdline(pid)]
        (ingress,) = [pid for pid in child_pids(serve.pid) if "ingress.run" in cmdline(pid)]
        assert len(worker_pids(server)) == workers  # `mlflow models serve`, in its own session and process group
        assert nodelay_connections(ingress, port) == (4, 4), "every connection the ingress accepted has TCP_NODELAY"
        with_nodelay, held = nodelay_connections(server, model_port)  # ours and the ingress's keep-alive ones
        assert held >= 5 and with_nodelay == held, f"TCP_NODELAY on {with_nodelay} of {held} model server connections"
    finally:
        for connection in connections:
            connection.close()
        stop_process_group(serve)


def test_the_printed_curl_is_answered_at_once(registered_model, tmp_path):
    """serve prints its curl only once the model answers: pasted at once, it gets predictions."""
    log_path = tmp_path / "serve.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    serve, port = start_serve(registered_model, log)
    try:
        deadline = time.monotonic() + 120
        printed = re.compile(r"Try:\s+curl .* -d '(\{.*\})'\n")
        while not printed.search(log_path.read_text()) and time.monotonic() < deadline and serve.poll() is None:
            time.sleep(0.05)
        found = printed.search(log_path.read_text())
        assert found, log_path.read_text()[-2000:]
        body = found.group(1)
        answer = requests.post(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 2
    finally:
        stop_process_group(serve)
        log.close()
