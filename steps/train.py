"""train: processed train / holdout flights -> calibrated XGBoost pyfunc logged to MLflow.

Reads: ``<processed_uri>/{train,holdout}.parquet`` (a folder or a ``runs:/`` URI from etl).
Writes: the ``model`` pyfunc (booster in XGBoost's UBJ format + JSON spec), holdout metrics,
plots (confusion matrix, ROC/PR, reliability, feature importance, mean |contribution| per feature
on up to 2,000 holdout flights as ``plots/contributions.png`` and metrics ``contribution.<feature>``)
and the datasets' lineage.
The science is ``skyprophet.science`` (recipe, splits, fit); threshold and calibration come from
out-of-fold predictions over training days only.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import mlflow

from pyfunc.explain import MARGIN_UNITS, objective_of
from pyfunc.schema import TARGET, clean_flights, scorable
from skyprophet import config
from skyprophet import params as step_params
from skyprophet.mlops import tracking
from skyprophet.mlops.tags import HOLDOUT_URI_TAG, TRAIN_DATASET
from skyprophet.mlops.tracking import artifact_location
from skyprophet.params import TrainParams
from skyprophet.science import metrics
from skyprophet.science.fit import CONTRIBUTION_PREFIX, fit_model, log_model, log_training_flights
from skyprophet.science.recipe import INPUTS, Recipe
from skyprophet.science.splits import load_processed

logger = logging.getLogger("skyprophet.train")


@dataclass
class TrainResult:
    """The run, the logged model's URI and the holdout metrics."""

    run_id: str
    model_uri: str
    metrics: dict[str, float]


def run(params: TrainParams = TrainParams()) -> TrainResult:
    """Fit, evaluate on the holdout and log the model inside one MLflow run."""
    processed_uri = params.processed_uri or str(config.datasets_dir() / "processed")
    recipe = Recipe.of({k: v for k, v in dataclasses.asdict(params).items() if k not in INPUTS})
    recipe.check()
    with tracking.step_run("train") as active:
        tracking.log_step_params(params, processed_uri=processed_uri)
        train_raw, holdout_raw = load_processed(processed_uri)
        log_training_flights(train_raw, artifact_location(f"{processed_uri}/{TRAIN_DATASET}.parquet"))
        holdout_source = tracking.dataset_source(artifact_location(f"{processed_uri}/holdout.parquet"))
        holdout_dataset = mlflow.data.from_pandas(holdout_raw, source=holdout_source, name="holdout", targets=TARGET)
        tracking.log_input(holdout_dataset, context="evaluation")
        logger.info("fit: %d flights, %d folds", len(train_raw), recipe.cv_folds)
        fitted, cv_metrics = fit_model(train_raw, recipe)
        mlflow.log_metrics({f"cv_{k}": v for k, v in cv_metrics.items()})
        logger.info("evaluate: holdout of %d flights", len(holdout_raw))
        clean = clean_flights(holdout_raw)
        known = scorable(clean, fitted.spec.features.vocabulary)
        clean, target = clean[known].reset_index(drop=True), holdout_raw[TARGET].to_numpy()[known]
        probability = fitted.predict_clean(clean)
        holdout_metrics = metrics.classification_metrics(target, probability, fitted.spec.threshold)
        mlflow.log_metrics({f"holdout_{k}": v for k, v in holdout_metrics.items()})
        mlflow.log_metric("holdout_unscorable_rows", int((~known).sum()))
        metrics.log_figure(
            metrics.confusion_figure(target, probability, fitted.spec.threshold), "plots/confusion_matrix.png"
        )
        metrics.log_figure(metrics.curves_figure(target, {"model": probability}), "plots/roc_pr_curves.png")
        metrics.log_figure(metrics.reliability_figure(target, {"model": probability}), "plots/reliability.png")
        importance = fitted.booster.get_score(importance_type="total_gain")
        metrics.log_figure(metrics.importance_figure(importance), "plots/feature_importance.png")
        contribution = fitted.mean_contributions(clean)
        mlflow.log_metrics({f"{CONTRIBUTION_PREFIX}.{k}": v for k, v in contribution.items()})
        unit = MARGIN_UNITS[objective_of(fitted.booster)]
        metrics.log_figure(metrics.contributions_figure(contribution, unit), "plots/contributions.png")
        logger.info(
            "log model: holdout ROC AUC %.4f, PR AUC %.4f", holdout_metrics["roc_auc"], holdout_metrics["pr_auc"]
        )
        model_uri = log_model(fitted, train_raw)
        mlflow.set_tag(HOLDOUT_URI_TAG, f"{processed_uri}/holdout.parquet")
        run_id = active.info.run_id
    return TrainResult(run_id, model_uri, holdout_metrics)


def main() -> None:
    """CLI: ``python -m steps.train --processed-uri ... --n-estimators ...``."""
    args = config.argument_parser("train", __doc__).parse_args()
    tracking.setup_logging()
    result = run(step_params.parse("train", vars(args)))
    logger.info("done: run %s, model %s, holdout %s", result.run_id, result.model_uri, result.metrics)


if __name__ == "__main__":
    main()
