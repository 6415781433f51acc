"""The comparison evaluate makes: the project's model against the two reference models, split by split.

``backtest_splits`` cuts the month-ahead backtest (each of the file's last ``BACKTEST_MONTHS``
months scored by models fitted on every month before it); ``score_split`` fits the three models
(``MODELS``: the project's, the seed and the challenge baselines) on a split's training part and
scores its test part (``Scored``; flights with a category the training part never saw apart, as
unseen); ``table_rows`` / ``table_metrics`` / ``format_table`` / ``headline`` / ``summary`` turn the scores into the
table, its headline figures and words; ``log_plots`` logs each split's figures and the backtest's
month by month.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pyfunc.schema import TARGET, clean_flights, scorable
from skyprophet.science import baselines, metrics
from skyprophet.science.fit import fit_model
from skyprophet.science.recipe import Recipe
from skyprophet.science.splits import month_ahead, months_of

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


def table_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Every row's protocol metrics under its MLflow metric names (``metric_prefix``)."""
    return {f"{metric_prefix(r)}.{c}": float(r[c]) for _, r in table.iterrows() for c in TABLE_COLUMNS}


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


def log_plots(splits: dict[str, Scored], table: pd.DataFrame) -> None:
    """Each split's reliability, ROC / PR and confusion figures, and the backtest month by month."""
    for split, scored in splits.items():
        metrics.log_figure(metrics.reliability_figure(scored.target, scored.scores), f"plots/{split}/reliability.png")
        metrics.log_figure(metrics.curves_figure(scored.target, scored.scores), f"plots/{split}/roc_pr_curves.png")
        figure = metrics.confusion_figure(scored.target, scored.scores["model"], scored.thresholds["model"])
        metrics.log_figure(figure, f"plots/{split}/confusion_model.png")
    metrics.log_figure(by_month_figure(table), "plots/backtest/by_month.png")
