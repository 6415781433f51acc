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
The comparison, its table and figures are ``skyprophet.science.backtest``; the search
``skyprophet.science.search``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion

from pyfunc.schema import TARGET
from skyprophet import config
from skyprophet import params as step_params
from skyprophet.mlops import tracking
from skyprophet.mlops.registry import production_version
from skyprophet.params import EvaluateParams
from skyprophet.science import backtest
from skyprophet.science.fit import CONTRIBUTION_PREFIX
from skyprophet.science.recipe import Recipe, recipe_of
from skyprophet.science.search import SEARCH_MONTHS, search
from skyprophet.science.splits import forward_split, load_processed, period_of, split_by_day

logger = logging.getLogger("skyprophet.evaluate")
# The day split's share of days and seed (etl's defaults for split=day).
DAY_FRACTION, DAY_SEED = config.DEFAULTS["etl"]["holdout_fraction"], config.DEFAULTS["etl"]["split_seed"]
VERSION_TAG_PREFIX = "eval"
EVALUATION_MARKER = "\n\nEvaluation (run "


@dataclass
class EvaluateResult:
    """The run, the table (one row per split, period and model), its text and the version described, if any."""

    run_id: str
    table: pd.DataFrame
    text: str
    version: str | None


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


def run(params: EvaluateParams = EvaluateParams()) -> EvaluateResult:
    """Score the three models on the backtest, forward and day splits; log the table and plots; describe Production."""
    processed_uri = params.processed_uri or str(config.datasets_dir() / "processed")
    model_name = params.model_name
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
        tracking.log_step_params(params, processed_uri=processed_uri)
        tracking.log_params({f"hyper.{k}": v for k, v in recipe.params().items()})
        rows, months = [], []
        for month, (train_part, test_part) in backtest.backtest_splits(flights).items():
            logger.info("backtest %s: %d training, %d test flights", month, len(train_part), len(test_part))
            months.append(backtest.score_split(train_part, test_part, recipe))
            rows += backtest.table_rows("backtest", month, months[-1])
            contribution = {
                f"backtest.{month}.model.{CONTRIBUTION_PREFIX}.{k}": v for k, v in months[-1].contributions.items()
            }
            mlflow.log_metrics(contribution)
        pooled = backtest.Scored.pool(months)
        rows += backtest.table_rows("backtest", backtest.POOLED, pooled)
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
            splits[split] = backtest.score_split(train_part, test_part, recipe)
            rows += backtest.table_rows(split, period, splits[split])
            contribution = splits[split].contributions.items()
            mlflow.log_metrics({f"{split}.model.{CONTRIBUTION_PREFIX}.{k}": v for k, v in contribution})
        table = pd.DataFrame(rows)
        backtest.log_plots(splits, table)
        unknown = backtest.unknown_figures(pooled)
        figures = backtest.headline(table, unknown)
        mlflow.log_metrics(backtest.table_metrics(table))
        mlflow.log_metrics(figures)
        evaluation = backtest.format_table(table) + "\n\n" + backtest.summary(figures)
        text = evaluation
        mlflow.log_text(text, "evaluation.md")
        mlflow.log_table(table, "evaluation.json")
        if params.search_trials > 0:
            results = search(flights, recipe, params.search_trials, params.seed)
            mlflow.log_table(results, "search.json")
            mlflow.log_metric("search.best_month_ahead_roc_auc", float(results["month_ahead_roc_auc"].iloc[0]))
            text += f"\n\nHyper-parameter search (month ahead on the last {SEARCH_MONTHS} months):\n\n"
            text += results.to_string(index=False)
        run_id = active.info.run_id
        if version is not None:
            describe_version(client, version, evaluation, figures, run_id)
            mlflow.set_tags({"described_model": model_name, "described_version": version.version})
    return EvaluateResult(run_id, table, text, None if version is None else str(version.version))


def main() -> None:
    """CLI: ``python -m steps.evaluate --processed-uri ... [--search-trials N]``; prints the table."""
    args = config.argument_parser("evaluate", __doc__).parse_args()
    tracking.setup_logging()
    result = run(step_params.parse("evaluate", vars(args)))
    sys.stdout.write(result.text + "\n")
    where = f"model version {result.version}" if result.version else "no Production version (other data or none)"
    sys.stdout.write(f"\nrun {result.run_id}; table written to {where}\n")


if __name__ == "__main__":
    main()
