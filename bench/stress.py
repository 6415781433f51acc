"""``make stress-test``: serve the Production model (and the sidecar), load it with locust, judge.

Starts ``mlflow models serve`` on a free port of 127.0.0.1 (plus ``python -m sidecar.app`` when
the project has a sidecar), runs ``bench/locustfile.py`` headless and writes
``reports/stress/index.html`` (+ CSV). Exits non-zero when any request failed or the 95th
percentile exceeded ``--p95-ms``. Every process it started is stopped, whatever happens.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from skyprophet.config import MODEL_NAME, PROJECT_ROOT, SCL_DATA_PATH
from skyprophet.ops.processes import (
    ServedModel,
    free_port,
    locust_command,
    mlflow_run_command,
    process_env,
    run_logged,
    start_logged,
    stop_process_group,
    wait_for_http,
)

DEFAULT_MODEL_URI = f"models:/{MODEL_NAME}/Production"


def wait_ok(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Wait for a 200 from ``url``; on failure exit with the process log's tail."""
    try:
        wait_for_http(url, timeout, process)
    except (RuntimeError, TimeoutError) as err:
        raise SystemExit(f"{err}:\n{log.read_text()[-3000:]}") from None


def download(model_uri: str) -> str:
    import mlflow

    return mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tempfile.mkdtemp(prefix="stress-"))


def train_first(data_uri: str, logs: Path) -> None:
    """``mlflow run . -e main`` on DATA_URI (a stress run of a model of made-up flights would measure nothing real)."""
    if not Path(data_uri).is_file():
        raise SystemExit(
            f"stress: no Production model yet and no flights file at {data_uri} to train one: give DATA_URI"
        )
    print(f"stress: no Production model yet; training one on {data_uri} (mlflow run . -e main)", flush=True)
    command = mlflow_run_command("main", os.environ.get("MLFLOW_EXPERIMENT_NAME", "skyprophet"), data_uri=data_uri)
    log = logs / "pipeline.log"
    if run_logged(command, {}, log).returncode != 0:
        raise SystemExit(f"training a model for the stress test failed; see {log}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", default=os.environ.get("MODEL_URI", DEFAULT_MODEL_URI))
    parser.add_argument(
        "--data-uri",
        default=os.environ.get("DATA_URI", str(SCL_DATA_PATH)),
        help="flights to train on when there is no Production model yet (required then)",
    )
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--duration", default="60s", help="locust --run-time, e.g. 60s, 2m")
    parser.add_argument("--p95-ms", type=float, default=500, help="fail when the 95th percentile exceeds this")
    parser.add_argument("--wait", type=float, default=1.0, help="most seconds a user thinks between requests")
    parser.add_argument("--workers", type=int, default=2, help="mlflow models serve -w")
    parser.add_argument("--sidecar", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--report-dir", default=str(PROJECT_ROOT / "reports" / "stress"))
    args = parser.parse_args()

    import mlflow

    report_dir = Path(args.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    logs = report_dir / "logs"
    logs.mkdir(exist_ok=True)
    try:
        model_dir = download(args.model_uri)
    except mlflow.exceptions.MlflowException as err:
        if args.model_uri != DEFAULT_MODEL_URI:
            raise SystemExit(
                f"cannot load {args.model_uri} from {mlflow.get_tracking_uri()}: {err.message[:300]}"
            ) from err
        # A fresh clone has no Production model yet: make one, as `make pipeline` would.
        train_first(args.data_uri, logs)
        model_dir = download(args.model_uri)

    processes: list[subprocess.Popen] = []
    try:
        try:
            server = ServedModel(args.model_uri, logs / "model-server.log", workers=args.workers)
        except RuntimeError as err:
            raise SystemExit(str(err)) from None
        processes.append(server.process)
        model_url = server.url

        sidecar_url = ""
        has_sidecar = importlib.util.find_spec("sidecar.app") is not None
        if args.sidecar == "on" or (args.sidecar == "auto" and has_sidecar):
            sidecar_port = free_port()
            sidecar_log = logs / "sidecar.log"
            sidecar_env = {
                "MODEL_SERVER_URL": model_url,
                "MODEL_URI": args.model_uri,
                "SIDECAR_HOST": "127.0.0.1",
                "SIDECAR_PORT": str(sidecar_port),
            }
            processes.append(start_logged([sys.executable, "-m", "sidecar.app"], sidecar_env, sidecar_log))
            sidecar_url = f"http://127.0.0.1:{sidecar_port}"
            wait_ok(f"{sidecar_url}/health", processes[-1], sidecar_log, timeout=120)

        locust = locust_command(model_url, args.users, args.spawn_rate, args.duration, report_dir / "stats")
        locust += ["--html", str(report_dir / "index.html"), "--stop-timeout", "10"]
        locust_env = {
            "STRESS_MODEL_DIR": model_dir,
            "STRESS_P95_MS": str(args.p95_ms),
            "STRESS_WAIT": str(args.wait),
            "STRESS_SIDECAR_URL": sidecar_url,
        }
        print(
            f"stress: {args.users} users (+{args.spawn_rate}/s) for {args.duration} on {model_url}"
            + (f" and sidecar {sidecar_url}" if sidecar_url else "")
            + f"; 95th percentile bound {args.p95_ms:.0f} ms",
            flush=True,
        )
        done = subprocess.run(locust, cwd=PROJECT_ROOT, env=process_env(locust_env))
        print(f"stress: report at {report_dir / 'index.html'}", flush=True)
        return done.returncode
    finally:
        for process in reversed(processes):
            stop_process_group(process)


if __name__ == "__main__":
    sys.exit(main())
