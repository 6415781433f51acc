"""Batch scoring benchmark: 1,000,000 flights, Parquet in and out, each engine (``make bench-score``).

The flights are the real file's scheduled columns, resampled with replacement and shifted by
whole weeks (0-103), built at run time into a temporary Parquet file that is deleted afterwards
(never committed). Each engine runs ``python -m steps.score`` as a child process on the
Production model; the table gives wall time from process start to exit, flights/s and the peak
resident memory of the whole process tree (Spark's JVM and Python workers included), sampled
every 0.1 s, and the CPU seconds the tree used (user + system, of the processes reaped). The
machine is shared: the 1-minute load average is printed beside each row.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from pyfunc.schema import OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from steps.config import PROJECT_ROOT, SCL_DATA_PATH
from steps.processes import process_env

TARGET_FLIGHTS_PER_SECOND = 150_000
TARGET_PEAK_GIB = 1.5
SPARK_WITHIN = 3.0
GIB = 1 << 30


def build_flights(source: Path, n: int, path: Path, seed: int = 0) -> None:
    """``n`` flights resampled from ``source``'s rows, dates shifted by whole weeks, as Parquet."""
    raw = pd.read_csv(source, dtype=str, keep_default_na=False, usecols=[*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS])
    rng = np.random.default_rng(seed)
    flights = raw.iloc[rng.integers(0, len(raw), n)].reset_index(drop=True)
    times = pd.to_datetime(flights["Fecha-I"], format="%Y-%m-%d %H:%M:%S")
    shifted = times + pd.to_timedelta(7 * rng.integers(0, 104, n), unit="D")
    flights["Fecha-I"] = shifted.dt.strftime("%Y-%m-%d %H:%M:%S")
    flights.to_parquet(path, index=False, row_group_size=100_000)


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and all its descendants."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_engine(engine: str, data: Path, output: Path, master: str, extra: list[str]) -> dict:
    """Score ``data`` with ``engine`` in a child process; wall seconds, peak tree RSS, load, exit code."""
    command = [sys.executable, "-m", "steps.score", "--data", str(data), "--output", str(output)]
    command += ["--engine", engine, "--spark-master", master, *extra]
    log = output.with_suffix(".log")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as handle:
        child = subprocess.Popen(command, cwd=PROJECT_ROOT, env=process_env(), stdout=handle, stderr=subprocess.STDOUT)
        watched = psutil.Process(child.pid)
        peak = 0
        while child.poll() is None:
            peak = max(peak, tree_rss(watched))
            time.sleep(0.1)
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    load = os.getloadavg()[0]
    return {"seconds": seconds, "cpu": cpu, "peak": peak, "load": load, "code": child.returncode, "log": log}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-uri", default=str(SCL_DATA_PATH), help="the real flights file to resample")
    parser.add_argument("--flights", type=int, default=1_000_000)
    parser.add_argument("--engines", default="pandas,spark")
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--keep", help="folder to keep the outputs and logs in (default: deleted)")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="skyprophet-bench-score-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        data = Path(tmp) / "flights.parquet"
        started = time.monotonic()
        build_flights(Path(args.data_uri), args.flights, data)
        print(f"built {args.flights:,} flights from {args.data_uri} in {time.monotonic() - started:.1f} s -> {data}")
        results = {}
        for engine in args.engines.split(","):
            output = folder / f"scores-{engine}.parquet"
            for leftover in (output, output.with_name(f"scores-{engine}.rejects.parquet")):
                leftover.unlink(missing_ok=True)
            print(f"scoring with {engine} ...", flush=True)
            results[engine] = result = run_engine(engine, data, output, args.spark_master, extra)
            if result["code"] != 0:
                print(f"{engine} failed ({result['code']}); log:\n{result['log'].read_text()[-3000:]}")
        print()
        print("| engine | flights | wall s | flights/s | CPU s (tree) | peak RSS (tree) | target | load (1 min) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
        for engine, r in results.items():
            rate = args.flights / r["seconds"]
            if engine == "pandas":
                ok = rate >= TARGET_FLIGHTS_PER_SECOND and r["peak"] <= TARGET_PEAK_GIB * GIB
                target = f">= {TARGET_FLIGHTS_PER_SECOND:,}/s, <= {TARGET_PEAK_GIB} GiB: {'ok' if ok else 'MISSED'}"
            else:
                base = results.get("pandas")
                ratio = r["seconds"] / base["seconds"] if base else float("nan")
                ok = ratio <= SPARK_WITHIN
                target = f"within {SPARK_WITHIN:g}x of pandas: {ratio:.2f}x {'ok' if ok else 'MISSED'}"
            failed = "" if r["code"] == 0 else " (FAILED)"
            print(
                f"| {engine}{failed} | {args.flights:,} | {r['seconds']:.1f} | {rate:,.0f} | {r['cpu']:.1f} | "
                f"{r['peak'] / GIB:.2f} GiB | {target} | {r['load']:.1f} |"
            )


if __name__ == "__main__":
    main()
