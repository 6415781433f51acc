"""A/B of two ways to spend 2 cores on ``mlflow models serve``, alternated in one run.

A: one server with 2 uvicorn workers, all connections to it (``-w 2``, what ``make serve`` runs).
B: two servers with 1 worker each, half the connections to each: what two 1-vCPU Cloud Run
   instances behind the load balancer are (the balancer spreads connections, no shared accept).

The machine is shared and noisy, so A and B alternate ``--rounds`` times and every number is
shown per round with its range. Per round: requests/s, p50/p99 (the worse of the ``--clients``
wrk processes', 2 in both configurations), connections each worker held, and each worker's
share of one core during the load (how uneven the work was). Load only goes to 127.0.0.1 and
each run is bounded in time.

    python -m bench.workers_ab --forms text raw --rounds 4 --duration 10

Other pairs with ``--config NAME=WORKERS[,WORKERS...][:KEY=VALUE,...]``, e.g. the model image's
event loop (no uvloop: asyncio and h11) against this venv's, both with 2 workers:

    python -m bench.workers_ab --config "uvloop=2" --config "asyncio=2:UVICORN_LOOP=asyncio,UVICORN_HTTP=h11"
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.flights import FORMS, form_bodies, load_spec, read_raw_flights, scorable_rows
from bench.run import connections_per_process, group_stats, peak_rss_mib, worker_pids, wrk_load
from skyprophet.config import MODEL_NAME, SCL_DATA_PATH
from skyprophet.ops.processes import ServedModel


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    ticks = {}
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def run_wrk(url: str, body_file: Path, connections: int, duration: int, out: list, index: int) -> None:
    out[index] = wrk_load(url, body_file, connections, duration)


def one_round(servers: list[ServedModel], body_file: Path, connections: int, duration: int, clients: int) -> dict:
    """Load the servers with ``clients`` wrk processes (connections split evenly, clients round-robin over
    servers, so both configurations have the same client processes); per-worker CPU share and connections."""
    workers = [pid for s in servers for pid in worker_pids(s.process.pid)]
    before = cpu_ticks(workers)
    results: list = [None] * clients
    share = connections // clients
    threads = [
        threading.Thread(target=run_wrk, args=(servers[i % len(servers)].url, body_file, share, duration, results, i))
        for i in range(clients)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(min(5.0, duration / 2))
    split = []
    for server in servers:
        held = connections_per_process(server.process.pid, server.port, skip_own=True)
        split += (held + [0] * server.workers)[: server.workers]
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    after = cpu_ticks(workers)
    tick = os.sysconf("SC_CLK_TCK")
    busy = [(after[p] - before[p]) / tick / wall for p in workers]
    return {
        "rps": sum(r["rps"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "split": split,
        "busy": busy,
        "load": os.getloadavg()[0],
    }


def group_rss_mib(server: ServedModel) -> float:
    """Resident memory of the whole server group now (CLI, supervisor, workers), MiB."""
    total = 0
    for pid in group_stats(server.process.pid):
        status = Path(f"/proc/{pid}/status").read_text()
        total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    return total / 1024


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    low, middle, high = (fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
    return f"median {middle} (range {low} - {high})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", default=f"models:/{MODEL_NAME}/Production")
    parser.add_argument("--data-uri", default=os.environ.get("DATA_URI", str(SCL_DATA_PATH)))
    parser.add_argument("--forms", nargs="+", default=["text", "raw"], choices=[f.name for f in FORMS if f.load])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--clients", type=int, default=2, help="wrk processes, the connections split among them")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env", nargs="*", default=[], help="KEY=VALUE for every server (e.g. UVICORN_LOOP=asyncio)")
    parser.add_argument("--config", action="append", default=[], help="NAME=WORKERS[,WORKERS...][:KEY=VALUE,...]")
    args = parser.parse_args()
    import mlflow

    env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="skyprophet-ab-") as tmp:
        work = Path(tmp)
        local = mlflow.artifacts.download_artifacts(artifact_uri=args.model_uri, dst_path=str(work / "model"))
        rows = scorable_rows(read_raw_flights(args.data_uri), load_spec(local))
        configs = {"A: 1 server x 2 workers": ([2], {}), "B: 2 servers x 1 worker": ([1, 1], {})}
        if args.config:
            configs = {}
            for spec in args.config:
                name, _, rest = spec.partition("=")
                shape, _, extra = rest.partition(":")
                pairs = dict(kv.split("=", 1) for kv in extra.split(",") if kv)
                configs[name] = ([int(w) for w in shape.split(",")], pairs)
        servers = {
            name: [
                ServedModel(local, work / f"serve-{n}-{i}.log", {**env, **extra}, workers=w, wait=False)
                for i, w in enumerate(shape)
            ]
            for n, (name, (shape, extra)) in enumerate(configs.items())
        }
        try:
            forms = {f.name: f for f in FORMS}
            first = form_bodies(rows, forms["text"], 1, seed=args.seed)[0]
            for group in servers.values():
                for server in group:
                    server.wait_ready()
                    for _ in range(40):
                        server.invoke(first).raise_for_status()
            for name, group in servers.items():
                rss = sum(group_rss_mib(s) for s in group)
                peak = [peak_rss_mib(p) for s in group for p in worker_pids(s.process.pid)]
                print(f"{name}: resident memory of the whole group {rss:.0f} MiB, workers' peak {peak}", flush=True)
            for form_name in args.forms:
                form = forms[form_name]
                body_file = work / f"{form_name}.jsonl"
                body_file.write_text("\n".join(form_bodies(rows, form, 200, seed=args.seed + 7)) + "\n")
                results: dict[str, list[dict]] = {name: [] for name in servers}
                for round_ in range(args.rounds):
                    order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
                    for name in order:
                        result = one_round(servers[name], body_file, args.connections, args.duration, args.clients)
                        results[name].append(result)
                        busy = " / ".join(f"{b:.0%}" for b in result["busy"])
                        print(
                            f"  {form.name} round {round_ + 1} {name}: {result['rps']:.0f} req/s, "
                            f"p50 {result['p50_ms']:.1f} / p99 {result['p99_ms']:.1f} ms, failed {result['errors']}, "
                            f"connections {result['split']}, worker busy {busy}, load {result['load']:.2f}",
                            flush=True,
                        )
                print(f"{form.label}, {args.connections} connections, {args.duration} s x {args.rounds} rounds:")
                for name, runs in results.items():
                    print(
                        f"  {name}: req/s {spread([r['rps'] for r in runs])}; "
                        f"p99 ms {spread([r['p99_ms'] for r in runs], '{:.1f}')}; "
                        f"p50 ms {spread([r['p50_ms'] for r in runs], '{:.1f}')}",
                        flush=True,
                    )
        finally:
            for group in servers.values():
                for server in group:
                    server.stop()


if __name__ == "__main__":
    sys.exit(main())
