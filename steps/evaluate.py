"""evaluate: the project's model against the two reference models, on two splits, in one run.

Reads: the etl step's processed flights (``<processed_uri>/{train,holdout}.parquet``); their union
is every usable flight, from which the forward split is formed. Writes: one table (printed,
logged as ``evaluation.md`` / ``evaluation.json`` and as metrics ``<split>.<model>.<metric>``),
reliability, ROC/PR and confusion-matrix plots per split, and, when the registry's Production
version was trained on the same processed data, the table as that version's description and tags
(so the MLflow UI shows it where a person promotes).

Splits: ``day`` = the etl holdout (whole calendar days); ``forward`` = train before November 1 of
the data's last year, test from then on (Jan-Oct -> Nov-Dec on a calendar-year file). Every model
is fitted on the split's training part only; its threshold (and the project's calibration) come
from training data too. ``--search-trials N`` also runs a small day-grouped cross-validated
hyper-parameter search on the day split's training part and logs its results (it changes nothing:
copy the winner into the train defaults).
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from sklearn.metrics import roc_auc_score

from pyfunc.schema import SCHEDULED_TIME, TARGET, clean_flights, parse_scheduled_time
from steps import baselines, config, metrics, tracking
from steps.register import PRODUCTION_STAGE, current_production
from steps.train import (
    HYPER_DEFAULTS,
    OBJECTIVES,
    effective_hyper,
    fit_model,
    fitting_label,
    known_rows,
    load_processed,
    out_of_fold_scores,
    training_features,
)

logger = logging.getLogger("skyprophet.evaluate")
MODELS = ("model", "seed", "challenge")
SPLITS = ("day", "forward")
TABLE_COLUMNS = (
    "roc_auc",
    "pr_auc",
    "precision_delayed",
    "recall_delayed",
    "f1_delayed",
    "precision_on_time",
    "recall_on_time",
    "f1_on_time",
    "brier",
    "log_loss",
    "ece",
    "threshold",
)
# Forward split: train before this month of the data's last year, test from it on.
FORWARD_FIRST_TEST_MONTH = 11
# Hyper-parameter candidates of the optional search (sampled without replacement).
SEARCH_SPACE = {
    "objective": list(OBJECTIVES),
    "n_estimators": [300, 400, 600],
    "learning_rate": [0.02, 0.03, 0.05],
    "max_depth": [6, 8, 9, 10],
    "min_child_weight": [5.0, 20.0, 50.0],
    "subsample": [0.7, 0.8, 1.0],
    "colsample_bytree": [0.3, 0.4, 0.6, 0.8],
    "scale_pos_weight": [1.0, 3.0],
}
VERSION_TAG_PREFIX = "eval"
# What train did before these parameters existed (runs of then did not log them).
HYPER_BEFORE_IT_EXISTED = {"objective": "delayed", "country": "none"}


@dataclass
class EvaluateResult:
    """The run, the table (one row per split and model), its text and the version described, if any."""

    run_id: str
    table: pd.DataFrame
    text: str
    version: str | None


def forward_split(flights: pd.DataFrame) -> pd.Series:
    """True for forward-test flights: scheduled on or after Nov 1 of the data's last year.

    A file that does not reach November falls back to its last sixth of calendar days, so the
    split exists for any airport's file.
    """
    times = parse_scheduled_time(flights[SCHEDULED_TIME])
    cutoff = pd.Timestamp(year=int(times.max().year), month=FORWARD_FIRST_TEST_MONTH, day=1)
    test = times >= cutoff
    if test.all() or not test.any():
        days = np.sort(times.dt.normalize().unique())
        cutoff = days[int(len(days) * 5 / 6)]
        test = times >= cutoff
    return test


def splits_from(train: pd.DataFrame, holdout: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """The day split as etl made it, and the forward split of all its flights."""
    flights = pd.concat([train, holdout], ignore_index=True)
    is_test = forward_split(flights).to_numpy()
    return {
        "day": (train.reset_index(drop=True), holdout.reset_index(drop=True)),
        "forward": (flights[~is_test].reset_index(drop=True), flights[is_test].reset_index(drop=True)),
    }


def score_split(train: pd.DataFrame, test: pd.DataFrame, hyper: dict) -> tuple[np.ndarray, dict, dict]:
    """Fit the three models on ``train``; their test probabilities and thresholds on shared rows.

    Rows the project's model cannot score (a category it never saw) are left out for all three,
    so every model is measured on the same flights. Baseline thresholds are F1-optimal on their
    own training predictions.
    """
    fitted, _ = fit_model(train, hyper)
    clean = clean_flights(test)
    known = known_rows(clean, fitted.spec.features)
    test = test[known].reset_index(drop=True)
    target = test[TARGET].to_numpy()
    train_target = train[TARGET].to_numpy()
    scores = {"model": fitted.predict_clean(clean[known].reset_index(drop=True))}
    thresholds = {"model": fitted.spec.threshold}
    for name, baseline in (("seed", baselines.seed_baseline), ("challenge", baselines.challenge_baseline)):
        both = baseline(train, pd.concat([train, test], ignore_index=True))
        thresholds[name] = metrics.best_f1_threshold(train_target, both[: len(train)])
        scores[name] = both[len(train) :]
    return target, scores, thresholds


def format_table(table: pd.DataFrame) -> str:
    """Markdown table of the evaluation, one row per split and model."""
    header = ["split", "model", "rows", *TABLE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [row["split"], row["model"], str(int(row["rows"]))] + [f"{row[c]:.4f}" for c in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def search(train: pd.DataFrame, hyper: dict, trials: int, seed: int) -> pd.DataFrame:
    """Day-grouped CV ROC AUC of ``trials`` sampled hyper-parameter sets (plus the current one)."""
    features, target, _, folds = training_features(train, hyper)
    rng = np.random.default_rng(seed)
    candidates = [effective_hyper(hyper)]
    seen = {json.dumps(candidates[0], sort_keys=True, default=float)}
    while len(candidates) < trials + 1 and len(seen) < 10_000:
        candidate = effective_hyper({**hyper, **{k: v[rng.integers(len(v))] for k, v in SEARCH_SPACE.items()}})
        key = json.dumps(candidate, sort_keys=True, default=float)
        if key not in seen:
            seen.add(key)
            candidates.append(candidate)
    rows = []
    for i, candidate in enumerate(candidates):
        label = fitting_label(train, candidate["objective"])
        auc = float(roc_auc_score(target, out_of_fold_scores(features, label, folds, candidate)))
        logger.info("search %d/%d: cv ROC AUC %.4f %s", i, len(candidates) - 1, auc, candidate)
        rows.append({**{k: candidate[k] for k in SEARCH_SPACE}, "cv_roc_auc": auc})
    return pd.DataFrame(rows).sort_values("cv_roc_auc", ascending=False).reset_index(drop=True)


def processed_digests(frames: dict[str, pd.DataFrame]) -> set[str]:
    """MLflow dataset digests of the processed frames (what train logs as its inputs)."""
    return {mlflow.data.from_pandas(frame, name=name, targets=TARGET).digest for name, frame in frames.items()}


def production_version(client: mlflow.MlflowClient, name: str) -> ModelVersion | None:
    """The version in stage Production (what ``models:/<name>/Production`` serves), else alias ``production``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            versions = client.get_latest_versions(name, stages=[PRODUCTION_STAGE])
    except MlflowException:
        return None
    return versions[0] if versions else current_production(client, name)


def version_trained_on(run: Run, digests: set[str]) -> bool:
    """Whether the version's train run logged exactly these processed datasets as inputs."""
    logged = {d.dataset.digest for d in (run.inputs.dataset_inputs if run.inputs else [])}
    return bool(logged) and digests <= logged


def version_hyper(run: Run) -> dict:
    """The train hyper-parameters of the version's run (so evaluate refits the same recipe).

    A parameter the run did not log takes the value train used before it existed, not today's
    default: a version trained before ``objective`` existed was a logistic classifier.
    """
    params = run.data.params
    recipe = {**HYPER_DEFAULTS, **HYPER_BEFORE_IT_EXISTED}

    def typed(value: str, default: object) -> object:
        return value if isinstance(default, str) else type(default)(float(value))

    return {k: typed(params[k], default) if k in params else default for k, default in recipe.items()}


def describe_version(client: mlflow.MlflowClient, version: ModelVersion, table: pd.DataFrame, run_id: str) -> None:
    """Put the table in the version's description and its headline numbers in tags."""
    text = (
        f"Evaluation (run {run_id}): the version's recipe refitted on each split's training part, "
        "against the challenge and seed reference models on the same flights.\n\n" + format_table(table)
    )
    client.update_model_version(version.name, version.version, description=text)
    client.set_model_version_tag(version.name, version.version, f"{VERSION_TAG_PREFIX}.run_id", run_id)
    for _, row in table.iterrows():
        for column in ("roc_auc", "pr_auc", "ece", "f1_delayed"):
            key = f"{VERSION_TAG_PREFIX}.{row['split']}.{row['model']}.{column}"
            client.set_model_version_tag(version.name, version.version, key, f"{row[column]:.4f}")


EVALUATE = config.DEFAULTS["evaluate"]


def run(
    processed_uri: str = EVALUATE["processed_uri"],
    model_name: str = EVALUATE["model_name"],
    search_trials: int = EVALUATE["search_trials"],
    seed: int = EVALUATE["seed"],
) -> EvaluateResult:
    """Score the three models on both splits, log the table and plots, describe Production."""
    processed_uri = processed_uri or str(config.datasets_dir() / "processed")
    with tracking.step_run("evaluate") as active:
        client = mlflow.MlflowClient()
        train, holdout = load_processed(processed_uri)
        version = production_version(client, model_name)
        version_run = client.get_run(version.run_id) if version is not None and version.run_id else None
        if version is not None and (
            version_run is None
            or not version_trained_on(version_run, processed_digests({"train": train, "holdout": holdout}))
        ):
            logger.info("evaluate: Production version %s was trained on other data; not describing it", version.version)
            version = None
        hyper = version_hyper(version_run) if version is not None else dict(HYPER_DEFAULTS)
        tracking.log_params(
            {"processed_uri": processed_uri, "model_name": model_name, "search_trials": search_trials, "seed": seed}
        )
        tracking.log_params({f"hyper.{k}": v for k, v in hyper.items()})
        rows = []
        for split, (train_part, test_part) in splits_from(train, holdout).items():
            logger.info("%s split: %d training, %d test flights", split, len(train_part), len(test_part))
            target, scores, thresholds = score_split(train_part, test_part, hyper)
            for model, probability in scores.items():
                row = metrics.classification_metrics(target, probability, thresholds[model])
                rows.append({"split": split, "model": model, "rows": len(target), **row})
            metrics.log_figure(metrics.reliability_figure(target, scores), f"plots/{split}/reliability.png")
            metrics.log_figure(metrics.curves_figure(target, scores), f"plots/{split}/roc_pr_curves.png")
            for model, probability in scores.items():
                figure = metrics.confusion_figure(target, probability, thresholds[model])
                metrics.log_figure(figure, f"plots/{split}/confusion_{model}.png")
        table = pd.DataFrame(rows)
        mlflow.log_metrics(
            {f"{r['split']}.{r['model']}.{c}": float(r[c]) for _, r in table.iterrows() for c in TABLE_COLUMNS}
        )
        text = format_table(table)
        mlflow.log_text(text, "evaluation.md")
        mlflow.log_table(table, "evaluation.json")
        if search_trials > 0:
            results = search(train, hyper, search_trials, seed)
            mlflow.log_table(results, "search.json")
            mlflow.log_metric("search.best_cv_roc_auc", float(results["cv_roc_auc"].iloc[0]))
            text += "\n\nHyper-parameter search (day-grouped CV on the day split's training days):\n\n"
            text += results.to_string(index=False)
        run_id = active.info.run_id
        if version is not None:
            describe_version(client, version, table, run_id)
            mlflow.set_tags({"described_model": model_name, "described_version": version.version})
    return EvaluateResult(run_id, table, text, None if version is None else str(version.version))


def main() -> None:
    """CLI: ``python -m steps.evaluate --processed-uri ... [--search-trials N]``; prints the table."""
    args = config.argument_parser("evaluate", __doc__).parse_args()
    tracking.setup_logging()
    result = run(**vars(args))
    sys.stdout.write(result.text + "\n")
    where = f"model version {result.version}" if result.version else "no Production version (other data or none)"
    sys.stdout.write(f"\nrun {result.run_id}; table written to {where}\n")


if __name__ == "__main__":
    main()
