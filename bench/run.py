"""The benchmark table: each measurement beside its target (the design's Benchmarks section, in docs/benchmarks.md).

``make bench`` runs this. Load only goes to 127.0.0.1 and every load run is bounded in time.
The machine is shared, so the 1-minute load average is recorded beside every measurement.

Steps: time ``mlflow run . -e etl|train|register`` on the real file under ``/usr/bin/time -v``
(unless ``--no-pipeline``; always when no Production model exists); read the real file
(``--data-uri``, into a temporary folder, never written anywhere else) and build request bodies
from rows sampled from it in the forms clients send (``bench.flights.FORMS``); then for each
worker count (``--workers 1 2``) start ``mlflow models serve`` (cold start to the first ``/ping``
200), load it with each form for ``--duration`` seconds at ``--connections`` connections (wrk, or
locust when wrk is missing), time one 10,000- and one 100,000-flight request, and read each
worker's peak RSS; last, MLflow's ``invocations()`` in process. One row per form and worker
count in the per-form table.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.flights import load_spec
from skyprophet.config import EMBEDDED_STORE_URI, MODEL_NAME, PROJECT_ROOT, SCL_DATA_PATH
from skyprophet.ops.processes import ServedModel, locust_command, mlflow_run_command, run_logged

POST_LUA = PROJECT_ROOT / "bench" / "post.lua"
IN_PROCESS_SIZES = (1, 100, 100_000)


@dataclass
class Row:
    """One line of the table."""

    name: str
    measured: str
    target: str = "-"
    load: str = ""
    ok: bool | None = None


@dataclass
class Table:
    """The rows, printed as Markdown."""

    title: str
    rows: list[Row] = field(default_factory=list)

    def add(self, name: str, measured: str, target: str = "-", ok: bool | None = None) -> None:
        self.rows.append(Row(name, measured, target, load_average(), ok))
        print(f"  {name}: {measured}", file=sys.stderr, flush=True)

    def markdown(self) -> str:
        header = "| measurement | measured | target | met | load avg (1 min) |\n|---|---|---|---|---|"
        lines = [f"### {self.title}", "", header]
        for row in self.rows:
            met = "" if row.ok is None else ("yes" if row.ok else "**no**")
            lines.append(f"| {row.name} | {row.measured} | {row.target} | {met} | {row.load} |")
        return "\n".join(lines)


def load_average() -> str:
    """The 1-minute load average now (other engineers share these 2 cores)."""
    return f"{os.getloadavg()[0]:.2f}"


# --- pipeline ----------------------------------------------------------------------------


def timed_step(entry_point: str, params: dict[str, str], log_dir: Path) -> tuple[float, float]:
    """``mlflow run . -e <entry_point>`` under ``/usr/bin/time -v``: (wall seconds, peak RSS MiB)."""
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    if gnu_time is None:
        raise SystemExit("GNU time is missing: apt-get install -y time (the bench reads peak memory from it)")
    report = log_dir / f"time-{entry_point}.txt"
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "skyprophet")
    command = [gnu_time, "-v", "-o", str(report), *mlflow_run_command(entry_point, experiment, **params)]
    log = log_dir / f"{entry_point}.log"
    if run_logged(command, {}, log).returncode != 0:
        raise SystemExit(f"`mlflow run . -e {entry_point}` failed; see {log}")
    text = report.read_text()
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(wall.split(":"))))
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return seconds, peak_kib / 1024


def run_pipeline(table: Table, data_uri: str, sha256: str, log_dir: Path) -> None:
    """Time etl, train and register separately, as a user runs them."""
    total = 0.0
    for entry_point, params in (("etl", {"data_uri": data_uri, "sha256": sha256}), ("train", {}), ("register", {})):
        seconds, peak = timed_step(entry_point, params, log_dir)
        total += seconds
        table.add(f"`{entry_point}` wall time / peak RSS", f"{seconds:.1f} s / {peak:.0f} MiB")
    table.add("`etl` + `train` + `register` wall time", f"{total:.1f} s", "<= 60 s", total <= 60)


def newest_version_uri() -> str:
    """``models:/flight-delay/<newest version>`` (what the pipeline just registered)."""
    import mlflow

    versions = mlflow.MlflowClient().search_model_versions(f"name = '{MODEL_NAME}'")
    newest = max(versions, key=lambda v: int(v.version))
    return f"models:/{MODEL_NAME}/{newest.version}"


def production_exists() -> bool:
    import mlflow

    from skyprophet.mlops.registry import production_version

    return production_version(mlflow.MlflowClient(), MODEL_NAME) is not None


# --- the served model ----------------------------------------------------------------------


def ready_seconds(server: ServedModel, body: str, timeout: float = 120) -> tuple[float, float]:
    """Seconds from the server's start to its first ``/ping`` 200 and to its first scored ``body``."""
    ping = server.wait_ready(timeout)
    while time.monotonic() < server.started + timeout:
        if server.process.poll() is not None:
            raise SystemExit(f"model server exited with {server.process.returncode}; see {server.log_path}")
        try:
            if server.invoke(body, timeout=10).status_code == 200:
                return ping, time.monotonic() - server.started
        except requests.RequestException:
            pass
        time.sleep(0.02)
    raise SystemExit(f"model server not scoring in time; see {server.log_path}")


def group_stats(pgid: int) -> dict[int, list[str]]:
    """``/proc/<pid>/stat`` fields (after the command name) of each live process in a process group."""
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            stats[int(stat.parent.name)] = fields
    return stats


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in a process group."""
    ticks = sum(int(fields[11]) + int(fields[12]) for fields in group_stats(pgid).values())
    return ticks / os.sysconf("SC_CLK_TCK")


def worker_pids(pgid: int) -> list[int]:
    """The uvicorn workers of an ``mlflow models serve`` group: its processes with no child in it.

    ``mlflow`` (the CLI) runs ``uvicorn``; with one worker that process serves, with N it is the
    supervisor of N spawned workers. Either way the servers are the leaves.
    """
    stats = group_stats(pgid)
    parents = {int(fields[1]) for fields in stats.values()}
    leaves = []
    for pid in sorted(stats):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if pid not in parents and b"resource_tracker" not in command:
            leaves.append(pid)
    return leaves


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident set size so far (``VmHWM``), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) / 1024


def held_sockets(pgid: int, port: int, skip_own: bool = False) -> dict[int, list[int]]:
    """The file descriptors of established connections to ``port`` that each process of the group holds.

    ``skip_own``: leave out connections whose client end is in this process (the bench's own idle
    keep-alive connection from ``requests``), so that the split counts the load generator's only.
    """
    entries = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            columns = line.split()
            if columns[3] == "01":  # ESTABLISHED
                local, remote = (int(c.rpartition(":")[2], 16) for c in columns[1:3])
                entries.append((local, remote, f"socket:[{columns[9]}]"))
    ours = set()
    for fd in Path("/proc/self/fd").iterdir() if skip_own else ():
        try:
            ours.add(os.readlink(fd))
        except OSError:
            continue
    our_ports = {local for local, remote, inode in entries if remote == port and inode in ours}
    inodes = {inode for local, remote, inode in entries if local == port and remote not in our_ports}
    held: dict[int, list[int]] = {}
    for pid in group_stats(pgid):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    held.setdefault(pid, []).append(int(fd.name))
            except OSError:
                continue
    return held


def connections_per_process(pgid: int, port: int, skip_own: bool = False) -> list[int]:
    """How many established connections to ``port`` each process of the group holds, most first.

    uvicorn's workers share one listening socket and each accepts greedily, so a burst of new
    connections can all land on one worker; this is the row that says so.
    """
    return sorted((len(fds) for fds in held_sockets(pgid, port, skip_own).values()), reverse=True)


def tcp_nodelay(pid: int, fd: int) -> bool:
    """Whether socket ``fd`` of process ``pid`` has TCP_NODELAY set, read through a duplicate (pidfd_getfd).

    Needs Linux >= 5.6 and ptrace rights over ``pid`` (our own child processes).
    """
    pidfd = os.pidfd_open(pid)
    try:
        duplicate = LIBC.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if duplicate < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"pidfd_getfd({pid}, {fd}): {os.strerror(errno)}")
        with socket.socket(fileno=duplicate) as sock:
            return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    finally:
        os.close(pidfd)


def nodelay_connections(pgid: int, port: int) -> tuple[int, int]:
    """(connections with TCP_NODELAY, all established connections) the group holds on ``port``."""
    flags = [tcp_nodelay(pid, fd) for pid, fds in held_sockets(pgid, port).items() for fd in fds]
    return sum(flags), len(flags)


LIBC = ctypes.CDLL(None, use_errno=True)
SYS_PIDFD_GETFD = 438  # the same number on x86_64 and arm64


def wrk_load(url: str, body_file: Path, connections: int, duration: int) -> dict:
    """wrk -t1 -c<connections> -d<duration>s cycling through the bodies of ``body_file``; numbers from post.lua."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "60s", "--latency"]
    done = subprocess.run(
        [*command, "-s", str(POST_LUA), f"{url}/invocations"],
        env={**os.environ, "BENCH_BODY_FILE": str(body_file)},
        capture_output=True,
        text=True,
        timeout=duration + 90,
    )
    found = re.search(r"^BENCH_JSON (.*)$", done.stdout, re.M)
    if done.returncode != 0 or not found:
        raise SystemExit(f"wrk failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    stats = json.loads(found.group(1))
    errors = sum(v for k, v in stats.items() if k.startswith("errors_"))
    return {
        "tool": "wrk",
        "rps": stats["requests"] / (stats["duration_us"] / 1e6),
        "p50_ms": stats["p50_us"] / 1000,
        "p99_ms": stats["p99_us"] / 1000,
        "requests": stats["requests"],
        "errors": errors,
    }


def locust_load(url: str, body_file: Path, connections: int, duration: int, out_dir: Path) -> dict:
    """The same load with locust (when wrk is not installed): the bodies of ``body_file``, no wait."""
    prefix = out_dir / "locust-bench"
    command = locust_command(url, connections, connections, f"{duration}s", prefix) + ["--stop-timeout", "5"]
    env = {**os.environ, "STRESS_MIX": "bodies", "STRESS_BODY_FILE": str(body_file), "STRESS_WAIT": "0"}
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=duration + 120)
    import csv

    rows = list(csv.DictReader(open(f"{prefix}_stats.csv", encoding="utf-8")))
    total = next(r for r in rows if r["Name"] == "Aggregated")
    if done.returncode not in (0, 1):
        raise SystemExit(f"locust failed: {done.stderr[-2000:]}")
    return {
        "tool": "locust",
        "rps": float(total["Requests/s"]),
        "p50_ms": float(total["50%"]),
        "p99_ms": float(total["99%"]),
        "requests": int(total["Request Count"]),
        "errors": int(total["Failure Count"]),
    }


@dataclass
class FormRow:
    """One line of the per-form table: one request form at one worker count."""

    workers: int
    form: str
    flights: int
    tool: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: str
    split: str
    cpu_ms: float
    target: str
    ok: bool | None
    load: str


def form_target(form, workers: int) -> tuple[str, float, float]:
    """The design's target for a single-flight form at this worker count: (text, req/s, p99 ms)."""
    if form.flights != 1:
        return "-", 0, 0
    rps = 200 if workers == 1 else 400
    return f">= {rps} req/s, p99 <= 50 ms", rps, 50


def form_markdown(rows: list[FormRow]) -> str:
    header = (
        "| workers | form | tool | requests/s | flights/s | p50 | p99 | failed | connections per worker "
        "| server CPU per request | target | met | load avg (1 min) |\n" + "|---" * 13 + "|"
    )
    lines = [header]
    for r in rows:
        met = "" if r.ok is None else ("yes" if r.ok else "**no**")
        lines.append(
            f"| {r.workers} | {r.form} | {r.tool} | {r.rps:.1f} | {r.rps * r.flights:,.0f} | {r.p50_ms:.1f} ms "
            f"| {r.p99_ms:.1f} ms | {r.errors} | {r.split} | {r.cpu_ms:.1f} ms | {r.target} | {met} | {r.load} |"
        )
    return "\n".join(lines)


def load_form(server: ServedModel, form, body_file: Path, args: argparse.Namespace, work: Path) -> FormRow:
    """``args.duration`` seconds of ``form``'s bodies at ``args.connections`` connections."""
    pgid = server.process.pid
    cpu_before = group_cpu_seconds(pgid)
    split: list[int] = []
    sampler = threading.Timer(
        min(5.0, args.duration / 2), lambda: split.extend(connections_per_process(pgid, server.port, skip_own=True))
    )
    sampler.start()
    if args.tool == "wrk" or (args.tool == "auto" and shutil.which("wrk")):
        load = wrk_load(server.url, body_file, args.connections, args.duration)
    else:
        load = locust_load(server.url, body_file, args.connections, args.duration, work)
    sampler.join()
    cpu_ms = (group_cpu_seconds(pgid) - cpu_before) * 1000 / max(1, load["requests"])
    split += [0] * (server.workers - len(split))
    target, rps, p99 = form_target(form, server.workers)
    ok = None if not rps else (load["rps"] >= rps and load["p99_ms"] <= p99 and load["errors"] == 0)
    row = FormRow(
        server.workers,
        form.label,
        form.flights,
        load["tool"],
        load["rps"],
        load["p50_ms"],
        load["p99_ms"],
        f"{load['errors']} of {load['requests']}",
        " / ".join(map(str, split)),
        cpu_ms,
        target,
        ok,
        load_average(),
    )
    print(
        f"  {server.workers} w, {form.name}: {row.rps:.1f} req/s, p50 {row.p50_ms:.1f} / p99 {row.p99_ms:.1f} ms, "
        f"failed {row.errors}, connections {row.split}, CPU {cpu_ms:.1f} ms/request",
        file=sys.stderr,
        flush=True,
    )
    return row


def time_requests(server: ServedModel, body: str, flights: int, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` requests of one body, one at a time, after one untimed."""
    timings = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        answer = server.invoke(body, timeout=120)
        timings.append(time.perf_counter() - started)
        if answer.status_code != 200 or len(answer.json()["predictions"]) != flights:
            raise SystemExit(f"the {flights:,}-flight request failed: {answer.text[:500]}")
    return timings[1:]


BATCH_TARGETS_MS = {10_000: 150, 100_000: 1500}


def bench_server(
    table: Table, form_rows: list[FormRow], local: str, rows, workers: int, args: argparse.Namespace, work: Path
) -> None:
    """Cold start, every form under load (or timed one request at a time), peak memory, at ``workers`` workers."""
    from bench.flights import FORMS, form_bodies

    forms = [f for f in FORMS if not args.forms or f.name in args.forms]
    bodies = {}
    for i, form in enumerate(forms):
        count = args.bodies if form.flights == 1 else (20 if form.flights <= 100 else 1)
        bodies[form.name] = form_bodies(rows, form, count, seed=args.seed + 1000 * i)
    first = form_bodies(rows, FORMS[0], 1, seed=args.seed)[0]

    server = ServedModel(local, work / f"serve-{workers}w.log", workers=workers, wait=False)
    prefix = f"{workers} w"
    try:
        ping, invoke = ready_seconds(server, first)
        table.add(f"{prefix}: cold start: process start -> first `/ping` 200", f"{ping:.2f} s", "<= 5 s", ping <= 5)
        table.add(f"{prefix}: cold start: process start -> first `/invocations` 200", f"{invoke:.2f} s")
        for _ in range(20 * workers):  # warm every worker before measuring
            server.invoke(first).raise_for_status()
        singles_rss = None
        for form in forms:
            if form.flights > 1 and singles_rss is None:
                singles_rss = [peak_rss_mib(pid) for pid in worker_pids(server.process.pid)]
            if form.load:
                body_file = work / f"{form.name}.jsonl"
                body_file.write_text("\n".join(bodies[form.name]) + "\n", encoding="utf-8")
                for body in bodies[form.name][:3]:  # a form the server refuses fails here, not as wrk errors
                    answer = server.invoke(body)
                    if answer.status_code != 200:
                        raise SystemExit(f"{form.label}: HTTP {answer.status_code} {answer.text[:500]}")
                form_rows.append(load_form(server, form, body_file, args, work))
            if form.flights in BATCH_TARGETS_MS:
                timings = time_requests(server, bodies[form.name][0], form.flights, args.repeats)
                wall = statistics.median(timings) * 1000
                target = BATCH_TARGETS_MS[form.flights]
                spread = f"{min(timings) * 1000:.0f} - {max(timings) * 1000:.0f}"
                table.add(
                    f"{prefix}: one request of {form.label}: wall time (median of {args.repeats}, range)",
                    f"{wall:.0f} ms ({spread} ms)",
                    f"<= {target:,} ms" if form.numbers else "-",
                    wall <= target if form.numbers else None,
                )
        peak = [peak_rss_mib(pid) for pid in worker_pids(server.process.pid)]
        singles_rss = singles_rss or peak
        table.add(
            f"{prefix}: peak RSS per worker after single flights / after every form",
            " / ".join(f"{m:.0f}" for m in singles_rss) + " MiB; " + " / ".join(f"{m:.0f}" for m in peak) + " MiB",
            "<= 375 MiB (single flights)",
            max(singles_rss) <= 375,
        )
    finally:
        server.stop()


def bench_in_process(table: Table, local: str, rows, args: argparse.Namespace) -> None:
    """MLflow's own ``invocations()`` (JSON parsing, signature enforcement, predict, JSON out) in process.

    On real flights: 1, 100 and 100,000 of them with ``Vlo-I`` as a JSON number, and one as text.
    """
    import mlflow
    from mlflow.pyfunc import scoring_server

    from bench.flights import Form, request_body, sample_rows

    model = mlflow.pyfunc.load_model(local)
    schema = model.metadata.get_input_schema()
    sample = sample_rows(rows, max(IN_PROCESS_SIZES), seed=args.seed + 9, digits_only=True)
    cases = [(size, True) for size in IN_PROCESS_SIZES] + [(1, False)]
    for size, numbers in cases:
        orient = "dataframe_split" if size > 100 else "dataframe_records"
        form = Form("in-process", size, numbers=numbers, orient=orient)
        body = request_body(sample.head(size), form)
        first = scoring_server.invocations(body, "application/json", model, schema)
        if first.status != 200:
            raise SystemExit(f"in-process invocations() of {form.label}: {first.status} {first.response[:500]}")
        repeats = max(3, min(300, 30_000 // size))
        timings = []
        cpu_started = time.process_time()
        for _ in range(repeats):
            started = time.perf_counter()
            scoring_server.invocations(body, "application/json", model, schema)
            timings.append(time.perf_counter() - started)
        cpu_ms = (time.process_time() - cpu_started) * 1000 / repeats
        wall = statistics.median(timings)
        table.add(
            f"in-process MLflow `invocations()`, {form.label}: rows/s (median wall, CPU per call)",
            f"{size / wall:,.0f} rows/s ({wall * 1000:.2f} ms, CPU {cpu_ms:.2f} ms)",
        )


def main() -> None:
    from bench.flights import FORMS

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", default="", help="default: what the pipeline registered, else Production")
    parser.add_argument("--data-uri", default=os.environ.get("DATA_URI", str(SCL_DATA_PATH)))
    parser.add_argument("--sha256", default=os.environ.get("DATA_SHA256", ""))
    parser.add_argument("--no-pipeline", action="store_true", help="skip timing etl/train/register")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[int(w) for w in os.environ.get("BENCH_WORKERS", "1 2").split()]
    )
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per form")
    parser.add_argument("--repeats", type=int, default=5, help="10,000- and 100,000-flight requests timed")
    parser.add_argument("--forms", nargs="*", default=[], choices=[f.name for f in FORMS], help="default: all")
    parser.add_argument("--bodies", type=int, default=200, help="different single-flight bodies per form")
    parser.add_argument("--seed", type=int, default=0, help="which real rows the bodies are made of")
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process pyfunc rows")
    parser.add_argument("--tool", choices=("auto", "wrk", "locust"), default="auto", help="load generator")
    parser.add_argument("--title", default="")
    parser.add_argument("--output", default=str(PROJECT_ROOT / "reports" / "bench"))
    args = parser.parse_args()

    os.environ.setdefault("MLFLOW_TRACKING_URI", EMBEDDED_STORE_URI)
    import mlflow

    from bench.flights import read_raw_flights, scorable_rows
    from skyprophet.storage import fetch

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    title = args.title or f"SkyProphet benchmark ({time.strftime('%Y-%m-%d %H:%M')})"
    table = Table(title)
    form_rows: list[FormRow] = []
    model_uri = args.model_uri
    with tempfile.TemporaryDirectory(prefix="skyprophet-bench-") as tmp:
        work = Path(tmp)
        if "://" not in args.data_uri and not Path(args.data_uri).is_file():
            raise SystemExit(f"real data not found at {args.data_uri}; set DATA_URI (a path, file:// or gs://)")
        if not args.no_pipeline or (not model_uri and not production_exists()):
            run_pipeline(table, args.data_uri, args.sha256, out)
            model_uri = model_uri or newest_version_uri()
        model_uri = model_uri or f"models:/{MODEL_NAME}/Production"
        table.title += f" - {model_uri}"
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(work / "model"))
        # The bodies are real rows, read at run time into the temporary folder and never written elsewhere.
        raw = read_raw_flights(fetch(args.data_uri, work / "data.csv", args.sha256))
        rows = scorable_rows(raw, load_spec(local))
        table.title += f" - bodies from {len(rows):,} scorable of {len(raw):,} rows of {args.data_uri}"
        table.title += f", seed {args.seed}"
        for workers in args.workers:
            bench_server(table, form_rows, local, rows, workers, args, work)
        if not args.no_in_process:
            bench_in_process(table, local, rows, args)
    text = f"{table.markdown()}\n\n#### Per request form ({args.connections} connections, {args.duration} s each)\n\n"
    text += form_markdown(form_rows)
    print(text)
    (out / "bench.md").write_text(text + "\n", encoding="utf-8")
    report = {"rows": [r.__dict__ for r in table.rows], "forms": [r.__dict__ for r in form_rows]}
    (out / "bench.json").write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
