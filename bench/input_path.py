"""The flight input path in process (``clean_columns``, then ``build_features``), A/B against git revisions.

``python -m bench.input_path --data-uri data.csv --baseline a57d81c`` extracts each baseline's
``pyfunc/`` with ``git archive``, resamples ``--flights`` real rows (every value as text, as
``score`` reads a CSV), then alternates: each round runs every side, in turn order rotated every
round, each in a fresh interpreter on the same rows, and prints per side the median (min-max) over
rounds of validation and features per batch (the first call on the batch, and the median of two
more: a long-running scorer's steady state, its memory already mapped) and of one flight through
both (median of 2,000 calls after a warm-up).

With a model (``--model-uri``, default the registry's ``production``; its booster and spec, with
each side's own ``pyfunc/`` copied into the model's code, as a version logged from that side would
be), each side also times, on one real flight sent as MLflow's scoring server receives it
(``dataframe_records``, ``Vlo-I`` a JSON number): the model's own ``predict`` on the DataFrame
MLflow builds from the body, and MLflow's whole ``invocations()`` (JSON parsing, ``predict``, JSON
out), whose difference is MLflow's own share; and ``invocations()`` of 10,000 real flights. The
collector is frozen after loading, as in ``mlflow models serve`` (``SKYPROPHET_GC_FREEZE=1``).
The machine is shared: the 1-minute load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def child(flights_path: str, model_dir: str = "") -> None:
    """In a fresh interpreter whose ``pyfunc`` is the side's: time the stages, print JSON."""
    import pandas as pd

    from pyfunc.coded_spec import CodedSpec
    from pyfunc.features import build_features, fit_feature_spec
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
    again = []
    for _ in range(2):  # the same batch again: a long-running scorer's steady state (memory already mapped)
        started = time.perf_counter()
        build_features(clean_columns(frame), spec, tables)
        again.append(time.perf_counter() - started)
    one = frame.head(1)
    result = {"validation": validation, "features": features, "again": statistics.median(again)}
    result["one_flight"] = median_call(lambda: build_features(clean_columns(one), spec, tables))
    if model_dir:
        result.update(model_timings(frame, model_dir))
    print(json.dumps(result))


def median_call(call, calls: int = 2000, warm: int = 200) -> float:
    """Median seconds of ``calls`` calls after ``warm`` untimed ones."""
    for _ in range(warm):
        call()
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def model_timings(frame, model_dir: str) -> dict:
    """One real flight through the model's ``predict`` and through MLflow's ``invocations()``; 10,000 flights too."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    def body(rows) -> str:
        records = rows.to_dict(orient="records")
        for record in records:  # the flight number as a JSON number where it is digits (bench.flights' raw form)
            if str(record["Vlo-I"]).isdigit():
                record["Vlo-I"] = int(record["Vlo-I"])
        return json.dumps({"dataframe_records": records})

    model = mlflow.pyfunc.load_model(model_dir)
    python_model = model.unwrap_python_model()
    digits = frame[frame["Vlo-I"].str.isdigit()]
    one_body, batch_body = body(digits.head(1)), body(digits.iloc[1000:11000])
    one = scoring_server.infer_and_parse_data(json.loads(one_body))

    def invoke(data: str) -> None:
        answer = scoring_server.invocations(data, "application/json", model, None)
        if answer.status != 200:
            raise SystemExit(f"invocations(): {answer.status} {answer.response[:300]}")

    return {
        "predict": median_call(lambda: python_model.predict(None, one)),
        "invocations": median_call(lambda: invoke(one_body)),
        "invocations_10k": median_call(lambda: invoke(batch_body), calls=15, warm=3),
    }


def side_model(model_dir: Path, root: Path, target: Path) -> Path:
    """The model's files with ``root``'s ``pyfunc/`` as its code (what a version logged from that code carries)."""
    shutil.copytree(model_dir, target)
    shutil.rmtree(target / "code" / "pyfunc")
    shutil.copytree(root / "pyfunc", target / "code" / "pyfunc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "pyfunc" / "model.py", target / "model.py")
    return target


def run_side(root: Path, flights_path: Path, model_dir: Path | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root), "SKYPROPHET_GC_FREEZE": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(flights_path)]
    done = subprocess.run(
        command + (["--child-model", str(model_dir)] if model_dir else []),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{root}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float], scale: float, unit: str) -> str:
    scaled = [v * scale for v in values]
    return f"{statistics.median(scaled):.3f} {unit} ({min(scaled):.3f}-{max(scaled):.3f})"


def spread_of(runs: list[dict], key: str, scale: float, unit: str) -> str:
    values = [r[key] for r in runs if key in r]
    return spread(values, scale, unit) if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-uri", default="/work/shared/datasets/scl-2017/data.csv")
    parser.add_argument("--baseline", nargs="+", default=["f4a4204"], help="git revisions whose pyfunc/ are sides")
    parser.add_argument("--flights", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-uri", default="models:/flight-delay@production", help='"" for no model timings')
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-model", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.child_model)
        return
    import numpy as np
    import pandas as pd

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        sides = {}
        for revision in args.baseline:
            base = Path(tmp) / f"baseline-{revision}"
            base.mkdir()
            archive = subprocess.run(
                ["git", "archive", revision, "pyfunc"], cwd=PROJECT_ROOT, capture_output=True, check=True
            )
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
            sides[f"baseline {revision}"] = base
        sides["working copy"] = PROJECT_ROOT
        models: dict[str, Path | None] = dict.fromkeys(sides)
        if args.model_uri:
            import mlflow

            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=args.model_uri, dst_path=f"{tmp}/model"))
            models = {
                name: side_model(local, root, Path(tmp) / f"model-{i}") for i, (name, root) in enumerate(sides.items())
            }
        raw = pd.read_csv(args.data_uri, dtype=str, keep_default_na=False)
        rows = np.random.default_rng(0).choice(len(raw), args.flights, replace=True)
        flights_path = Path(tmp) / "flights.parquet"
        raw.iloc[rows].reset_index(drop=True).to_parquet(flights_path)
        del raw
        results: dict[str, list[dict]] = {name: [] for name in sides}
        for round_number in range(args.rounds):
            names = list(sides)
            order = names[round_number % len(names) :] + names[: round_number % len(names)]
            for name in order:
                results[name].append(run_side(sides[name], flights_path, models[name]))
    per_million = 1_000_000 / args.flights
    print(
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"{args.flights:,} real flights (resampled), {args.rounds} rounds, median (min-max)"
    )
    print("| side | validation per 1M flights | features per 1M | both | both, again | one flight, both stages |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, runs in results.items():
        for run in runs:
            run["both"] = run["validation"] + run["features"]
        print(
            f"| {name} | {spread_of(runs, 'validation', per_million, 's')} "
            f"| {spread_of(runs, 'features', per_million, 's')} | {spread_of(runs, 'both', per_million, 's')} "
            f"| {spread_of(runs, 'again', per_million, 's')} "
            f"| {spread_of(runs, 'one_flight', 1e3, 'ms')} |"
        )
    if args.model_uri:
        print(f"\nOne real flight as MLflow receives it ({args.model_uri}; collector frozen as in the server)")
        print("| side | model `predict` | MLflow `invocations()` | MLflow's share | 10,000 flights `invocations()` |")
        print("| --- | --- | --- | --- | --- |")
        for name, runs in results.items():
            for run in runs:
                run["mlflow"] = run["invocations"] - run["predict"]
            print(
                f"| {name} | {spread_of(runs, 'predict', 1e3, 'ms')} | {spread_of(runs, 'invocations', 1e3, 'ms')} "
                f"| {spread_of(runs, 'mlflow', 1e3, 'ms')} | {spread_of(runs, 'invocations_10k', 1e3, 'ms')} |"
            )


if __name__ == "__main__":
    main()
