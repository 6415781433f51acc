"""replay: the file's last months operated one after the other through the real pipeline.

For each of the last ``months`` calendar months: the pipeline (``lifecycle.pipeline``: etl with the month
before as the gate's holdout, train, register onto ``staging``, promote's acceptance checks on a
served model, then ``production``) on every flight before the month; then the month's flights fly
day by day: every ``correction_every`` days the delay-rate correction (``lifecycle.recalibration``) is
solved on the last ``correction_days`` flown days and, when the serving mean is more than
``tolerance`` off, goes through register and promote as a new version. At the month's end
``monitoring.watch`` gives the drift verdict, and realized quality is measured with the version that
was Production when each flight flew (``skyprophet.monitoring.realized``).

The replay works on its own registered model (``model_name``, default ``flight-delay-replay``)
and datasets folder (``<report_dir>/datasets``), so it never moves ``flight-delay``. It ends with
one table (``<report_dir>/replay.md``, and ``replay/table.json`` on the run) and the run's metrics
``realized_roc_auc`` and ``realized_ece`` with the month as step (201707), plus the pooled figures.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from pyfunc.schema import SCHEDULED_TIME, parse_scheduled_time
from skyprophet import config
from skyprophet import params as step_params
from skyprophet.lifecycle.acceptance_record import AcceptanceFailed
from skyprophet.lifecycle.pipeline import run_pipeline
from skyprophet.lifecycle.recalibration import detached, recalibrate
from skyprophet.mlops import tracking
from skyprophet.monitoring import realized
from skyprophet.monitoring.watch import watch
from skyprophet.params import LOAD_CHECK, MonitorParams, RecalibrateParams, ReplayParams
from skyprophet.science.raw_flights import read_raw, reject_reasons
from skyprophet.storage import fetch, sha256_of

logger = logging.getLogger("skyprophet.replay")
# What the replay run logs as its parameters.
LOGGED = (
    "data_uri",
    "months",
    "model_name",
    "n_estimators",
    "correction_every",
    "correction_days",
    "correction_half_life",
    "min_flights",
    "tolerance",
    "duration",
)
# The targets of issue 24 on SCL 2017, reported (tag replay.targets) and checked by nobody but the reader.
TARGET_MONTH_ECE, TARGET_POOLED_ECE, TARGET_MEAN_ROC_AUC = 0.05, 0.02, 0.66


@dataclass
class ReplayResult:
    """The table (one row per month), the pooled figures and where the report is."""

    table: pd.DataFrame
    pooled: dict[str, float]
    report_path: str
    minutes: float


def month_step(month: pd.Period) -> int:
    """The metric step of a month: 201707."""
    return month.year * 100 + month.month


def write_csv(frame: pd.DataFrame, path: Path) -> str:
    """The raw rows as a CSV file the steps read; its path."""
    frame.to_csv(path, index=False, lineterminator="\n")
    return str(path)


def retrain(prior: str, model_name: str, n_estimators: int, load: dict) -> dict[str, str]:
    """The pipeline on the flights before the month (the month before them is the gate's holdout)."""
    # The replay wrote this file itself from the checked one: its own digest, so etl checks it.
    etl_params = {**config.DEFAULTS["etl"], "data_uri": prior, "sha256": sha256_of(prior), "holdout_months": 1}
    train_params = {k: v for k, v in config.DEFAULTS["train"].items() if k != "processed_uri"}
    train_params["n_estimators"] = n_estimators
    register_params = {"model_name": model_name, "promote": "auto"}
    promote_params = {**load, "workers": 1, "model_name": model_name}
    return run_pipeline(etl_params, train_params, register_params, promote_params)


def format_table(table: pd.DataFrame) -> str:
    """The replay table as Markdown."""
    lines = [
        "| month | version serving | gate decision | realized ROC AUC | realized ECE | delay rate | mean predicted "
        "| corrections applied | drift verdict (adversarial AUC) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.month} | {r.versions} | {r.gate_decision} | {r.roc_auc:.4f} | {r.ece:.4f} | {r.base_rate:.4f} | "
            f"{r.mean_predicted:.4f} | {r.corrections} | {r.drift} |"
        )
    return "\n".join(lines)


def run(params: ReplayParams = ReplayParams()) -> ReplayResult:
    """Replay the last ``months`` months; the table and the pooled realized figures."""
    months, correction_every, model_name = params.months, params.correction_every, params.model_name
    if months < 1 or correction_every < 1:
        raise ValueError(f"months ({months}) and correction_every ({correction_every}) must be at least 1")
    started = time.monotonic()
    data_uri = params.data_uri or config.default_data_uri()
    folder = Path(params.report_dir) if params.report_dir else config.PROJECT_ROOT / "reports" / "replay"
    work = folder / "work"
    work.mkdir(parents=True, exist_ok=True)
    raw = read_raw(str(fetch(data_uri, work / "data.csv", params.sha256)))
    flights = raw[reject_reasons(raw) == ""].reset_index(drop=True)
    times = parse_scheduled_time(flights[SCHEDULED_TIME])
    month_of = times.dt.to_period("M")
    all_months = sorted(month_of.unique())
    if len(all_months) < months + 2:
        raise ValueError(
            f"{data_uri} spans {len(all_months)} months: the replay of {months} needs two more before them "
            "(one to train on, one for the gate's holdout)"
        )
    load = {name: getattr(params, name) for name in LOAD_CHECK}
    rows, pooled_y, pooled_p = [], [], []
    saved_datasets = os.environ.get("SKYPROPHET_DATASETS_DIR")
    os.environ["SKYPROPHET_DATASETS_DIR"] = str(folder / "datasets")
    try:
        with detached():
            for month in all_months[-months:]:
                start = month.to_timestamp()
                logger.info("replay %s: pipeline on the flights before it", month)
                ids = retrain(
                    write_csv(flights[times < start], work / "prior.csv"), model_name, params.n_estimators, load
                )
                corrections, refused, shifts = 0, 0, []
                days = sorted(times[month_of == month].dt.normalize().unique())
                for index, day in enumerate(days):
                    if index == 0 or index % correction_every:
                        continue
                    flown = (times >= day - pd.Timedelta(days=params.correction_days)) & (times < day)
                    try:
                        result = recalibrate(
                            RecalibrateParams(
                                data=write_csv(flights[flown], work / "flown.csv"),
                                model_name=model_name,
                                days=params.correction_days,
                                half_life=params.correction_half_life,
                                min_flights=params.min_flights,
                                tolerance=params.tolerance,
                                promote="auto",
                                workers=1,
                                **load,
                            )
                        )
                    except AcceptanceFailed as err:  # as in operation: Production stays, the month goes on
                        logger.warning("replay %s: correction refused: %s", day.date(), err)
                        refused += 1
                        continue
                    if result.version and result.promoted:
                        corrections += 1
                        shifts.append(result.shift)
                logger.info("replay %s: the month has flown (%d corrections); monitor", month, corrections)
                month_csv = write_csv(flights[month_of == month], work / f"month-{month}.csv")
                watched = watch(
                    MonitorParams(
                        data=month_csv,
                        model_name=model_name,
                        cv_folds=params.drift_cv_folds,
                        max_rows=params.drift_max_rows,
                        report_dir=str(folder / f"monitor-{month}"),
                    )
                )
                client = mlflow.MlflowClient()
                scored = realized.realized_scores(client, model_name, flights[month_of == month].reset_index(drop=True))
                figures = realized.figures(scored["y"], scored["p"])
                pooled_y.append(scored["y"].to_numpy())
                pooled_p.append(scored["p"].to_numpy())
                served = scored["version"].value_counts().sort_index(key=lambda v: v.astype(int))
                rows.append(
                    {
                        "month": str(month),
                        "step": month_step(month),
                        "versions": ", ".join(f"v{v} ({n})" for v, n in served.items())
                        if len(served) <= 3
                        else f"v{served.index[0]} to v{served.index[-1]} ({len(served)} versions)",
                        "gate_decision": f"v{ids['registered_version']} {ids['gate_decision']}"
                        + ("" if ids["promoted"] == "True" else " (stayed in Staging)"),
                        **figures,
                        "corrections": f"{corrections}"
                        + (f" (shift {min(shifts):+.2f} to {max(shifts):+.2f})" if shifts else "")
                        + (f", {refused} refused by acceptance" if refused else ""),
                        "drift": f"{'drift' if watched.drift else 'no drift'} ({watched.roc_auc:.3f})",
                        "minutes": (time.monotonic() - started) / 60,
                    }
                )
                logger.info("replay %s: %s", month, rows[-1])
    finally:
        if saved_datasets is None:
            os.environ.pop("SKYPROPHET_DATASETS_DIR", None)
        else:
            os.environ["SKYPROPHET_DATASETS_DIR"] = saved_datasets
    table = pd.DataFrame(rows)
    pooled = realized.figures(np.concatenate(pooled_y), np.concatenate(pooled_p))
    pooled["mean_roc_auc"] = float(table["roc_auc"].mean())
    minutes = (time.monotonic() - started) / 60
    met = (
        bool((table["ece"] <= TARGET_MONTH_ECE).all())
        and pooled["ece"] <= TARGET_POOLED_ECE
        and pooled["mean_roc_auc"] >= TARGET_MEAN_ROC_AUC
    )
    text = "\n".join(
        [
            f"# Replay of {data_uri}: the last {months} months ({minutes:.1f} minutes)",
            "",
            format_table(table),
            "",
            f"Pooled: ROC AUC {pooled['roc_auc']:.4f}, ECE {pooled['ece']:.4f} over {int(pooled['flights'])} flights; "
            f"mean monthly ROC AUC {pooled['mean_roc_auc']:.4f}. Targets (every month ECE <= {TARGET_MONTH_ECE}, "
            f"pooled <= {TARGET_POOLED_ECE}, mean ROC AUC >= {TARGET_MEAN_ROC_AUC}): {'met' if met else 'NOT met'}.",
            "",
        ]
    )
    report = folder / "replay.md"
    report.write_text(text, encoding="utf-8")
    with tracking.step_run("replay"):
        tracking.log_step_params(params, only=LOGGED, data_uri=data_uri)
        for row in rows:
            for name in ("roc_auc", "ece", "pr_auc", "base_rate", "mean_predicted"):
                if not np.isnan(row[name]):
                    mlflow.log_metric(f"realized_{name}", row[name], step=row["step"])
        mlflow.log_metrics({f"pooled_realized_{k}": v for k, v in pooled.items() if not np.isnan(v)})
        mlflow.log_metric("replay_minutes", minutes)
        mlflow.set_tag("replay.targets", "met" if met else "not met")
        mlflow.log_table(table, artifact_file="replay/table.json")
        mlflow.log_artifact(str(report), "replay")
    return ReplayResult(table, pooled, str(report), minutes)


def main() -> None:
    """CLI: ``python -m steps.replay [--data-uri …] [--months 6]``; prints the table."""
    args = config.argument_parser("replay", __doc__).parse_args()
    tracking.setup_logging()
    result = run(step_params.parse("replay", vars(args)))
    print(Path(result.report_path).read_text(encoding="utf-8"))  # noqa: T201


if __name__ == "__main__":
    main()
