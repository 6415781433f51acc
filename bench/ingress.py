"""What the ingress (``ingress.limits``, in front of ``make serve`` and the image) costs per request.

One ``mlflow models serve`` (``--workers``) and one ingress in front of it, as ``steps.serve``
runs them; the same keep-alive request loop goes straight to the model server and through the
ingress, alternating ``--rounds`` times in the same run (the machine is shared and noisy).
Per body: median and p90 latency of each, and the median difference. Bodies are the model's own
serving input example, its flights repeated to each size, as JSON records and as Parquet.

    python -m bench.ingress --rounds 4 --requests 200
    python -m bench.ingress --model-uri models:/flight-delay/3 --sizes 1 100 10000

Load only goes to 127.0.0.1; each round is bounded by ``--requests``.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.models import Model

from ingress.run import stop_groups
from skyprophet.ops.processes import BIN, ServedModel, free_port, start_logged, wait_for_http
from steps.serve import ingress_command, server_env


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


def timed(port: int, content_type: str, body: bytes, requests: int) -> list[float]:
    """Milliseconds of each of ``requests`` sequential keep-alive requests (a 200 each, or it stops)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    times = []
    try:
        for _ in range(requests):
            started = time.perf_counter()
            if content_type:
                connection.request("POST", "/invocations", body=body, headers={"Content-Type": content_type})
            else:
                connection.request("GET", "/ping")
            answer = connection.getresponse()
            answer.read()
            times.append((time.perf_counter() - started) * 1000)
            if answer.status != 200:
                raise SystemExit(f"HTTP {answer.status} on port {port}")
    finally:
        connection.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", default="models:/flight-delay/Production")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="per body, per round, per path (fewer for big)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 10_000])
    args = parser.parse_args()
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
                for path in order:
                    timed(paths[path], content_type, body, 2)  # warm this connection's path
                    samples.setdefault((name, path), []).extend(timed(paths[path], content_type, body, count))
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
