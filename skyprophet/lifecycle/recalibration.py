"""The delay-rate correction: Production's booster with its calibration's intercept shifted, as a new version.

A delay rate that moves (holidays, winter, a strike) makes every probability wrong by about the
same amount in logit space while the ranking stays good. From the flown flights of the last
``days`` days (``Fecha-O`` given; only flights after the booster's training flights, which it has
not learned), each weighted by its recency (halved every ``half_life`` days; 0: equal weights),
the intercept shift s is solved (1-D root find) so that the weighted mean of
sigmoid(logit(p) + s) equals their weighted realized delay rate, p being the uncorrected
calibrated probability of the booster. The shift replaces any earlier one (corrections never compound).

The correction is logged as a model in a ``recalibrate`` run (same booster, spec with
``intercept_shift``; the decision threshold moved by the same shift, so the 0/1 ``delay`` answer
is unchanged), registered (``registration.register``: the gate on the window's flights, alias
``staging``) and checked (``promotion.promote``: served, smoke, contract, load, quality) like any
other version. Nothing is registered when fewer than ``min_flights`` flights qualify or the
serving version's (weighted) mean is within ``tolerance`` of the (weighted) realized rate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from scipy.optimize import brentq

from pyfunc.model import SHIFT_CLIP, ModelSpec
from pyfunc.schema import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, TARGET
from skyprophet.lifecycle.promotion import promote
from skyprophet.lifecycle.registration import register
from skyprophet.mlops import tracking
from skyprophet.mlops.registry import require_production, version_uri
from skyprophet.mlops.tags import CALIBRATED_THROUGH_TAG, CORRECTS_TAG, MODEL_URI_TAG, SHIFT_TAG, TRAINED_THROUGH_TAG
from skyprophet.monitoring import flights, realized, reference
from skyprophet.params import LOAD_CHECK, PromoteParams, RecalibrateParams, RegisterParams
from skyprophet.science.fit import FittedModel, log_pyfunc

logger = logging.getLogger("skyprophet.recalibrate")


WINDOW_FOLDER = "window"
# What the recalibrate run logs as its parameters (promote's load check is promote's to log).
LOGGED = ("data", "model_name", "days", "min_flights", "tolerance", "half_life", "promote")


# The shift is searched in [-MAX_SHIFT, MAX_SHIFT] (logit units; 10 turns 0.2 into 0.9999).
MAX_SHIFT = 10.0


TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass
class RecalibrateResult:
    """What happened: the version registered (or "" when nothing was corrected), the shift and why."""

    model_name: str
    corrects_version: str
    version: str
    shift: float
    window_flights: int
    realized_rate: float
    mean_before: float
    mean_after: float
    promoted: bool
    reason: str


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) with p kept SHIFT_CLIP away from 0 and 1, as ModelSpec.calibrate does."""
    p = np.clip(np.asarray(p, dtype=float), SHIFT_CLIP, 1 - SHIFT_CLIP)
    return np.log(p / (1 - p))


def shifted(p: np.ndarray, shift: float) -> np.ndarray:
    """sigmoid(logit(p) + shift)."""
    return 1.0 / (1.0 + np.exp(-(logit(p) + shift)))


def solve_shift(p: np.ndarray, rate: float, weights: np.ndarray | None = None) -> float:
    """The logit shift s with mean(sigmoid(logit(p) + s)) == rate, weighted by ``weights`` (monotone in s: one root)."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"realized delay rate {rate} leaves no shift to solve: it must be strictly between 0 and 1")
    w = np.full(len(p), 1.0 / len(p)) if weights is None else weights / weights.sum()
    return float(brentq(lambda s: w @ shifted(p, s) - rate, -MAX_SHIFT, MAX_SHIFT, xtol=1e-10))


def recency_weights(times: pd.Series, half_life: float) -> np.ndarray:
    """Each flown flight's weight: halved every ``half_life`` days before the end of the last flown day (0: all 1).

    A delay rate that moves within days (July 2017: 0.11 on its first two days, 0.44 mid-month) is
    followed sooner by recent days than by a flat window, without the noise of a short one.
    """
    times = pd.to_datetime(times)
    if not half_life:
        return np.ones(len(times))
    end = times.max().normalize() + pd.Timedelta(days=1)
    age = ((end - times).dt.total_seconds() / 86400).to_numpy()
    return 0.5 ** (age / half_life)


def base_model(version: mlflow.entities.model_registry.ModelVersion) -> tuple[xgb.Booster, ModelSpec]:
    """The version's booster and spec as logged (``artifacts/booster.ubj``, ``artifacts/spec.json``)."""
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=version_uri(version.name, version.version)))
    spec = ModelSpec.load(str(folder / "artifacts" / "spec.json"))
    return xgb.Booster(model_file=str(folder / "artifacts" / "booster.ubj")), spec


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """No run inherited from ``mlflow run`` (MLFLOW_RUN_ID) while the next steps start their own runs."""
    saved = {k: os.environ.pop(k) for k in ("MLFLOW_RUN_ID",) if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def window_of(outcomes: pd.DataFrame, days: int, after: pd.Timestamp | None) -> np.ndarray:
    """Flown flights of the last ``days`` days before the latest one, and after ``after`` (the booster's flights)."""
    times = pd.to_datetime(outcomes["time"])
    keep = times >= times.max().normalize() - pd.Timedelta(days=days - 1)
    if after is not None:
        keep &= times > after
    return keep.to_numpy()


def recalibrate(params: RecalibrateParams = RecalibrateParams()) -> RecalibrateResult:
    """Solve the shift on the flown window, log, register and promote the corrected version."""
    data, model_name, days, half_life = params.data, params.model_name, params.days, params.half_life
    min_flights, tolerance = params.min_flights, params.tolerance
    if days < 1 or half_life < 0:
        raise ValueError(f"days must be at least 1 and half_life at least 0, got {days} and {half_life}")
    with tempfile.TemporaryDirectory(prefix="recalibrate-") as tmp:
        raw = flights.read_flights(data, Path(tmp))
        flights.clean_new_flights(raw, data)  # the schedule's columns, named when wrong
        try:
            outcomes = realized.flown_outcomes(raw)
        except realized.NotFlownError as err:
            raise flights.BadFlightsError(f"{data}: {err}") from err
        client = mlflow.MlflowClient()
        production = require_production(client, model_name)
        base = realized.gate_reference(client, production)
        through = production.tags.get(TRAINED_THROUGH_TAG)
        after = pd.Timestamp(through) if through else None
        in_window = window_of(outcomes, days, after)
        booster, spec = base_model(base)
        plain = dataclasses.replace(spec, intercept_shift=0.0)
        rows = raw.iloc[outcomes.loc[in_window, "row"].to_numpy()].reset_index(drop=True)
        p0 = FittedModel(booster, plain).scores(rows) if len(rows) else np.array([])
        known = ~np.isnan(p0)
        y = outcomes.loc[in_window, "y"].to_numpy()[known]
        p0 = p0[known]
        w = recency_weights(outcomes.loc[in_window, "time"][known], half_life) if len(y) else np.array([])
        w = w / w.sum() if len(w) else w
        serving_shift = float(production.tags.get(SHIFT_TAG, "0") or 0)
        result = RecalibrateResult(
            model_name, str(base.version), "", serving_shift, int(len(y)), 0.0, 0.0, 0.0, False, ""
        )
        if len(y) < min_flights:
            result.reason = (
                f"{len(y)} flown flights in the last {days} days after the booster's training flights "
                f"(after {through}): fewer than min_flights {min_flights}; nothing corrected"
            )
            logger.info("recalibrate: %s", result.reason)
            return result
        result.realized_rate = float(w @ y)
        result.mean_before = float(w @ shifted(p0, serving_shift)) if serving_shift else float(w @ p0)
        if abs(result.mean_before - result.realized_rate) <= tolerance:
            result.reason = (
                f"version {production.version}'s mean {result.mean_before:.4f} is within tolerance {tolerance} "
                f"of the realized rate {result.realized_rate:.4f}; nothing corrected"
            )
            logger.info("recalibrate: %s", result.reason)
            return result
        shift = solve_shift(p0, result.realized_rate, w)
        result.shift, result.mean_after = shift, float(w @ shifted(p0, shift))
        window_end = pd.to_datetime(outcomes.loc[in_window, "time"]).max()
        corrected = dataclasses.replace(
            spec,
            intercept_shift=shift,
            threshold=float(shifted(np.array([spec.threshold]), shift - spec.intercept_shift)[0]),
        )
        tags = {
            TRAINED_THROUGH_TAG: through or "",
            CALIBRATED_THROUGH_TAG: f"{window_end:{TIME_FORMAT}}",
            SHIFT_TAG: f"{shift:.6f}",
            CORRECTS_TAG: str(base.version),
        }
        window = rows[known].assign(**{TARGET: y})
        with detached(), tracking.step_run("recalibrate") as active:
            tracking.log_step_params(params, only=LOGGED)
            mlflow.log_metrics(
                {
                    "window_flights": len(y),
                    "window_delay_rate": result.realized_rate,
                    "window_mean_predicted_before": result.mean_before,
                    "window_mean_predicted_after": result.mean_after,
                    "intercept_shift": shift,
                }
            )
            # The booster's training flights stay the drift reference of the corrected version (monitor).
            client.log_inputs(active.info.run_id, [reference.reference_input(client, base.run_id)])
            folder = Path(tmp) / WINDOW_FOLDER
            folder.mkdir()
            for name in ("holdout", "train"):  # register's gate reads a processed folder
                window.to_parquet(folder / f"{name}.parquet", index=False)
            mlflow.log_artifacts(str(folder), WINDOW_FOLDER)
            example = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in window.columns]
            info = log_pyfunc(FittedModel(booster, corrected), window[example].head(5))
            mlflow.set_tags({**tags, MODEL_URI_TAG: info.model_uri})
            run_id = active.info.run_id
        logger.info(
            "recalibrate: v%s shift %.4f on %d flights: mean %.4f -> %.4f, realized %.4f",
            base.version,
            shift,
            len(y),
            result.mean_before,
            result.mean_after,
            result.realized_rate,
        )
        with detached():
            registered = register(
                RegisterParams(
                    model_uri=info.model_uri,
                    holdout_uri=f"runs:/{run_id}/{WINDOW_FOLDER}/holdout.parquet",
                    model_name=model_name,
                    promote=params.promote,
                )
            )
            result.version = str(registered.version)
            for key, value in tags.items():
                client.set_model_version_tag(model_name, result.version, key, value)
            if params.promote != "never":
                load = {name: getattr(params, name) for name in LOAD_CHECK}
                promoted = promote(
                    PromoteParams(
                        model_name=model_name,
                        version=result.version,
                        promote=params.promote,
                        workers=params.workers,
                        **load,
                    )
                )
                result.promoted = promoted.promoted
        result.reason = f"shift {shift:+.4f} from {len(y)} flown flights"
        return result
