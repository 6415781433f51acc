"""Fitting and calibration: features, booster, out-of-fold calibration and threshold; logging the pyfunc.

Threshold and calibration come from out-of-fold predictions over training days only (the folds
of ``skyprophet.science.splits.CALIBRATIONS``), so a holdout is never looked at.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import holidays
import mlflow
import numpy as np
import pandas as pd
import sklearn
import xgboost as xgb
from sklearn.isotonic import IsotonicRegression

from pyfunc import model as model_code
from pyfunc.explain import mean_absolute_contributions
from pyfunc.features import FEATURE_NAMES, FEATURE_TYPES, FeatureSpec, build_features, fit_feature_spec, origins_of
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
from skyprophet.mlops import tags, tracking
from skyprophet.science import metrics
from skyprophet.science.recipe import Recipe, check_objective
from skyprophet.science.splits import CALIBRATIONS, Folds

# objective minutes_late: minutes late, early flights as 0, capped at twice the delay line (recipe.OBJECTIVES).
MINUTES_LATE_CAP = 2 * DELAY_MINUTES
# Mean |contribution| per feature on scored flights: metrics ``contribution.<feature>`` (pyfunc.explain).
CONTRIBUTION_PREFIX = "contribution"
# The served model is logged from this file's code (models-from-code), never pickled.
MODEL_CODE = Path(model_code.__file__)


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


def fitting_label(train_raw: pd.DataFrame, objective: str) -> np.ndarray:
    """What the booster is fitted to: capped minutes late, or the 0/1 delay label (see recipe.OBJECTIVES)."""
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


def out_of_fold_scores(features: np.ndarray, label: np.ndarray, folds: Folds, recipe: Recipe) -> np.ndarray:
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
    dataset = mlflow.data.from_pandas(flights, source=lineage, name=tags.TRAIN_DATASET, targets=TARGET)
    tracking.log_input(dataset, context=tags.TRAIN_CONTEXT)


def log_model(fitted: FittedModel, flights: pd.DataFrame) -> str:
    """Log the pyfunc with an input example from ``flights`` and tag the run with it; the model URI."""
    example_columns = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in flights.columns]
    info = log_pyfunc(fitted, flights[example_columns].head(5))
    through = parse_scheduled_time(flights[SCHEDULED_TIME]).max()
    mlflow.set_tags({tags.MODEL_URI_TAG: info.model_uri, tags.TRAINED_THROUGH_TAG: tags.trained_through_value(through)})
    return info.model_uri


def log_fitted(flights: pd.DataFrame, recipe: Recipe, source: str) -> str:
    """Fit ``recipe`` on ``flights`` and log it in the active run (the gate's refit); the model URI."""
    tracking.log_params(recipe.params())
    log_training_flights(flights, source)
    fitted, cv_metrics = fit_model(flights, recipe)
    mlflow.log_metrics({f"cv_{k}": v for k, v in cv_metrics.items()})
    return log_model(fitted, flights)
