"""The flight input path in process (``clean_columns``, then ``build_features``), A/B against a git revision.

``python -m bench.input_path --data-uri data.csv --baseline f4a4204`` extracts the baseline's
``pyfunc/`` with ``git archive``, resamples ``--flights`` real rows (every value as text, as
``score`` reads a CSV), then alternates: each round runs the baseline and the working copy, in
turn order swapped every round, each in a fresh interpreter on the same rows, and prints per side
the median (min-max) over rounds of validation and features per batch and of one flight through
both (median of 2,000 calls after a warm-up). The machine is shared: the 1-minute load average is
printed beside the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def child(flights_path: str) -> None:
    """In a fresh interpreter whose ``pyfunc`` is the side's: time the two stages, print JSON."""
    import pandas as pd

    from pyfunc.features import CodedSpec, build_features, fit_feature_spec
    from pyfunc.schema import clean_columns, clean_flights

    frame = pd.read_parquet(flights_path)
    spec = fit_feature_spec(clean_flights(frame.head(50_000)))
    tables = CodedSpec.of(spec)
    clean_columns(frame.head(1000))  # first call imports and warms what it needs
    started = time.perf_counter()
    clean = clean_columns(frame)
    validation = time.perf_counter() - started
    started = time.perf_counter()
    build_features(clean, spec, tables)
    features = time.perf_counter() - started
    one = frame.head(1)
    for _ in range(200):
        build_features(clean_columns(one), spec, tables)
    calls = []
    for _ in range(2000):
        started = time.perf_counter()
        build_features(clean_columns(one), spec, tables)
        calls.append(time.perf_counter() - started)
    print(json.dumps({"validation": validation, "features": features, "one_flight": statistics.median(calls)}))


def run_side(root: Path, flights_path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(flights_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float], scale: float, unit: str) -> str:
    scaled = [v * scale for v in values]
    return f"{statistics.median(scaled):.3f} {unit} ({min(scaled):.3f}-{max(scaled):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-uri", default="/work/shared/datasets/scl-2017/data.csv")
    parser.add_argument("--baseline", default="f4a4204", help="git revision whose pyfunc/ is side A")
    parser.add_argument("--flights", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    import numpy as np
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        base.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.baseline, "pyfunc"], cwd=PROJECT_ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
        raw = pd.read_csv(args.data_uri, dtype=str, keep_default_na=False)
        rows = np.random.default_rng(0).choice(len(raw), args.flights, replace=True)
        flights_path = Path(tmp) / "flights.parquet"
        raw.iloc[rows].reset_index(drop=True).to_parquet(flights_path)
        sides = {f"baseline {args.baseline}": base, "working copy": PROJECT_ROOT}
        results: dict[str, list[dict]] = {name: [] for name in sides}
        for round_number in range(args.rounds):
            order = list(sides) if round_number % 2 == 0 else list(reversed(sides))
            for name in order:
                results[name].append(run_side(sides[name], flights_path))
    per_million = 1_000_000 / args.flights
    print(f"load average {os.getloadavg()[0]:.2f}; {args.flights:,} real flights (resampled), {args.rounds} rounds")
    print("| side | validation per 1M flights | features per 1M flights | one flight, both stages |")
    print("| --- | --- | --- | --- |")
    for name, runs in results.items():
        print(
            f"| {name} | {spread([r['validation'] for r in runs], per_million, 's')} "
            f"| {spread([r['features'] for r in runs], per_million, 's')} "
            f"| {spread([r['one_flight'] for r in runs], 1e3, 'ms')} |"
        )


if __name__ == "__main__":
    main()
