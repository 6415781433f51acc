"""The gate: a candidate against the current Production on the latest period, before it is registered.

Both are scored on the same holdout flights in processes of their own
(``skyprophet.ops.isolated_scoring``); the verdict and the figures become the version's ``gate.*``
tags and description, which a person reads in the MLflow UI and ``promote`` shows as a hint.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from sklearn.metrics import average_precision_score, roc_auc_score

from pyfunc.schema import SCHEDULED_TIME, TARGET, parse_scheduled_time
from skyprophet.mlops import tags as run_tags
from skyprophet.mlops.registry import production_version, version_uri
from skyprophet.ops.isolated_scoring import score_isolated
from skyprophet.science import metrics
from skyprophet.science.fit import fit_model
from skyprophet.science.recipe import recipe_of

logger = logging.getLogger("skyprophet.gate")


GATE_METRICS = ("roc_auc", "pr_auc", "ece")


def gate_metrics(target: np.ndarray, scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """ROC AUC, PR AUC and ECE of each model on the holdout flights that every one of them can score."""
    known = np.logical_and.reduce([~np.isnan(s) for s in scores.values()])
    result = {}
    for key, score in scores.items():
        y, p = target[known], score[known]
        result[key] = {
            "roc_auc": float(roc_auc_score(y, p)),
            "pr_auc": float(average_precision_score(y, p)),
            "ece": metrics.expected_calibration_error(y, p),
        }
    return result


def trained_through(version: ModelVersion) -> pd.Timestamp | None:
    """The last scheduled time among the version's training flights (tagged by train), if known."""
    return run_tags.trained_through(version.tags)


def production_scores(
    client: mlflow.MlflowClient, production: ModelVersion, holdout_path: Path, holdout: pd.DataFrame, train_path: Path
) -> tuple[np.ndarray, str]:
    """Production's probabilities on the holdout, and how they were obtained.

    A Production version that has not seen the holdout period is scored as it is, with its own
    code. One that has (it was refitted on flights of that period) would be judged on flights it
    learned, so its recipe is refitted on the candidate's training flights and scored instead.
    """
    period_start = parse_scheduled_time(holdout[SCHEDULED_TIME]).min()
    seen_until = trained_through(production)
    if seen_until is None or seen_until < period_start:
        return score_isolated(version_uri(production.name, production.version), holdout_path), "served model"
    recipe = recipe_of(client.get_run(production.run_id))
    logger.info("gate: Production %s has seen the holdout period; refitting its recipe", production.version)
    fitted, _ = fit_model(pd.read_parquet(train_path), recipe)
    return fitted.scores(holdout), "recipe refitted on the candidate's training flights"


def model_threshold(model_uri: str) -> float | None:
    """The decision threshold stored in the model's ``spec.json`` (the 0/1 ``delay`` cut), if readable."""
    import json

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
        return float(json.loads((local / "artifacts" / "spec.json").read_text(encoding="utf-8"))["threshold"])
    except (MlflowException, OSError, KeyError, ValueError):
        return None


def describe(
    gate: dict[str, dict[str, float]],
    period: str,
    production: ModelVersion | None,
    how: str,
    decision: str,
    threshold: float | None = None,
) -> str:
    """The version's description: what a person promoting it in the MLflow UI needs to see."""
    lines = [
        f"Gate on the latest period ({period}), flights every model can score: {decision}.",
        "",
        f"Decision threshold (delay = 1 at or above): {'unknown' if threshold is None else f'{threshold:.4f}'}.",
        "",
        "| model | ROC AUC | PR AUC | ECE |",
        "|---|---|---|---|",
    ]
    for key, values in gate.items():
        label = key if key == "candidate" else f"production v{production.version} ({how})"
        lines.append(f"| {label} | {values['roc_auc']:.4f} | {values['pr_auc']:.4f} | {values['ece']:.4f} |")
    return "\n".join(lines)


@dataclass
class Gate:
    """The gate's comparison on the holdout: each model's figures, how Production was scored, the verdict.

    ``passed``: the candidate's ROC AUC is at least Production's (or there is no Production) on the
    latest period; recorded as ``gate.decision`` = ``promoted`` / ``not promoted``, which
    ``steps.promote``'s quality check reads (``promote=force`` overrides it, nothing else).
    """

    figures: dict[str, dict[str, float]]
    period: str
    production: ModelVersion | None
    production_scored_as: str
    passed: bool

    def tags(self, holdout_uri: str, promote_mode: str) -> dict[str, str]:
        """The version tags a person reads in the UI (and the tests and CD read back)."""
        tags = {
            "gate.period": self.period,
            "gate.production_version": "none" if self.production is None else str(self.production.version),
            "gate.production_scored_as": self.production_scored_as or "none",
            run_tags.GATE_VERDICT_TAG: run_tags.GATE_PASSED if self.passed else run_tags.GATE_NOT_PASSED,
            run_tags.GATE_HOLDOUT_URI_TAG: holdout_uri,
            "gate.promote_mode": promote_mode,
        }
        for key in ("candidate", "production"):
            for metric in GATE_METRICS:
                value = self.figures.get(key, {}).get(metric)
                tags[run_tags.gate_figure_tag(key, metric)] = "none" if value is None else f"{value:.5f}"
        return tags


def run_gate(client: mlflow.MlflowClient, model_uri: str, model_name: str, processed: Path, promote_mode: str) -> Gate:
    """Score the candidate and the current Production on the holdout (the latest period); decide."""
    holdout_path = processed / "holdout.parquet"
    holdout = pd.read_parquet(holdout_path)
    times = parse_scheduled_time(holdout[SCHEDULED_TIME])
    period = f"{times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}"
    logger.info("gate: %d holdout flights, %s", len(holdout), period)
    production, how = production_version(client, model_name), ""
    # The two scorings are separate processes (or Production's refit): side by side, not one after the other.
    with ThreadPoolExecutor(max_workers=2) as pool:
        candidate = pool.submit(score_isolated, model_uri, holdout_path)
        if production is not None:
            scores_how = pool.submit(
                production_scores, client, production, holdout_path, holdout, processed / "train.parquet"
            )
        scores = {"candidate": candidate.result()}
        if production is not None:
            scores["production"], how = scores_how.result()
    figures = gate_metrics(holdout[TARGET].to_numpy(), scores)
    better = production is None or figures["candidate"]["roc_auc"] >= figures["production"]["roc_auc"]
    return Gate(figures, period, production, how, better)
