"""serve: print a ready-to-paste curl for the Production model, then run `mlflow models serve`.

Not an MLproject entry point: ``make run`` and ``make serve`` call it after the pipeline.
The curl's body is the model version's own input example, so it always matches the signature.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys

import mlflow
from mlflow.models import Model

from steps import tracking


def example_curl(model_uri: str, host: str, port: int) -> str:
    """A curl that POSTs the model's input example to /invocations."""
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    example = Model.load(local).load_input_example(local)
    body = json.dumps({"dataframe_records": example.head(2).to_dict(orient="records")}, ensure_ascii=False)
    return f"curl -s -X POST http://{host}:{port}/invocations -H 'Content-Type: application/json' -d '{body}'"


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# The event loop of every uvicorn worker, through the UVICORN_* environment the `uvicorn` CLI that
# `mlflow models serve` runs reads. uvloop sets TCP_NODELAY on every accepted connection. asyncio's
# loop does so only when the listening socket says IPPROTO_TCP, and with `--workers N` uvicorn binds
# that socket itself without it (uvicorn issue 3149): every keep-alive response after the first then
# waits about 40 ms for the client's delayed ACK. Named explicitly so that a missing uvloop is an
# error at start, not a silent fallback to asyncio.
UVICORN_LOOP = "uvloop"


def server_env(workers: int) -> dict[str, str]:
    """The environment for `mlflow models serve`: ours, with UVICORN_LOOP=uvloop unless already set."""
    env = dict(os.environ)
    env.setdefault("UVICORN_LOOP", UVICORN_LOOP)
    if env["UVICORN_LOOP"] == UVICORN_LOOP and importlib.util.find_spec("uvloop") is None:
        raise SystemExit(
            "serve: uvloop is not installed (pip install -r requirements.txt). Without it uvicorn's workers "
            "leave TCP_NODELAY off on accepted connections (uvicorn issue 3149, about 40 ms more per keep-alive "
            f"request with --workers {workers}); set UVICORN_LOOP=asyncio to serve anyway."
        )
    return env


class StopServing(Exception):
    """SIGINT (Ctrl-C), SIGTERM or SIGHUP arrived: stop the model server."""


def _raise_stop(signum: int, frame: object) -> None:
    raise StopServing(signal.Signals(signum).name)


def main() -> None:
    """Print the curl, then run `mlflow models serve` until Ctrl-C, SIGTERM or SIGHUP."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", default="models:/flight-delay/Production")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    # One uvicorn worker per core: a worker is one Python process, bound to one core by the GIL.
    parser.add_argument("--workers", type=int, default=int(os.environ.get("SKYPROPHET_WORKERS", "2")))
    args = parser.parse_args()
    env = server_env(args.workers)  # before anything else: a missing uvloop stops here
    os.environ["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
    tracking.configure()
    sys.stdout.write(f"\nServing {args.model_uri} on http://{args.host}:{args.port} (Ctrl-C stops it). Try:\n\n")
    sys.stdout.write(example_curl(args.model_uri, args.host, args.port) + "\n\n")
    sys.stdout.flush()
    mlflow_cli = shutil.which("mlflow") or "mlflow"
    command = [
        mlflow_cli,
        "models",
        "serve",
        "-m",
        args.model_uri,
        "--env-manager",
        "local",
        "-h",
        args.host,
        "-p",
        str(args.port),
        "-w",
        str(args.workers),
    ]
    # Own session: Ctrl-C reaches only this process, which then stops the server with SIGTERM
    # (uvicorn's graceful shutdown) instead of both getting SIGINT and printing tracebacks. The
    # same for SIGTERM and SIGHUP (a supervisor, a closed terminal): without it the server, in its
    # own session, would outlive this process and keep the port. SIGINT is set explicitly too: a
    # shell that starts us in the background would otherwise have us ignore it.
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, _raise_stop)
    server = subprocess.Popen(command, start_new_session=True, env={**env, **os.environ})
    try:
        sys.exit(server.wait())
    except StopServing:
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        sys.stdout.write("\nStopping the model server...\n")
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        sys.stdout.write("Stopped.\n")


if __name__ == "__main__":
    main()
