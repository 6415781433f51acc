"""The delay-rate correction's cadence, computed offline: realized ECE per month and versions registered.

Which shift serves each day decides the replay's realized ECE, so a cadence can be judged without
registering anything: for each of the file's last ``months`` months, the booster the replay serves
(the default recipe fitted on every flight before the month, as register's refit does) scores the
month's flights once; then the correction rule of ``skyprophet.lifecycle.recalibration`` (the same
window, ``solve_shift`` and tolerance test) runs day by day on those probabilities. Prints one row per
cadence: each month's ECE, the pooled ECE and ROC AUC, and how many versions the corrections register
(each one a gate, a served copy and the acceptance checks in the replay).

    python -m bench.cadence --data-uri ../shared/datasets/scl-2017/data.csv \
        --cadence 1,6,0.02 --cadence 1,10,0.04,0,2.5

A cadence is ``every,days,tolerance[,z[,half_life]]``: checked every ``every`` days on the last
``days`` flown days (weighted by recency with ``half_life``, as recalibrate does), a version when the
serving mean is more than ``tolerance`` off the realized rate and, with ``z``, also more than ``z``
standard errors of that rate (the noise of the window's effective number of flights).
The month's probabilities are cached under ``--cache`` (one Parquet file per month).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pyfunc.schema import SCHEDULED_TIME, TARGET, parse_scheduled_time
from skyprophet import config
from skyprophet.lifecycle.recalibration import recency_weights, shifted, solve_shift
from skyprophet.monitoring import realized
from skyprophet.science.fit import fit_model
from skyprophet.science.raw_flights import delay_target, read_raw, reject_reasons
from skyprophet.science.recipe import Recipe

REPLAY = config.DEFAULTS["replay"]


@dataclass(frozen=True)
class Cadence:
    """When a correction is checked and when it registers a version."""

    every: int
    days: int
    tolerance: float
    z: float = 0.0
    half_life: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Cadence:
        parts = text.split(",")
        if len(parts) not in (3, 4, 5):
            raise argparse.ArgumentTypeError(f"--cadence {text!r}: every,days,tolerance[,z[,half_life]]")
        rest = [float(x) for x in parts[3:]] + [0.0, 0.0]
        return cls(int(parts[0]), int(parts[1]), float(parts[2]), rest[0], rest[1])

    def label(self) -> str:
        return (
            f"{self.every} d / {self.days} d / {self.tolerance}"
            + (f" / z {self.z}" if self.z else "")
            + (f" / half-life {self.half_life} d" if self.half_life else "")
        )


def month_scores(flights: pd.DataFrame, times: pd.Series, month: pd.Period, cache: Path) -> pd.DataFrame:
    """The month's flights: time, outcome and the uncorrected probability of the month's booster (cached)."""
    path = cache / f"{month}.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    start = month.to_timestamp()
    recipe = Recipe.of(n_estimators=REPLAY["n_estimators"])
    fitted, _ = fit_model(flights[times < start].reset_index(drop=True), recipe)
    in_month = (times.dt.to_period("M") == month).to_numpy()
    scored = pd.DataFrame(
        {
            "time": times[in_month].to_numpy(),
            "y": flights.loc[in_month, TARGET].to_numpy(),
            "p0": fitted.scores(flights[in_month]),
        }
    )
    cache.mkdir(parents=True, exist_ok=True)
    scored.to_parquet(path, index=False)
    return scored


def replay_month(scored: pd.DataFrame, cadence: Cadence, min_flights: int) -> tuple[np.ndarray, int]:
    """Each flight's probability under the cadence's serving shift, and the corrections registered."""
    known = scored[~scored["p0"].isna()].reset_index(drop=True)
    days = known["time"].dt.normalize()
    shift, corrections = 0.0, 0
    p = np.empty(len(known))
    for index, day in enumerate(sorted(days.unique())):
        if index and not index % cadence.every:
            window = ((known["time"] >= day - pd.Timedelta(days=cadence.days)) & (known["time"] < day)).to_numpy()
            y, p0 = known.loc[window, "y"].to_numpy(), known.loc[window, "p0"].to_numpy()
            if len(y) >= min_flights:
                w = recency_weights(known.loc[window, "time"], cadence.half_life)
                w = w / w.sum()
                rate = float(w @ y)
                mean_before = float(w @ shifted(p0, shift)) if shift else float(w @ p0)
                noise = cadence.z * np.sqrt(rate * (1 - rate) * (w @ w))
                if abs(mean_before - rate) > max(cadence.tolerance, noise):
                    shift, corrections = solve_shift(p0, rate, w), corrections + 1
        today = (days == day).to_numpy()
        p[today] = shifted(known.loc[today, "p0"].to_numpy(), shift) if shift else known.loc[today, "p0"].to_numpy()
    return p, corrections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-uri", default=config.default_data_uri())
    parser.add_argument("--months", type=int, default=REPLAY["months"])
    parser.add_argument("--min-flights", type=int, default=REPLAY["min_flights"])
    parser.add_argument("--cache", default=str(config.PROJECT_ROOT / "reports" / "cadence"))
    parser.add_argument("--cadence", type=Cadence.parse, action="append", default=[])
    args = parser.parse_args(argv)
    cadences = args.cadence or [
        Cadence(
            REPLAY["correction_every"],
            REPLAY["correction_days"],
            REPLAY["tolerance"],
            half_life=REPLAY["correction_half_life"],
        )
    ]
    raw = read_raw(args.data_uri)
    flights = raw[reject_reasons(raw) == ""].reset_index(drop=True)
    flights[TARGET] = delay_target(flights)
    times = parse_scheduled_time(flights[SCHEDULED_TIME])
    months = sorted(times.dt.to_period("M").unique())[-args.months :]
    scored = {month: month_scores(flights, times, month, Path(args.cache)) for month in months}
    header = ["cadence (every / days / tolerance)", *[str(m) for m in months], "pooled ECE", "mean ROC AUC", "versions"]
    out = sys.stdout.write
    out("| " + " | ".join(header) + " |\n|" + " --- |" * len(header) + "\n")
    for cadence in cadences:
        eces, aucs, ys, ps, versions = [], [], [], [], 0
        for month in months:
            frame = scored[month]
            p, corrections = replay_month(frame, cadence, args.min_flights)
            y = frame.loc[~frame["p0"].isna(), "y"].to_numpy()
            figures = realized.figures(y, p)
            eces.append(figures["ece"])
            aucs.append(figures["roc_auc"])
            ys.append(y)
            ps.append(p)
            versions += corrections
        pooled = realized.figures(np.concatenate(ys), np.concatenate(ps))
        cells = [cadence.label(), *[f"{e:.4f}" for e in eces], f"{pooled['ece']:.4f}", f"{np.mean(aucs):.4f}"]
        out("| " + " | ".join([*cells, str(versions)]) + " |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
