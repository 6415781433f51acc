"""serve: print a ready-to-paste curl for the Production model, then run `mlflow models serve` behind the ingress.

Not an MLproject entry point: ``make run`` and ``make serve`` call it after the pipeline.
The curl's body is the model version's own input example, so it always matches the signature.
Clients reach the ingress (``ingress.limits``: body size, content types, rows of a columnar body,
checked before MLflow parses anything) on ``--host``:``--port``; `mlflow models serve` listens on
a private loopback port behind it. A stop signal stops both, whatever is in flight, within
``ingress.run.STOP_SECONDS`` (then SIGKILL), and frees both ports.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import mlflow
from mlflow.models import Model

from ingress.limits import Limits
from ingress.run import stop_groups
from skyprophet import config
from skyprophet.mlops import registry, tracking
from skyprophet.mlops.digest import ArtifactDigestError
from skyprophet.ops.processes import ServedModel, free_port, ingress_command, server_env, start_logged


def example_curl(model_uri: str, host: str, port: int) -> str:
    """A curl that POSTs the model's input example to /invocations."""
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    example = Model.load(local).load_input_example(local)
    body = json.dumps({"dataframe_records": example.head(2).to_dict(orient="records")}, ensure_ascii=False)
    return f"curl -s -X POST http://{host}:{port}/invocations -H 'Content-Type: application/json' -d '{body}'"


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopServing(BaseException):
    """SIGINT (Ctrl-C), SIGTERM or SIGHUP arrived: stop the model server.

    A BaseException, like KeyboardInterrupt: the readiness wait's ``except Exception`` must not
    turn a stop into a start-up failure.
    """


def _raise_stop(signum: int, frame: object) -> None:
    raise StopServing(signal.Signals(signum).name)


def main() -> None:
    """Print the curl, then run `mlflow models serve` behind the ingress until Ctrl-C, SIGTERM or SIGHUP."""
    args = config.argument_parser("serve", __doc__).parse_args()
    env = server_env(args.workers)  # before anything else: a missing uvloop stops here
    Limits.from_env()  # and a bad SKYPROPHET_MAX_* value
    os.environ["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
    tracking.configure()
    copy = Path(tempfile.mkdtemp(prefix="skyprophet-serve-"))  # the Production version: its verified local copy
    atexit.register(shutil.rmtree, copy, True)
    try:
        model = registry.verified_copy(args.model_uri, copy)
    except ArtifactDigestError as err:
        raise SystemExit(f"serve: {err}") from None
    # Own session: Ctrl-C reaches only this process, which then stops the server with SIGTERM
    # (uvicorn's graceful shutdown) instead of both getting SIGINT and printing tracebacks. The
    # same for SIGTERM and SIGHUP (a supervisor, a closed terminal): without it the server, in its
    # own session, would outlive this process and keep the port. SIGINT is set explicitly too: a
    # shell that starts us in the background would otherwise have us ignore it.
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, _raise_stop)
    server = ServedModel(model, None, env, workers=args.workers, port=free_port(), wait=False)
    ingress = start_logged(ingress_command(args.host, args.port, server.url), env, None)
    processes = [server.process, ingress]
    code = 0
    try:
        # The curl only once the model answers: pasted at once, it must not meet a server still loading.
        server.wait_ready()
        sys.stdout.write(f"\nServing {args.model_uri} on http://{args.host}:{args.port} (Ctrl-C stops it). Try:\n\n")
        sys.stdout.write(example_curl(model, args.host, args.port) + "\n\n")
        sys.stdout.flush()
        while all(process.poll() is None for process in processes):
            time.sleep(0.2)
        code = next(process.returncode for process in processes if process.returncode is not None)
    except StopServing:
        pass
    except RuntimeError as err:  # the model server did not come up: say why, stop the ingress too
        sys.stderr.write(f"serve: {err}\n")
        code = 1
    finally:
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        # Stop first, say so after: a closed terminal or pipe must not keep the servers alive.
        stop_groups(processes)
        shutil.rmtree(copy, ignore_errors=True)  # os._exit below skips atexit
    try:
        sys.stdout.write("\nStopped.\n")
        sys.stdout.flush()
    except OSError:
        pass
    # Nothing is left to clean up: skip the interpreter's teardown (MLflow's exit handlers took ~4 s
    # on the shared machine, past the stop's bound).
    os._exit(code)


if __name__ == "__main__":
    main()
