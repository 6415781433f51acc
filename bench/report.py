"""What the planner's report adds to ``score``: seconds per part on the real schedule and on 5,000,000 flights.

The real file is scored once by ``python -m steps.score`` (the Production model of
``MLFLOW_TRACKING_URI``); its output is then resampled with replacement to each size, dates shifted
by whole weeks (0-103, as ``bench/score.py``), into temporary Parquet files deleted afterwards
(never committed). ``skyprophet.batch.report.build_report`` runs on each: the table gives the seconds of the
one read of the output (aggregate), of the model's ``explain`` on the riskiest flights, of drawing
the page, the total (wall) and the CPU seconds of this process (all threads), and the page's size.
The machine is shared: the load average is printed; CPU seconds depend less on it than wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from skyprophet.batch import report
from skyprophet.config import PROJECT_ROOT, SCL_DATA_PATH
from skyprophet.ops.processes import process_env


def resample(scores: Path, n: int, path: Path, seed: int = 0) -> None:
    """``n`` rows of ``scores`` drawn with replacement, dates shifted by whole weeks, as Parquet."""
    frame = pd.read_parquet(scores)
    rng = np.random.default_rng(seed)
    rows = frame.iloc[rng.integers(0, len(frame), n)].reset_index(drop=True)
    times = pd.to_datetime(rows["Fecha-I"].str.strip(), format="%Y-%m-%d %H:%M:%S")
    shifted = times + pd.to_timedelta(7 * rng.integers(0, 104, n), unit="D")
    rows["Fecha-I"] = shifted.dt.strftime("%Y-%m-%d %H:%M:%S")
    rows.to_parquet(path, index=False, row_group_size=100_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-uri", default=str(SCL_DATA_PATH), help="the real flights file, scored once")
    parser.add_argument("--sizes", default="5000000", help="comma-separated resampled sizes (the real file always)")
    parser.add_argument("--model-uri", default="models:/flight-delay@production")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="skyprophet-bench-report-") as tmp:
        folder = Path(tmp)
        scores = folder / "real.parquet"
        done = subprocess.run(
            [sys.executable, "-m", "steps.score", "--data", args.data_uri, "--output", str(scores)]
            + ["--model-uri", args.model_uri],
            cwd=PROJECT_ROOT,
            env=process_env({}),
            capture_output=True,
            text=True,
        )
        if done.returncode:
            sys.exit(f"score failed:\n{done.stderr[-3000:]}")
        from skyprophet.batch.model import resolve_model

        uri, name, version = resolve_model(args.model_uri)
        about = report.Provenance(data=args.data_uri, model_uri=uri, model_name=name, model_version=version)
        cases = [("real file", scores)]
        for n in (int(s) for s in args.sizes.split(",") if s.strip()):
            path = folder / f"resampled-{n}.parquet"
            resample(scores, n, path)
            cases.append((f"resampled {n:,}", path))
        print(
            f"{'schedule':<22}{'flights':>11}{'aggregate s':>13}{'explain s':>11}{'draw s':>9}{'total s':>9}"
            f"{'cpu s':>8}{'page MB':>9}{'load 1m':>9}"
        )
        for label, path in cases:
            page = folder / f"{path.stem}.report.html"
            cpu = time.process_time()
            seconds = report.build_report(path, page, about)
            cpu = time.process_time() - cpu
            flights = pd.read_parquet(path, columns=["delay"]).shape[0]
            print(
                f"{label:<22}{flights:>11,}{seconds['aggregate']:>13.2f}{seconds['explain']:>11.2f}"
                f"{seconds['render']:>9.2f}{seconds['total']:>9.2f}{cpu:>8.2f}{page.stat().st_size / 1e6:>9.2f}"
                f"{os.getloadavg()[0]:>9.2f}"
            )


if __name__ == "__main__":
    main()
