"""What the ingress (``ingress.limits``, in front of ``make serve`` and the image) costs per request.

One ``mlflow models serve`` (``--workers``) and one ingress in front of it, as ``steps.serve``
runs them; the same keep-alive request loop goes straight to the model server and through the
ingress, alternating ``--rounds`` times in the same run (the machine is shared and noisy).
Per body: median and p90 latency of each, and the median difference. Bodies are the model's own
serving input example, its flights repeated to each size, as JSON records and as Parquet.

    python -m bench.ingress --rounds 4 --requests 200
    python -m bench.ingress --model-uri models:/flight-delay/3 --sizes 1 100 10000

With ``--seed-dir DIR`` (a checkout of the seed project, github.com/UribeAlejandro/SkyProphet; its
code is not part of this repository) it times instead one request of ``--flights`` real flights
(``--data-uri``, rows the model can score, ``bench.flights``' ``batch-10k`` form) through the
ingress and ``mlflow models serve`` as ``make serve`` runs them, for the working copy's ``pyfunc/``
and each ``--baseline`` revision's (copied into the model's code, as a version logged from that
code would carry), against the seed's FastAPI app (``uvicorn challenge.api:app``, one worker) on
the same flights (its five one-hot columns), with a seed-style model (XGBoost on one-hot
``OPERA, TIPOVUELO, MES, SIGLADES, DIANOM``, fitted on the file, registered in a temporary
store where the seed's app loads it from): one server each, alternating, ``--rounds`` rounds of
``--requests`` requests.

    python -m bench.ingress --seed-dir /tmp/seed --baseline a57d81c --rounds 5 --requests 8

Load only goes to 127.0.0.1; each round is bounded by ``--requests``.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.models import Model

from bench.input_path import side_model
from ingress.run import stop_groups
from skyprophet.config import PROJECT_ROOT
from skyprophet.ops.processes import (
    BIN,
    ServedModel,
    free_port,
    ingress_command,
    server_env,
    start_logged,
    wait_for_http,
)


def example_flights(model_uri: str) -> pd.DataFrame:
    """The model version's own input example (what ``steps.serve`` prints a curl of)."""
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    return Model.load(local).load_input_example(local)


def bodies(flights: pd.DataFrame, sizes: list[int]) -> dict[str, tuple[str, bytes]]:
    """``name -> (content type, body)`` for each size: JSON records, and Parquet for the largest."""
    result = {"GET /ping": ("", b"")}
    for size in sizes:
        frame = pd.concat([flights] * (size // len(flights) + 1), ignore_index=True).head(size)
        records = json.dumps({"dataframe_records": json.loads(frame.to_json(orient="records"))}).encode()
        result[f"{size:,} flights JSON"] = ("application/json", records)
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, compression="zstd")
    result[f"{sizes[-1]:,} flights Parquet"] = ("application/vnd.apache.parquet", sink.getvalue())
    return result


def timed(port: int, path: str, content_type: str, body: bytes, requests: int, timeout: float = 120) -> list[float]:
    """Milliseconds of each of ``requests`` sequential keep-alive requests to ``path`` (a 200 each, or it stops).

    A POST of ``body`` as ``content_type``; without a content type, a GET (``/ping``).
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    times = []
    try:
        for _ in range(requests):
            started = time.perf_counter()
            if content_type:
                connection.request("POST", path, body=body, headers={"Content-Type": content_type})
            else:
                connection.request("GET", path)
            answer = connection.getresponse()
            text = answer.read()
            times.append((time.perf_counter() - started) * 1000)
            if answer.status != 200:
                raise SystemExit(f"HTTP {answer.status} from port {port}{path}: {text[:300]!r}")
    finally:
        connection.close()
    return times


SEED_COLUMNS = ("OPERA", "TIPOVUELO", "MES", "SIGLADES", "DIANOM")
SEED_MODEL_NAME = "seed-delay"
# The seed's app is pinned to pandas 2.2. Under pandas 3 (this project's interpreter) its enforce_schema
# `update`s an int frame with get_dummies' booleans, which pandas 2.2 did with a warning and pandas 3
# refuses: there the dummies are cast to int before its own enforce_schema runs (one more conversion:
# never faster than it was). In the seed's own environment (``--seed-python``) it runs as it ships.
SEED_LAUNCHER = """
import sys
import pandas
import uvicorn
from challenge.pipeline import serving
if int(pandas.__version__.split(".")[0]) >= 3:
    enforce_schema = serving.enforce_schema
    serving.enforce_schema = lambda data, columns: enforce_schema(data.astype(int), columns)
uvicorn.run("challenge.api:app", host="127.0.0.1", port=int(sys.argv[1]), workers=1, log_level="warning")
"""
# The seed-style model, fitted and registered by the interpreter that serves the seed's app (its MLflow
# loads what its own MLflow logged): argv is the rows (Parquet: the five columns and `delay`) and the folder.
SEED_FIT = """
import sys
from pathlib import Path
import mlflow
import pandas as pd
import xgboost as xgb
rows, folder = pd.read_parquet(sys.argv[1]), Path(sys.argv[2])
target = rows.pop("delay")
features = pd.get_dummies(rows, columns=list(rows.columns)).astype(float)
model = xgb.XGBClassifier(random_state=1, learning_rate=0.01, n_jobs=2).fit(features, target.to_numpy())
uri = f"sqlite:///{folder / 'mlflow.db'}"
mlflow.set_tracking_uri(uri)
experiment = mlflow.create_experiment("seed", artifact_location=(folder / "artifacts").as_uri())
if int(mlflow.__version__.split(".")[0]) >= 3:  # skops, MLflow 3's default, loads only the types it is told to trust
    how = {"name": "model", "skops_trusted_types": ["xgboost.core.Booster", "xgboost.sklearn.XGBClassifier"]}
else:
    how = {"artifact_path": "model"}
with mlflow.start_run(experiment_id=experiment):
    mlflow.sklearn.log_model(model, registered_model_name=sys.argv[3], **how)
client = mlflow.MlflowClient(uri)
version = max(int(v.version) for v in client.search_model_versions(f"name='{sys.argv[3]}'"))
client.set_registered_model_alias(sys.argv[3], "production", str(version))
"""


def seed_model_store(raw: pd.DataFrame, folder: Path, python: Path) -> dict[str, str]:
    """A seed-style model (XGBoost on the seed columns one-hot), registered as ``production`` by ``python``.

    Returns the seed app's environment variables.
    """
    from skyprophet.science.raw_flights import delay_target

    rows = folder / "seed-rows.parquet"
    seed_frame(raw).assign(delay=delay_target(raw).to_numpy()).to_parquet(rows, index=False)
    subprocess.run([str(python), "-c", SEED_FIT, str(rows), str(folder), SEED_MODEL_NAME], check=True)
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "MLFLOW_EXPERIMENT_NAME": SEED_MODEL_NAME}


def seed_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """The seed app's five columns of raw rows (``MES`` a number, as its request model declares)."""
    return rows[list(SEED_COLUMNS)].assign(MES=rows["MES"].astype(int))


def compare_seed(args: argparse.Namespace) -> None:
    """One request of ``--flights`` real flights: ours (ingress + model server, per code side) against the seed app."""
    from bench.flights import Form, read_raw_flights, request_body, sample_rows, scorable_rows
    from ingress.run import stop_groups

    work = Path(tempfile.mkdtemp(prefix="bench-seed-"))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=args.model_uri, dst_path=str(work / "model")))
    spec = json.loads((local / "artifacts" / "spec.json").read_text(encoding="utf-8"))
    raw = read_raw_flights(args.data_uri)
    rows = sample_rows(scorable_rows(raw, spec), args.flights, seed=0)
    # As a client sends them: with the raw file's optional columns (``Ori-I``, ``SIGLAORI``), and with the
    # required ones only (what the model reads, as the seed's request carries only what its model reads).
    ours_bodies = {
        f"{form.label.split(', ', 2)[2]}": request_body(rows, form).encode()
        for form in (
            Form("batch", args.flights, orient="dataframe_split"),
            Form("batch-required", args.flights, optional=False, orient="dataframe_split"),
        )
    }
    seed_body = json.dumps({"flights": seed_frame(rows).to_dict(orient="records")}).encode()
    roots = {"working copy": PROJECT_ROOT}
    for revision in args.baseline:
        roots[f"baseline {revision}"] = work / f"code-{revision}"
        roots[f"baseline {revision}"].mkdir()
        archive = subprocess.run(
            ["git", "archive", revision, "pyfunc"], cwd=PROJECT_ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(roots[f"baseline {revision}"])], input=archive.stdout, check=True)
    seeds = {}
    for i, python in enumerate(args.seed_python):
        (work / f"seed-{i}").mkdir()
        seeds[f"seed app, {python}"] = (python, seed_model_store(raw, work / f"seed-{i}", python))
    env = server_env(1)
    processes, ports = [], {}
    try:
        for i, (name, root) in enumerate(roots.items()):
            model = side_model(local, root, work / f"model-{i}")
            server = ServedModel(str(model), work / f"serve-{i}.log", env, workers=1, timeout=300)
            processes.append(server.process)
            port = free_port()
            ingress = start_logged(ingress_command("127.0.0.1", port, server.url), env, work / f"ingress-{i}.log")
            processes.append(ingress)
            wait_for_http(f"http://127.0.0.1:{port}/ping", timeout=60, process=ingress)
            for columns, body in ours_bodies.items():
                ports[f"ours, {name}, {columns}"] = (port, "/invocations", body)
        for i, (name, (python, seed_env)) in enumerate(seeds.items()):
            seed_port = free_port()
            seed = subprocess.Popen(
                [str(python), "-c", SEED_LAUNCHER, str(seed_port)],
                cwd=args.seed_dir,
                env={**os.environ, **seed_env, "PYTHONPATH": str(args.seed_dir)},
                stdout=open(work / f"seed-{i}.log", "w", encoding="utf-8"),  # noqa: SIM115 (the child keeps it)
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            processes.append(seed)
            wait_for_http(f"http://127.0.0.1:{seed_port}/ping", timeout=120, process=seed)
            ports[name] = (seed_port, "/predict", seed_body)
        samples: dict[str, list[float]] = {name: [] for name in ports}
        loads = []
        for round_ in range(args.rounds):
            names = list(ports)
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                port, path, body = ports[name]
                timed(port, path, "application/json", body, 2, timeout=300)  # warm the connection and the caches
                samples[name].extend(timed(port, path, "application/json", body, args.requests, timeout=300))
            loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
    finally:
        stop_groups(processes)
    medians = {name: statistics.median(times) for name, times in samples.items()}
    print(f"\nOne request of {args.flights:,} real flights, 1 worker each, keep-alive, {args.rounds} rounds")
    print(f"of {args.requests}, alternating; load {min(loads):.1f}-{max(loads):.1f}; ours through the ingress\n")
    print("| server | n | median ms | min-max ms | p90 ms |" + "".join(f" {name} / this |" for name in seeds))
    print("| --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(seeds))
    for name, times in samples.items():
        p90 = statistics.quantiles(times, n=10)[-1]
        print(
            f"| {name} | {len(times)} | {medians[name]:.0f} | {min(times):.0f}-{max(times):.0f} | {p90:.0f} |"
            + "".join(f" {medians[seed] / medians[name]:.2f}x |" for seed in seeds)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", default="models:/flight-delay/Production")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="per body, per round, per path (fewer for big)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 10_000])
    parser.add_argument("--seed-dir", type=Path, help="a checkout of the seed project: time ours against its app")
    parser.add_argument(
        "--seed-python",
        type=lambda path: Path(path).absolute(),  # not resolved: a venv's python is a link to the base one
        nargs="+",
        default=[BIN / "python"],
        help="with --seed-dir: interpreters to run the seed's app with, each beside the others: one of an "
        "environment with the seed's pins (its requirements.txt), and/or this project's (the default; "
        "under pandas 3 its app runs with one cast added)",
    )
    parser.add_argument("--baseline", nargs="*", default=[], help="with --seed-dir: git revisions of pyfunc/ too")
    parser.add_argument("--flights", type=int, default=10_000, help="with --seed-dir: flights per request")
    parser.add_argument("--data-uri", default=os.environ.get("DATA_URI", "/work/shared/datasets/scl-2017/data.csv"))
    args = parser.parse_args()
    if args.seed_dir:
        compare_seed(args)
        return
    all_bodies = bodies(example_flights(args.model_uri), args.sizes)
    logs = Path(tempfile.mkdtemp(prefix="bench-ingress-"))
    env = server_env(args.workers)
    server = ServedModel(args.model_uri, logs / "serve.log", env, workers=args.workers, timeout=180)
    port = free_port()
    ingress = start_logged(ingress_command("127.0.0.1", port, server.url), env, logs / "ingress.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", timeout=60, process=ingress)
        paths = {"direct": server.port, "ingress": port}
        samples: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for name, (content_type, body) in all_bodies.items():
                count = max(5, min(args.requests, args.requests * 200_000 // max(len(body), 1)))
                order = ["direct", "ingress"] if round_ % 2 == 0 else ["ingress", "direct"]
                url = "/invocations" if content_type else "/ping"
                for path in order:
                    timed(paths[path], url, content_type, body, 2)  # warm this connection's path
                    samples.setdefault((name, path), []).extend(timed(paths[path], url, content_type, body, count))
        print(f"\nIngress cost per request: {args.rounds} alternating rounds, {args.workers} worker(s), keep-alive")
        print(f"(machine load {Path('/proc/loadavg').read_text().split()[0]}; {BIN / 'python'})\n")
        print("| request | body | n | direct p50 ms | ingress p50 ms | direct p90 ms | ingress p90 ms | p50 cost ms |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, (_, body) in all_bodies.items():
            direct, through = samples[(name, "direct")], samples[(name, "ingress")]
            p50 = statistics.median(direct), statistics.median(through)
            p90 = (statistics.quantiles(direct, n=10)[-1], statistics.quantiles(through, n=10)[-1])
            print(
                f"| {name} | {len(body):,} B | {len(direct)} | {p50[0]:.2f} | {p50[1]:.2f} | {p90[0]:.2f} | "
                f"{p90[1]:.2f} | {p50[1] - p50[0]:+.2f} |"
            )
    finally:
        stop_groups([server.process, ingress])
    sys.stdout.flush()


if __name__ == "__main__":
    main()
