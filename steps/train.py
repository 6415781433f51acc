"""train: processed train / holdout flights -> calibrated XGBoost pyfunc logged to MLflow.

Reads: ``<processed_uri>/{train,holdout}.parquet`` (a folder or a ``runs:/`` URI from etl).
Writes: the ``model`` pyfunc (booster in XGBoost's UBJ format + JSON spec), holdout metrics,
plots (confusion matrix, ROC/PR, reliability, feature importance, mean |contribution| per feature
on up to 2,000 holdout flights as ``plots/contributions.png`` and metrics ``contribution.<feature>``)
and the datasets' lineage.
Threshold and calibration come from out-of-fold predictions over training days only.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlparse

import holidays
import mlflow
import numpy as np
import pandas as pd
import sklearn
import xgboost as xgb
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import GroupKFold

from pyfunc import model as model_code
from pyfunc.explain import MARGIN_UNITS, mean_absolute_contributions, objective_of
from pyfunc.features import (
    FEATURE_NAMES,
    FEATURE_TYPES,
    FeatureSpec,
    build_features,
    fit_feature_spec,
    origins_of,
    resolve_country,
)
from pyfunc.model import BOOSTER_ARTIFACT, SPEC_ARTIFACT, ModelSpec
from pyfunc.schema import (
    DELAY_MINUTES,
    OPERATED_TIME,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SCHEDULED_TIME,
    TARGET,
    clean_flights,
    minutes_late,
    model_signature,
    parse_scheduled_time,
    scorable,
)
from skyprophet import config
from skyprophet.mlops import tracking
from skyprophet.science import metrics

logger = logging.getLogger("skyprophet.train")
MODEL_URI_TAG = "skyprophet.model_uri"
HOLDOUT_URI_TAG = "skyprophet.holdout_uri"
# The last scheduled time among a model's training flights (the gate asks whether it saw the holdout).
TRAINED_THROUGH_TAG = "skyprophet.trained_through"
# What the booster is fitted to (train's ``objective``); calibration turns either into P(delay).
#   minutes_late: squared error on minutes late, early flights as 0 and capped at twice the delay
#     line. A flight 14 minutes late teaches nearly what one 16 minutes late does, where the 0/1
#     label calls them opposites: day-grouped CV ROC / PR AUC 0.709 / 0.370 -> 0.712 / 0.377 on SCL.
#   delayed: logistic loss on the 0/1 label, the positive class weighted by ``scale_pos_weight``.
OBJECTIVES = ("minutes_late", "delayed")
MINUTES_LATE_CAP = 2 * DELAY_MINUTES
# Name and context of the training flights train logs as a run input (monitor's drift reference).
TRAIN_DATASET, TRAIN_CONTEXT = "train", "training"
# Mean |contribution| per feature on the holdout: metrics ``contribution.<feature>`` (pyfunc.explain).
CONTRIBUTION_PREFIX = "contribution"
# The served model is logged from this file's code (models-from-code), never pickled.
MODEL_CODE = Path(model_code.__file__)


class MissingInputError(FileNotFoundError):
    """A step's input is not there; the message says which step to run first."""


_TRAIN = config.DEFAULTS["train"]


@dataclass(frozen=True)
class Recipe:
    """How a model is fitted: train's parameters but its input, defaulted from ``config.DEFAULTS["train"]``.

    Built with ``Recipe.of``/``replace``, which refuse a key that is not a parameter, naming it
    (a misspelt key would otherwise fit today's default without a word). ``scale_pos_weight`` is
    None where the objective ignores it (``effective``).
    """

    country: str = _TRAIN["country"]
    objective: str = _TRAIN["objective"]
    calibration: str = _TRAIN["calibration"]
    n_estimators: int = _TRAIN["n_estimators"]
    learning_rate: float = _TRAIN["learning_rate"]
    max_depth: int = _TRAIN["max_depth"]
    min_child_weight: float = _TRAIN["min_child_weight"]
    subsample: float = _TRAIN["subsample"]
    colsample_bytree: float = _TRAIN["colsample_bytree"]
    scale_pos_weight: float | None = _TRAIN["scale_pos_weight"]
    cv_folds: int = _TRAIN["cv_folds"]
    seed: int = _TRAIN["seed"]

    @classmethod
    def of(cls, values: Mapping[str, object] | None = None, **changes: object) -> Recipe:
        """Today's defaults with ``values`` and ``changes``; an unknown key is a ValueError naming it."""
        return cls().replace(**{**(values or {}), **changes})

    def replace(self, **changes: object) -> Recipe:
        """The recipe with ``changes``; an unknown key is a ValueError naming it and the known ones."""
        known = [f.name for f in fields(self)]
        if unknown := sorted(set(changes) - set(known)):
            raise ValueError(f"not a recipe parameter: {', '.join(unknown)} (the parameters: {', '.join(known)})")
        return dataclasses.replace(self, **changes)

    def params(self) -> dict[str, object]:
        """The recipe as MLflow parameters (what ``recipe_of`` reads back)."""
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Refuse an unknown ``objective``, ``calibration`` or ``country`` before any run starts (train and main)."""
        check_objective(self.objective)
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}")
        resolve_country(self.country, None)

    def effective(self) -> Recipe:
        """The recipe with what its objective ignores set to None (``scale_pos_weight`` unless ``delayed``).

        So a search does not fit the same recipe twice, and its table shows no value that did nothing.
        """
        return dataclasses.replace(
            self, scale_pos_weight=self.scale_pos_weight if self.objective == "delayed" else None
        )


@dataclass
class TrainResult:
    """The run, the logged model's URI and the holdout metrics."""

    run_id: str
    model_uri: str
    metrics: dict[str, float]


@dataclass
class FittedModel:
    """A booster with its feature spec, calibration and threshold, before logging."""

    booster: xgb.Booster
    spec: ModelSpec

    def predict_clean(self, clean: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities for validated flights."""
        return self.spec.calibrate(self.booster.inplace_predict(build_features(clean, self.spec.features)))

    def scores(self, flights: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities of raw flights, NaN for a flight it cannot score (a category it never saw)."""
        clean = clean_flights(flights)
        known = scorable(clean, self.spec.features.vocabulary)
        probability = np.full(len(flights), np.nan)
        probability[known] = self.predict_clean(clean[known].reset_index(drop=True))
        return probability

    def mean_contributions(self, clean: pd.DataFrame) -> dict[str, float]:
        """Mean |contribution| per feature (booster margin) over validated flights: what drives the model."""
        return mean_absolute_contributions(self.booster, build_features(clean, self.spec.features))


def resolve_local(uri: str) -> Path:
    """A local path for ``uri``: downloaded when it is a ``runs:/``, ``models:/`` or remote URI."""
    if urlparse(uri).scheme in ("", "file") and not uri.startswith("file:"):
        return Path(uri)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))


def artifact_location(uri: str) -> str:
    """``runs:/<id>/<path>`` as the artifact store's own URI (what dataset lineage can record)."""
    if not uri.startswith("runs:/"):
        return uri
    run_id, _, path = uri[len("runs:/") :].partition("/")
    return f"{mlflow.MlflowClient().get_run(run_id).info.artifact_uri}/{path}"


def load_processed(processed_uri: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The etl step's train and holdout flights."""
    try:
        folder = resolve_local(processed_uri)
    except mlflow.exceptions.MlflowException as err:
        raise MissingInputError(
            f"cannot read processed data at {processed_uri}: run `mlflow run . -e etl` first"
        ) from err
    paths = [folder / "train.parquet", folder / "holdout.parquet"]
    if not all(p.is_file() for p in paths):
        raise MissingInputError(f"no train/holdout parquet under {processed_uri}: run `mlflow run . -e etl` first")
    return pd.read_parquet(paths[0]), pd.read_parquet(paths[1])


def check_objective(objective: str) -> None:
    """Refuse an ``objective`` train does not know, naming the ones it does."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")


# What train did before these parameters existed (runs of then did not log them).
HYPER_BEFORE_IT_EXISTED = {"objective": "delayed", "country": "none", "calibration": "days"}


def recipe_of(run: mlflow.entities.Run) -> Recipe:
    """The hyper-parameters a train run used (so evaluate and the gate refit the same recipe).

    A parameter the run did not log takes the value train used before it existed, not today's
    default: a version trained before ``objective`` existed was a logistic classifier.
    """
    # What the step resolved wins over what `mlflow run` logged: it logs an empty -P value as "''".
    resolved = {k.removeprefix("resolved."): v for k, v in run.data.tags.items() if k.startswith("resolved.")}
    params = {**run.data.params, **resolved}
    recipe = {**Recipe().params(), **HYPER_BEFORE_IT_EXISTED}

    def typed(value: str, default: object) -> object:
        return value if isinstance(default, str) else type(default)(float(value))

    return Recipe.of({k: typed(params[k], default) if k in params else default for k, default in recipe.items()})


def fitting_label(train_raw: pd.DataFrame, objective: str) -> np.ndarray:
    """What the booster is fitted to: capped minutes late, or the 0/1 delay label (see OBJECTIVES)."""
    check_objective(objective)
    if objective == "delayed":
        return train_raw[TARGET].to_numpy()
    minutes = minutes_late(train_raw)
    if missing := int(minutes.isna().sum()):
        raise ValueError(f"{missing} training flights have no parsable {OPERATED_TIME}: run etl on them first")
    return minutes.clip(0, MINUTES_LATE_CAP).to_numpy()


def booster_params(recipe: Recipe) -> dict:
    """XGBoost parameters from the step's hyper-parameters (the objective was checked by ``fitting_label``)."""
    if recipe.objective == "delayed":
        loss = {"objective": "binary:logistic", "eval_metric": "logloss", "scale_pos_weight": recipe.scale_pos_weight}
    else:
        loss = {"objective": "reg:squarederror", "eval_metric": "rmse"}
    return {
        **loss,
        "tree_method": "hist",
        "max_cat_to_onehot": 1,
        "eta": recipe.learning_rate,
        "max_depth": recipe.max_depth,
        "min_child_weight": recipe.min_child_weight,
        "subsample": recipe.subsample,
        "colsample_bytree": recipe.colsample_bytree,
        "seed": recipe.seed,
        "nthread": 2,
    }


def fit_booster(features: np.ndarray, label: np.ndarray, recipe: Recipe) -> xgb.Booster:
    """One XGBoost fit to ``label`` (see ``fitting_label``) with categorical codes marked as such."""
    matrix = xgb.DMatrix(
        features,
        label=label,
        feature_names=list(FEATURE_NAMES),
        feature_types=list(FEATURE_TYPES),
        enable_categorical=True,
    )
    return xgb.train(booster_params(recipe), matrix, num_boost_round=recipe.n_estimators)


Folds = list[tuple[np.ndarray, np.ndarray]]


def month_ahead_folds(times: pd.Series, months: int) -> Folds:
    """For each of the last ``months`` calendar months (never the first): (rows before it, its rows)."""
    month = times.dt.to_period("M")
    chosen = sorted(month.unique())[1:][-months:]
    return [(np.flatnonzero(month < m), np.flatnonzero(month == m)) for m in chosen]


def forward_folds(times: pd.Series, blocks: int) -> Folds:
    """The latest half of the training days in ``blocks`` consecutive groups, each after all days before it.

    Each group is scored by a booster that saw only earlier days, as a future month is: what the
    calibration and the threshold are fitted on, so they hold on months the model has not seen.
    """
    days = times.dt.normalize().to_numpy()
    unique = np.unique(days)
    if len(unique) < 2:
        raise ValueError("forward calibration needs flights on at least two days: use calibration=days")
    latest = unique[len(unique) // 2 :]
    groups = [g for g in np.array_split(latest, min(blocks, len(latest))) if len(g)]
    return [(np.flatnonzero(days < g[0]), np.flatnonzero((days >= g[0]) & (days <= g[-1]))) for g in groups]


def day_folds(times: pd.Series, blocks: int) -> Folds:
    """Day-grouped folds: whole calendar days drawn into ``blocks`` folds, a day's flights on one side."""
    days = times.dt.normalize().to_numpy()
    return list(GroupKFold(n_splits=blocks).split(days, days, days))


# How the out-of-fold scores that fit the calibration and threshold are made (train's ``calibration``):
#   forward: the latest half of the training days, each block scored by a booster fitted on the days
#     before it, so the calibration is the one a future month meets;
#   days: day-grouped folds over all training days (the former default; it lets the calibration
#     see neighbouring days' weather, which future months do not offer).
CALIBRATIONS = {"forward": forward_folds, "days": day_folds}


def training_features(train_raw: pd.DataFrame, recipe: Recipe) -> tuple[np.ndarray, np.ndarray, FeatureSpec, Folds]:
    """Features, targets, feature spec and the calibration folds of the training flights."""
    clean = clean_flights(train_raw)
    target = train_raw[TARGET].to_numpy()
    feature_spec = fit_feature_spec(clean, origins_of(train_raw), recipe.country)
    features = build_features(clean, feature_spec)
    folds = CALIBRATIONS[recipe.calibration](clean[SCHEDULED_TIME], recipe.cv_folds)
    return features, target, feature_spec, folds


def centred_isotonic(scores: np.ndarray, target: np.ndarray) -> tuple[list[float], list[float]]:
    """Calibration curve: isotonic regression with each flat step replaced by its centre point.

    Plain isotonic maps whole score ranges to one value, so thousands of flights tie and the
    ranking the booster learned is lost (holdout PR AUC 0.427 against 0.437 raw on SCL 2017).
    Interpolating between the centres of the steps (mean score of each step's flights, step's
    rate) keeps the same calibration but is strictly increasing, so the ranking survives.
    """
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, target)
    order = np.argsort(scores, kind="stable")
    ordered_scores, fitted = scores[order], isotonic.predict(scores[order])
    starts = np.r_[True, fitted[1:] != fitted[:-1]]
    step = np.cumsum(starts) - 1
    centres = np.bincount(step, weights=ordered_scores) / np.bincount(step)
    return centres.tolist(), fitted[starts].tolist()


def out_of_fold_scores(
    features: np.ndarray, label: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], recipe: Recipe
) -> np.ndarray:
    """Raw booster scores of each flight from a booster fitted without its fold."""
    scores = np.zeros(len(label))
    for fit_rows, score_rows in folds:
        booster = fit_booster(features[fit_rows], label[fit_rows], recipe)
        scores[score_rows] = booster.inplace_predict(features[score_rows])
    return scores


def fit_model(train_raw: pd.DataFrame, recipe: Recipe) -> tuple[FittedModel, dict[str, float]]:
    """Fit features, booster, centred isotonic calibration and threshold; returns also the CV metrics.

    Out-of-fold scores of the training flights (see CALIBRATIONS) fit the calibration and the
    threshold, so the holdout is never looked at; the CV metrics are on those flights.
    """
    features, target, feature_spec, folds = training_features(train_raw, recipe)
    label = fitting_label(train_raw, recipe.objective)
    scored = np.concatenate([rows for _, rows in folds])
    out_of_fold = out_of_fold_scores(features, label, folds, recipe)[scored]
    calibration_x, calibration_y = centred_isotonic(out_of_fold, target[scored])
    calibrated = np.interp(out_of_fold, calibration_x, calibration_y)
    threshold = metrics.best_f1_threshold(target[scored], calibrated)
    spec = ModelSpec(feature_spec, calibration_x, calibration_y, threshold)
    cv_metrics = metrics.classification_metrics(target[scored], calibrated, threshold)
    return FittedModel(fit_booster(features, label, recipe), spec), cv_metrics


SERVING_REQUIREMENTS = tuple(f"{name}=={version(name)}" for name in ("uvloop", "httptools"))


def log_pyfunc(fitted: FittedModel, input_example: pd.DataFrame) -> mlflow.models.model.ModelInfo:
    """Log the pyfunc with its artifacts, code, signature, input example and pinned requirements."""
    with tempfile.TemporaryDirectory() as tmp:
        booster_path, spec_path = Path(tmp) / "booster.ubj", Path(tmp) / "spec.json"
        fitted.booster.save_model(booster_path)
        fitted.spec.save(str(spec_path))
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={BOOSTER_ARTIFACT: str(booster_path), SPEC_ARTIFACT: str(spec_path)},
            code_paths=[str(config.PROJECT_ROOT / "pyfunc")],
            signature=model_signature(),
            input_example=input_example,
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"xgboost=={xgb.__version__}",
                f"pandas=={pd.__version__}",
                f"numpy=={np.__version__}",
                f"scikit-learn=={sklearn.__version__}",
                f"holidays=={holidays.__version__}",
                # uvicorn's event loop and HTTP parser in the served image (`mlflow models build-docker`
                # installs these requirements; MLflow brings uvicorn without them). Without uvloop
                # uvicorn's workers use asyncio's loop, which with --workers N (MLFLOW_MODELS_WORKERS)
                # leaves TCP_NODELAY off on accepted sockets: about 40 ms per keep-alive request
                # (uvicorn issue 3149).
                *SERVING_REQUIREMENTS,
            ],
        )


def log_training_flights(flights: pd.DataFrame, source: str) -> None:
    """The model's training flights as the run's ``train`` input (monitor's drift reference)."""
    lineage = tracking.dataset_source(source)
    dataset = mlflow.data.from_pandas(flights, source=lineage, name=TRAIN_DATASET, targets=TARGET)
    tracking.log_input(dataset, context=TRAIN_CONTEXT)


def log_model(fitted: FittedModel, flights: pd.DataFrame) -> str:
    """Log the pyfunc with an input example from ``flights`` and tag the run with it; the model URI."""
    example_columns = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in flights.columns]
    info = log_pyfunc(fitted, flights[example_columns].head(5))
    through = parse_scheduled_time(flights[SCHEDULED_TIME]).max()
    mlflow.set_tags({MODEL_URI_TAG: info.model_uri, TRAINED_THROUGH_TAG: f"{through:%Y-%m-%d %H:%M:%S}"})
    return info.model_uri


def log_fitted(flights: pd.DataFrame, recipe: Recipe, source: str) -> str:
    """Fit ``recipe`` on ``flights`` and log it in the active run (the gate's refit); the model URI."""
    tracking.log_params(recipe.params())
    log_training_flights(flights, source)
    fitted, cv_metrics = fit_model(flights, recipe)
    mlflow.log_metrics({f"cv_{k}": v for k, v in cv_metrics.items()})
    return log_model(fitted, flights)


def run(processed_uri: str = "", **recipe_values: object) -> TrainResult:
    """Fit, evaluate on the holdout and log the model inside one MLflow run."""
    processed_uri = processed_uri or str(config.datasets_dir() / "processed")
    recipe = Recipe.of(recipe_values)
    recipe.check()
    with tracking.step_run("train") as active:
        tracking.log_params({"processed_uri": processed_uri, **recipe.params()})
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
    result = run(**vars(args))
    logger.info("done: run %s, model %s, holdout %s", result.run_id, result.model_uri, result.metrics)


if __name__ == "__main__":
    main()
