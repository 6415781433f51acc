"""evaluate: the project's model against the two reference models, time-forward first, in one run.

Reads: the etl step's processed flights (``<processed_uri>/{train,holdout}.parquet``); their union
is every usable flight. Writes: one table (printed, logged as ``evaluation.md`` /
``evaluation.json`` and as metrics ``backtest.<month|pooled>.<model>.<metric>`` and
``<forward|day>.<model>.<metric>``), the project's model's mean |contribution| per feature on each
backtest month and split (``backtest.<month>.model.contribution.<feature>``,
``<forward|day>.model.contribution.<feature>``; pyfunc.explain), plots, and,
when the registry's Production version was trained on the same flights, the headline figures on
that version (description and ``eval.*`` tags, where a person promotes in the MLflow UI).

What the users do is score months that have not flown yet, so the splits are, in order:
- ``backtest``: for each of the file's last six months, every model is fitted on all earlier
  months and scores that month (what a monthly retrain meets); per month and pooled.
- ``forward``: train before November 1 of the data's last year, test from then on (Jan-Oct ->
  Nov-Dec on a calendar-year file; the last sixth of the days on a shorter file).
- ``day`` (secondary): random whole days (etl's ``split=day``). It lets a model memorise the
  training year's weather, which no future flight offers: never choose anything by it.
Features, recipes and hyper-parameters are chosen by the backtest. Every model is fitted on the
split's training part only; thresholds and calibration come from training data too. Flights with
a category the training part never saw are scored as unseen and reported on their own line.
``--search-trials N`` also runs a small hyper-parameter search scored month ahead on the last
training months (it changes nothing: copy the winner into the train defaults).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from sklearn.metrics import roc_auc_score

from pyfunc.schema import SCHEDULED_TIME, TARGET, clean_flights, parse_scheduled_time, scorable
from skyprophet import config
from skyprophet.mlops import tracking
from skyprophet.mlops.registry import production_version
from skyprophet.science import baselines, metrics
from skyprophet.science.fit import CONTRIBUTION_PREFIX, fit_model, fitting_label, out_of_fold_scores, training_features
from skyprophet.science.recipe import OBJECTIVES, Recipe, recipe_of
from skyprophet.science.splits import (
    forward_split,
    load_processed,
    month_ahead,
    month_ahead_folds,
    months_of,
    period_of,
    split_by_day,
)

logger = logging.getLogger("skyprophet.evaluate")
MODELS = ("model", "seed", "challenge")
# How many of the file's last months the backtest scores, each trained on every month before it.
BACKTEST_MONTHS = 6
POOLED = "pooled"
TABLE_COLUMNS = (
    "base_rate",
    "mean_predicted",
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
# The day split's share of days and seed (etl's defaults for split=day).
DAY_FRACTION, DAY_SEED = config.DEFAULTS["etl"]["holdout_fraction"], config.DEFAULTS["etl"]["split_seed"]
# Hyper-parameter candidates of the optional search (sampled without replacement).
SEARCH_SPACE = {
    "objective": list(OBJECTIVES),
    "n_estimators": [200, 400, 600],
    "learning_rate": [0.02, 0.03, 0.05],
    "max_depth": [4, 6, 8, 9],
    "min_child_weight": [5.0, 20.0, 50.0, 100.0],
    "subsample": [0.7, 0.8, 1.0],
    "colsample_bytree": [0.3, 0.4, 0.6, 0.8],
    "scale_pos_weight": [1.0, 3.0],
}
SEARCH_MONTHS = 3
VERSION_TAG_PREFIX = "eval"
EVALUATION_MARKER = "\n\nEvaluation (run "


@dataclass
class Scored:
    """One split's test flights: targets and each model's probabilities and thresholds.

    ``known`` flights are those whose categories the training part saw (every model is measured on
    them); the project's model also scores the others, as unseen, reported apart.
    """

    target: np.ndarray
    scores: dict[str, np.ndarray]
    thresholds: dict[str, np.ndarray]
    unknown_target: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    unknown_model: np.ndarray = field(default_factory=lambda: np.array([]))
    contributions: dict[str, float] = field(default_factory=dict)

    @classmethod
    def pool(cls, parts: list[Scored]) -> Scored:
        """The months side by side, each model with each month's own threshold."""
        return cls(
            np.concatenate([p.target for p in parts]),
            {m: np.concatenate([p.scores[m] for p in parts]) for m in MODELS},
            {m: np.concatenate([np.broadcast_to(p.thresholds[m], len(p.target)) for p in parts]) for m in MODELS},
            np.concatenate([p.unknown_target for p in parts]),
            np.concatenate([p.unknown_model for p in parts]),
        )


@dataclass
class EvaluateResult:
    """The run, the table (one row per split, period and model), its text and the version described, if any."""

    run_id: str
    table: pd.DataFrame
    text: str
    version: str | None


Splits = dict[str, tuple[pd.DataFrame, pd.DataFrame]]


def backtest_splits(flights: pd.DataFrame, months: int = BACKTEST_MONTHS) -> Splits:
    """Month ahead: for each of the last ``months`` months (never the first), all earlier months -> that month."""
    month = months_of(flights)
    splits = {}
    for m in month_ahead(month, months):
        test = flights[month == m].reset_index(drop=True)
        if test[TARGET].nunique() < 2:
            logger.warning("backtest: %s has %d flights of one class only; left out", m, len(test))
            continue
        splits[str(m)] = (flights[month < m].reset_index(drop=True), test)
    return splits


def score_split(train: pd.DataFrame, test: pd.DataFrame, recipe: Recipe) -> Scored:
    """Fit the three models on ``train`` and score ``test``.

    Flights with a category the project's model never saw are left out for all three, so every
    model is measured on the same flights; the project's model scores them apart, as unseen.
    Baseline thresholds are F1-optimal on their own training predictions.
    """
    fitted, _ = fit_model(train, recipe)
    clean = clean_flights(test)
    probability = fitted.predict_clean(clean)
    unknown = ~scorable(clean, fitted.spec.features.vocabulary)
    contributions = fitted.mean_contributions(clean[~unknown].reset_index(drop=True))
    target = test[TARGET].to_numpy()
    known_test = test[~unknown].reset_index(drop=True)
    scores = {"model": probability[~unknown]}
    thresholds = {"model": np.asarray(fitted.spec.threshold)}
    train_target = train[TARGET].to_numpy()
    for name, baseline in (("seed", baselines.seed_baseline), ("challenge", baselines.challenge_baseline)):
        both = baseline(train, pd.concat([train, known_test], ignore_index=True))
        thresholds[name] = np.asarray(metrics.best_f1_threshold(train_target, both[: len(train)]))
        scores[name] = both[len(train) :]
    return Scored(target[~unknown], scores, thresholds, target[unknown], probability[unknown], contributions)


def table_rows(split: str, period: str, scored: Scored) -> list[dict]:
    """One row per model: the protocol's metrics, base rate beside mean predicted probability."""
    rows = []
    for model, probability in scored.scores.items():
        row = metrics.classification_metrics(scored.target, probability, scored.thresholds[model])
        rows.append(
            {
                "split": split,
                "period": period,
                "model": model,
                "rows": len(scored.target),
                "base_rate": float(scored.target.mean()),
                "mean_predicted": float(probability.mean()),
                **row,
            }
        )
    return rows


def metric_prefix(row: pd.Series) -> str:
    """``backtest.<month|pooled>.<model>`` or ``<split>.<model>``: a row's MLflow metric names."""
    split = f"backtest.{row['period']}" if row["split"] == "backtest" else row["split"]
    return f"{split}.{row['model']}"


def format_table(table: pd.DataFrame) -> str:
    """Markdown table of the evaluation, one row per split, period and model."""
    header = ["split", "period", "model", "rows", *TABLE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [row["split"], row["period"], row["model"], str(int(row["rows"]))]
        lines.append("| " + " | ".join(cells + [f"{row[c]:.4f}" for c in TABLE_COLUMNS]) + " |")
    return "\n".join(lines)


def headline(table: pd.DataFrame, unknown: dict[str, float]) -> dict[str, float]:
    """The figures that matter: backtest mean and pooled, forward, unseen-category flights, day (secondary)."""
    months = table[(table["split"] == "backtest") & (table["period"] != POOLED) & (table["model"] == "model")]
    figures = {"backtest.mean.model.roc_auc": float(months["roc_auc"].mean())}
    headline_rows = {
        "backtest.pooled": (table["split"] == "backtest") & (table["period"] == POOLED),
        "forward": table["split"] == "forward",
        "day": table["split"] == "day",
    }
    for name, rows in headline_rows.items():
        for model in MODELS:
            row = table[rows & (table["model"] == model)].iloc[0]
            for column in ("roc_auc", "pr_auc", "ece"):
                figures[f"{name}.{model}.{column}"] = float(row[column])
    figures.update({f"backtest.unknown_categories.model.{k}": v for k, v in unknown.items()})
    return figures


def unknown_figures(pooled: Scored) -> dict[str, float]:
    """Rows, delay rate and (when both classes occur) ROC AUC of the flights scored with unseen categories."""
    figures = {"rows": float(len(pooled.unknown_target))}
    if len(pooled.unknown_target):
        figures["base_rate"] = float(pooled.unknown_target.mean())
        figures["mean_predicted"] = float(pooled.unknown_model.mean())
    if len(np.unique(pooled.unknown_target)) == 2:
        figures["roc_auc"] = float(roc_auc_score(pooled.unknown_target, pooled.unknown_model))
    return figures


def by_month_figure(table: pd.DataFrame) -> plt.Figure:
    """ROC AUC by backtest month per model, and base rate beside mean predicted probability."""
    months = table[(table["split"] == "backtest") & (table["period"] != POOLED)]
    fig, (auc, calibration) = plt.subplots(1, 2, figsize=(11, 4.5))
    for model in MODELS:
        rows = months[months["model"] == model]
        auc.plot(rows["period"], rows["roc_auc"], "o-", label=model)
        calibration.plot(rows["period"], rows["mean_predicted"], "o--", label=f"{model}: mean predicted")
    base = months[months["model"] == "model"]
    calibration.plot(base["period"], base["base_rate"], "ks-", lw=2, label="observed delay rate")
    auc.set(title="backtest: ROC AUC by month (trained on every earlier month)", ylabel="ROC AUC")
    calibration.set(title="backtest: calibration by month", ylabel="share delayed")
    for ax in (auc, calibration):
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def search(flights: pd.DataFrame, recipe: Recipe, trials: int, seed: int) -> pd.DataFrame:
    """Month-ahead ROC AUC (the last SEARCH_MONTHS months, each from all before) of sampled recipes."""
    features, target, _, _ = training_features(flights, recipe)
    folds = month_ahead_folds(parse_scheduled_time(flights[SCHEDULED_TIME]), SEARCH_MONTHS)
    scored = np.concatenate([rows for _, rows in folds])
    rng = np.random.default_rng(seed)
    candidates = [recipe.effective()]
    seen = {candidates[0]}
    while len(candidates) < trials + 1 and len(seen) < 10_000:
        candidate = recipe.replace(**{k: v[rng.integers(len(v))] for k, v in SEARCH_SPACE.items()}).effective()
        if candidate not in seen:
            seen.add(candidate)
            candidates.append(candidate)
    rows = []
    for i, candidate in enumerate(candidates):
        label = fitting_label(flights, candidate.objective)
        scores = out_of_fold_scores(features, label, folds, candidate)
        auc = float(roc_auc_score(target[scored], scores[scored]))
        logger.info("search %d/%d: month-ahead ROC AUC %.4f %s", i, len(candidates) - 1, auc, candidate)
        rows.append({**{k: getattr(candidate, k) for k in SEARCH_SPACE}, "month_ahead_roc_auc": auc})
    return pd.DataFrame(rows).sort_values("month_ahead_roc_auc", ascending=False).reset_index(drop=True)


def processed_digests(frames: dict[str, pd.DataFrame]) -> set[str]:
    """MLflow dataset digests of the processed frames and of their union (what train and the refit log)."""
    union = pd.concat([frames["train"], frames["holdout"]], ignore_index=True)
    return {mlflow.data.from_pandas(frame, targets=TARGET).digest for frame in (*frames.values(), union)}


def version_trained_on(run: Run, digests: set[str]) -> bool:
    """Whether the version's run trained on these flights (etl's train part, or train + holdout for a refit)."""
    logged = {d.dataset.digest for d in (run.inputs.dataset_inputs if run.inputs else []) if d.dataset.name == "train"}
    return bool(logged & digests)


def describe_version(
    client: mlflow.MlflowClient, version: ModelVersion, text: str, figures: dict[str, float], run_id: str
) -> None:
    """Put the evaluation after the gate's part of the version's description, and its headline in tags."""
    gate = (version.description or "").split(EVALUATION_MARKER)[0]
    intro = (
        f"{EVALUATION_MARKER.strip()}{run_id}): the version's recipe refitted on each split's training part, "
        "against the challenge and seed reference models on the same flights. Backtest and forward are "
        "time-forward (what scoring future months meets); the day split is secondary.\n\n"
    )
    client.update_model_version(version.name, version.version, description=f"{gate}\n\n{intro}{text}".strip())
    client.set_model_version_tag(version.name, version.version, f"{VERSION_TAG_PREFIX}.run_id", run_id)
    for key, value in figures.items():
        client.set_model_version_tag(version.name, version.version, f"{VERSION_TAG_PREFIX}.{key}", f"{value:.4f}")


EVALUATE = config.DEFAULTS["evaluate"]


def run(
    processed_uri: str = EVALUATE["processed_uri"],
    model_name: str = EVALUATE["model_name"],
    search_trials: int = EVALUATE["search_trials"],
    seed: int = EVALUATE["seed"],
) -> EvaluateResult:
    """Score the three models on the backtest, forward and day splits; log the table and plots; describe Production."""
    processed_uri = processed_uri or str(config.datasets_dir() / "processed")
    with tracking.step_run("evaluate") as active:
        client = mlflow.MlflowClient()
        train, holdout = load_processed(processed_uri)
        flights = pd.concat([train, holdout], ignore_index=True)
        version = production_version(client, model_name)
        version_run = client.get_run(version.run_id) if version is not None and version.run_id else None
        if version is not None and (
            version_run is None
            or not version_trained_on(version_run, processed_digests({"train": train, "holdout": holdout}))
        ):
            logger.info("evaluate: Production version %s was trained on other data; not describing it", version.version)
            version = None
        recipe = recipe_of(version_run) if version is not None else Recipe()
        tracking.log_params(
            {"processed_uri": processed_uri, "model_name": model_name, "search_trials": search_trials, "seed": seed}
        )
        tracking.log_params({f"hyper.{k}": v for k, v in recipe.params().items()})
        rows, months = [], []
        for month, (train_part, test_part) in backtest_splits(flights).items():
            logger.info("backtest %s: %d training, %d test flights", month, len(train_part), len(test_part))
            months.append(score_split(train_part, test_part, recipe))
            rows += table_rows("backtest", month, months[-1])
            contribution = {
                f"backtest.{month}.model.{CONTRIBUTION_PREFIX}.{k}": v for k, v in months[-1].contributions.items()
            }
            mlflow.log_metrics(contribution)
        pooled = Scored.pool(months)
        rows += table_rows("backtest", POOLED, pooled)
        is_forward = forward_split(flights).to_numpy()
        in_day_holdout = split_by_day(flights, DAY_FRACTION, DAY_SEED).to_numpy()
        splits = {"backtest": pooled}
        for split, test_rows, period in (
            ("forward", is_forward, period_of(flights[is_forward])),
            ("day", in_day_holdout, "random days, secondary"),
        ):
            train_part, test_part = (
                flights[~test_rows].reset_index(drop=True),
                flights[test_rows].reset_index(drop=True),
            )
            logger.info("%s split: %d training, %d test flights", split, len(train_part), len(test_part))
            splits[split] = score_split(train_part, test_part, recipe)
            rows += table_rows(split, period, splits[split])
            contribution = splits[split].contributions.items()
            mlflow.log_metrics({f"{split}.model.{CONTRIBUTION_PREFIX}.{k}": v for k, v in contribution})
        for split, scored in splits.items():
            metrics.log_figure(
                metrics.reliability_figure(scored.target, scored.scores), f"plots/{split}/reliability.png"
            )
            metrics.log_figure(metrics.curves_figure(scored.target, scored.scores), f"plots/{split}/roc_pr_curves.png")
            figure = metrics.confusion_figure(scored.target, scored.scores["model"], scored.thresholds["model"])
            metrics.log_figure(figure, f"plots/{split}/confusion_model.png")
        table = pd.DataFrame(rows)
        metrics.log_figure(by_month_figure(table), "plots/backtest/by_month.png")
        unknown = unknown_figures(pooled)
        figures = headline(table, unknown)
        mlflow.log_metrics({f"{metric_prefix(r)}.{c}": float(r[c]) for _, r in table.iterrows() for c in TABLE_COLUMNS})
        mlflow.log_metrics(figures)
        text = format_table(table) + "\n\n" + summary(figures)
        mlflow.log_text(text, "evaluation.md")
        mlflow.log_table(table, "evaluation.json")
        if search_trials > 0:
            results = search(flights, recipe, search_trials, seed)
            mlflow.log_table(results, "search.json")
            mlflow.log_metric("search.best_month_ahead_roc_auc", float(results["month_ahead_roc_auc"].iloc[0]))
            text += f"\n\nHyper-parameter search (month ahead on the last {SEARCH_MONTHS} months):\n\n"
            text += results.to_string(index=False)
        run_id = active.info.run_id
        if version is not None:
            describe_version(client, version, format_table(table) + "\n\n" + summary(figures), figures, run_id)
            mlflow.set_tags({"described_model": model_name, "described_version": version.version})
    return EvaluateResult(run_id, table, text, None if version is None else str(version.version))


def summary(figures: dict[str, float]) -> str:
    """The headline in words: backtest mean and pooled, forward, the unseen-category flights."""
    lines = [
        f"Backtest, month ahead: mean ROC AUC {figures['backtest.mean.model.roc_auc']:.4f}; pooled ROC AUC "
        f"{figures['backtest.pooled.model.roc_auc']:.4f}, PR AUC {figures['backtest.pooled.model.pr_auc']:.4f}, "
        f"ECE {figures['backtest.pooled.model.ece']:.4f} (seed {figures['backtest.pooled.seed.roc_auc']:.4f}, "
        f"challenge {figures['backtest.pooled.challenge.roc_auc']:.4f}).",
        f"Forward: ROC AUC {figures['forward.model.roc_auc']:.4f}, ECE {figures['forward.model.ece']:.4f}.",
    ]
    rows = int(figures["backtest.unknown_categories.model.rows"])
    auc = figures.get("backtest.unknown_categories.model.roc_auc")
    lines.append(
        f"Flights with a category the training months never saw: {rows}, scored as unseen"
        + (f", ROC AUC {auc:.4f}." if auc is not None else ".")
    )
    return "\n".join(lines)


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
