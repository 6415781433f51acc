"""Realized quality: flown flights scored by the version that was Production when each flew.

Library functions for ``steps.monitor`` (flights with ``Fecha-O``), ``steps.recalibrate`` and
``steps.replay``. The clock is the data's own: a version serves from the end of what it learned
(``skyprophet.trained_through``, or for a delay-rate correction ``skyprophet.calibrated_through``)
until the next version that was Production takes over; flights older than every version are
scored by the current Production.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities.model_registry import ModelVersion
from sklearn.metrics import average_precision_score, roc_auc_score

from pyfunc.schema import (
    DELAY_MINUTES,
    MAX_BATCH_ROWS,
    OPERATED_TIME,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SCHEDULED_TIME,
    minutes_late,
)
from pyfunc.schema import parse_scheduled_time as parse_time
from skyprophet.mlops.registry import PROMOTED_AT_TAG, require_production, version_uri
from skyprophet.mlops.tags import CALIBRATED_THROUGH_TAG, CORRECTS_TAG, TRAINED_THROUGH_TAG, gate_figure_tag
from skyprophet.science import metrics

logger = logging.getLogger("skyprophet.realized")
AIRLINE = "OPERA"
FIGURES = ("roc_auc", "pr_auc", "ece", "base_rate", "mean_predicted")


class NotFlownError(ValueError):
    """The flights carry no usable ``Fecha-O``: nothing has flown to measure."""


def has_flown(raw: pd.DataFrame) -> bool:
    """Whether the given flights say what happened (a ``Fecha-O`` column with at least one time)."""
    return OPERATED_TIME in raw.columns and bool(parse_time(raw[OPERATED_TIME]).notna().any())


def flown_outcomes(raw: pd.DataFrame) -> pd.DataFrame:
    """Per flown flight: its index in ``raw``, scheduled time, airline and 0/1 delay (etl's label rule).

    Flights without a parsable ``Fecha-I`` and ``Fecha-O`` have not flown (or cannot be judged) and are left out.
    """
    late = minutes_late(raw)
    flown = late.notna().to_numpy()
    if not flown.any():
        raise NotFlownError(f"no flight has a parsable {OPERATED_TIME} and {SCHEDULED_TIME}: nothing flown to measure")
    return pd.DataFrame(
        {
            "row": np.flatnonzero(flown),
            "time": parse_time(raw[SCHEDULED_TIME])[flown].to_numpy(),
            "airline": raw[AIRLINE].astype(str).to_numpy()[flown] if AIRLINE in raw.columns else "",
            "y": (late[flown] > DELAY_MINUTES).astype(np.int64).to_numpy(),
        }
    )


def serves_from(version: ModelVersion) -> pd.Timestamp | None:
    """When a version starts serving on the data's clock: after the last flight it learned from."""
    stamps = [version.tags.get(TRAINED_THROUGH_TAG), version.tags.get(CALIBRATED_THROUGH_TAG)]
    known = [pd.Timestamp(s) for s in stamps if s]
    return max(known) if known else None


@dataclass
class ServingPeriods:
    """The versions that were Production, in the order they took over, and the current one."""

    starts: list[pd.Timestamp]
    versions: list[str]
    current: str

    def at(self, times: pd.Series | np.ndarray) -> np.ndarray:
        """The version serving at each time: the latest to start before it, else the current Production."""
        stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(times)))
        if not self.starts:
            return np.full(len(stamps), self.current, dtype=object)
        index = np.searchsorted(pd.DatetimeIndex(self.starts), stamps, side="left") - 1
        served = np.array(self.versions, dtype=object)[np.maximum(index, 0)]
        return np.where(index >= 0, served, self.current).astype(object)


def serving_periods(client: mlflow.MlflowClient, model_name: str) -> ServingPeriods:
    """Every version promoted to Production (``promotion.promoted_at``) or on the alias now, by start time."""
    current = require_production(client, model_name)
    promoted = [
        v
        for v in client.search_model_versions(f"name = '{model_name}'")
        if PROMOTED_AT_TAG in v.tags or str(v.version) == str(current.version)
    ]
    dated = sorted((serves_from(v), int(v.version)) for v in promoted if serves_from(v) is not None)
    return ServingPeriods([s for s, _ in dated], [str(v) for _, v in dated], str(current.version))


def score_with(model_uri: str, flights: pd.DataFrame) -> np.ndarray:
    """Delay probabilities of ``model_uri`` (loaded here), NaN where a category is one it never saw."""
    model = mlflow.pyfunc.load_model(model_uri)
    inputs = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in flights.columns]  # the model's own contract
    scores = np.full(len(flights), np.nan)
    for start in range(0, len(flights), MAX_BATCH_ROWS):
        chunk = flights.iloc[start : start + MAX_BATCH_ROWS][inputs].astype(str)
        answer = model.predict(chunk, params={"unknown_categories": "score"})
        part = np.array(answer["delay_probability"], dtype=float)  # a copy: the answer may be read-only
        part[np.asarray(answer["unknown_fields"]) != ""] = np.nan
        scores[start : start + len(chunk)] = part
    return scores


def realized_scores(client: mlflow.MlflowClient, model_name: str, raw: pd.DataFrame) -> pd.DataFrame:
    """``flown_outcomes`` plus the serving ``version`` and its probability ``p`` (flights it could score)."""
    outcomes = flown_outcomes(raw)
    periods = serving_periods(client, model_name)
    outcomes["version"] = periods.at(outcomes["time"])
    outcomes["p"] = np.nan
    for version in sorted(set(outcomes["version"]), key=int):
        mine = (outcomes["version"] == version).to_numpy()
        rows = raw.iloc[outcomes.loc[mine, "row"].to_numpy()]
        outcomes.loc[mine, "p"] = score_with(version_uri(model_name, version), rows)
        logger.info("realized: version %s scored %d flown flights", version, int(mine.sum()))
    return outcomes[outcomes["p"].notna()].reset_index(drop=True)


def figures(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Realized ROC AUC, PR AUC, ECE (10 bins), base rate, mean predicted and count; AUCs NaN with one class."""
    y, p = np.asarray(y), np.asarray(p, dtype=float)
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "ece": metrics.expected_calibration_error(y, p),
        "base_rate": float(np.mean(y)),
        "mean_predicted": float(np.mean(p)),
        "flights": float(len(y)),
    }


def week_step(times: pd.Series) -> pd.Series:
    """The metric step of a week: ISO year * 100 + ISO week (201727), increasing across years."""
    iso = pd.to_datetime(times).dt.isocalendar()
    return (iso["year"].astype(int) * 100 + iso["week"].astype(int)).astype(int)


def grouped(scored: pd.DataFrame, by: pd.Series, name: str) -> pd.DataFrame:
    """``figures`` per group of ``by`` (a week step, an airline), one row each."""
    rows = [{name: key, **figures(part["y"], part["p"])} for key, part in scored.groupby(by.to_numpy(), sort=True)]
    return pd.DataFrame(rows)


@dataclass
class Realized:
    """Realized quality overall, per week and per airline, and which versions served."""

    overall: dict[str, float]
    weekly: pd.DataFrame
    by_airline: pd.DataFrame
    versions: dict[str, int]
    period: str
    reasons: list[str] = field(default_factory=list)

    @property
    def degraded(self) -> bool:
        """Whether calibration or discrimination fell past the thresholds (see ``judge``)."""
        return bool(self.reasons)


def measure(scored: pd.DataFrame) -> Realized:
    """Overall, weekly and per-airline figures of ``realized_scores``' output."""
    if scored.empty:
        raise NotFlownError("no flown flight could be scored (every one has a category the model never saw)")
    times = pd.to_datetime(scored["time"])
    weekly = grouped(scored, week_step(times), "week")
    by_airline = grouped(scored, scored["airline"], "airline").sort_values("flights", ascending=False)
    versions = {str(k): int(v) for k, v in scored["version"].value_counts().sort_index().items()}
    period = f"{times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}"
    return Realized(figures(scored["y"], scored["p"]), weekly, by_airline.reset_index(drop=True), versions, period)


def gate_reference(client: mlflow.MlflowClient, version: ModelVersion) -> ModelVersion:
    """The version whose gate figures judge ``version``: the corrected one for a delay-rate correction.

    A correction's own gate ran on the flown days its shift was chosen from (in-sample calibration).
    """
    corrected = version.tags.get(CORRECTS_TAG)
    return client.get_model_version(version.name, corrected) if corrected else version


def judge(realized: Realized, gate_tags: dict[str, str], ece_margin: float, auc_margin: float) -> list[str]:
    """Reasons the realized figures fail: ECE above the gate's + ``ece_margin``, ROC AUC below its - ``auc_margin``.

    A gate figure the version lacks is not judged (named in the log); a NaN realized AUC is not judged.
    """
    reasons = []
    gate_ece, gate_auc = (
        gate_tags.get(gate_figure_tag("candidate", "ece")),
        gate_tags.get(gate_figure_tag("candidate", "roc_auc")),
    )
    ece, auc = realized.overall["ece"], realized.overall["roc_auc"]
    if gate_ece not in (None, "none") and ece > float(gate_ece) + ece_margin:
        reasons.append(f"realized ECE {ece:.4f} > gate ECE {float(gate_ece):.4f} + realized_ece_margin {ece_margin}")
    if gate_auc not in (None, "none") and not np.isnan(auc) and auc < float(gate_auc) - auc_margin:
        reasons.append(
            f"realized ROC AUC {auc:.4f} < gate ROC AUC {float(gate_auc):.4f} - realized_auc_margin {auc_margin}"
        )
    if gate_ece in (None, "none") or gate_auc in (None, "none"):
        logger.warning("realized: the version has no gate figures (gate.candidate_*): not judged against them")
    return reasons


def log_realized(realized: Realized) -> None:
    """Metrics ``realized_*`` of the active run: overall, and per week with the week as step and time."""
    mlflow.log_metrics({f"realized_{k}": v for k, v in realized.overall.items() if not np.isnan(v)})
    for row in realized.weekly.itertuples(index=False):
        week = int(row.week)
        stamp = int(pd.Timestamp.fromisocalendar(week // 100, week % 100, 1).timestamp() * 1000)
        for name in (*FIGURES, "flights"):
            value = float(getattr(row, name))
            if not np.isnan(value):
                mlflow.log_metric(f"realized_weekly_{name}", value, step=week, timestamp=stamp)
    mlflow.log_table(realized.by_airline, artifact_file="realized/by_airline.json")
    mlflow.log_table(realized.weekly, artifact_file="realized/weekly.json")


def realized_figure(realized: Realized, title: str) -> Figure:
    """Per week: realized delay rate against mean predicted probability; ECE and ROC AUC."""
    weekly = realized.weekly
    labels = [f"{w // 100}-W{w % 100:02d}" for w in weekly["week"]]
    fig = Figure(figsize=(max(6, 0.45 * len(labels) + 2), 6))
    rates, quality = fig.subplots(2, 1, sharex=True)
    rates.plot(labels, weekly["base_rate"], "o-", label="realized delay rate")
    rates.plot(labels, weekly["mean_predicted"], "s--", label="mean predicted probability")
    rates.set(ylabel="share of flights", title=title)
    rates.legend()
    quality.plot(labels, weekly["ece"], "o-", color="tab:red", label="ECE")
    quality.plot(labels, weekly["roc_auc"], "s-", color="tab:green", label="ROC AUC")
    quality.set(ylabel="realized", xlabel="ISO week")
    quality.legend()
    quality.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    return fig


def markdown(realized: Realized) -> list[str]:
    """The realized section of monitor's report."""
    o = realized.overall
    verdict = "**DEGRADED**: " + "; ".join(realized.reasons) if realized.degraded else "within thresholds"
    lines = [
        "## Realized quality (flown flights)",
        "",
        f"- {int(o['flights'])} flown flights, {realized.period}, scored by the version serving when each flew: "
        + ", ".join(f"v{v} ({n})" for v, n in realized.versions.items()),
        f"- ROC AUC {o['roc_auc']:.4f}, PR AUC {o['pr_auc']:.4f}, ECE {o['ece']:.4f}; "
        f"delay rate {o['base_rate']:.4f} against mean predicted {o['mean_predicted']:.4f}",
        f"- verdict: {verdict}",
        "",
        "| airline | flights | delay rate | mean predicted | ROC AUC | ECE |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in realized.by_airline.itertuples(index=False):
        lines.append(
            f"| {row.airline} | {int(row.flights)} | {row.base_rate:.3f} | {row.mean_predicted:.3f} | "
            f"{row.roc_auc:.3f} | {row.ece:.3f} |"
        )
    return [*lines, "", "![realized quality by week](realized.png)", ""]


REALIZED_HEADING = "### Realized quality"


def record_on_version(client: mlflow.MlflowClient, version: ModelVersion, realized: Realized, run_id: str) -> None:
    """The latest realized figures as ``realized.*`` tags and one description line on the Production version."""
    o = realized.overall
    tags = {f"realized.{k}": f"{o[k]:.5f}" for k in FIGURES}
    tags |= {
        "realized.flights": str(int(o["flights"])),
        "realized.period": realized.period,
        "realized.run_id": run_id,
        "realized.verdict": "degraded" if realized.degraded else "ok",
    }
    for key, value in tags.items():
        client.set_model_version_tag(version.name, version.version, key, value)
    line = (
        f"{realized.period}: {int(o['flights'])} flown flights, ROC AUC {o['roc_auc']:.4f}, ECE {o['ece']:.4f}, "
        f"delay rate {o['base_rate']:.4f} vs mean predicted {o['mean_predicted']:.4f} "
        f"({tags['realized.verdict']}; monitor run {run_id})."
    )
    description = client.get_model_version(version.name, version.version).description or ""
    kept = re.sub(rf"\n*{REALIZED_HEADING}\n\n.*?(?=\n### |\Z)", "", description, flags=re.S).rstrip()
    text = (kept + "\n\n" if kept else "") + f"{REALIZED_HEADING}\n\n{line}"
    client.update_model_version(version.name, version.version, description=text)


def measure_realized(
    client: mlflow.MlflowClient,
    version: ModelVersion,
    raw: pd.DataFrame,
    ece_margin: float,
    auc_margin: float,
    folder: Path,
) -> Realized:
    """Realized quality of the flown flights in the active run, the report and on the Production version."""
    scored = realized_scores(client, version.name, raw)
    measured = measure(scored)
    reference = gate_reference(client, version)
    measured.reasons = judge(measured, reference.tags, ece_margin, auc_margin)
    o = measured.overall
    logger.info(
        "realized: %d flights, ROC AUC %.4f, ECE %.4f, rate %.4f vs predicted %.4f: %s",
        int(o["flights"]),
        o["roc_auc"],
        o["ece"],
        o["base_rate"],
        o["mean_predicted"],
        "; ".join(measured.reasons) or "within thresholds",
    )
    log_realized(measured)
    run_id = mlflow.active_run().info.run_id
    mlflow.set_tags(
        {
            "monitor.realized": "degraded" if measured.degraded else "ok",
            "monitor.realized_versions": ",".join(measured.versions),
            "monitor.realized_reasons": "; ".join(measured.reasons)[:5000] or "none",
        }
    )
    title = f"{version.name}: realized quality by week ({measured.period})"
    fig = realized_figure(measured, title)
    fig.savefig(folder / "realized.png", dpi=100)
    with open(folder / "report.md", "a", encoding="utf-8") as report:
        report.write("\n".join(markdown(measured)))
    record_on_version(client, version, measured, run_id)
    return measured
