"""The MLflow pyfunc served as ``flight-delay``: raw scheduled flights in, calibrated delay odds out."""

from __future__ import annotations

import gc
import json
import os
from dataclasses import dataclass

import mlflow.pyfunc
import numpy as np
import pandas as pd
import xgboost as xgb

from pyfunc.coded_spec import CodedSpec
from pyfunc.explain import (
    FACTOR_VALUES_COLUMN,
    MAX_EXPLAIN_FLIGHTS_ENV,
    TOP_FACTORS_COLUMN,
    Explainer,
    contributions,
    max_explain_flights,
)
from pyfunc.feature_values import Inputs
from pyfunc.features import FeatureSpec, build_features
from pyfunc.fields import InvalidFlightsError
from pyfunc.schema import (
    EXPLAIN_PARAM,
    UNKNOWN_FIELDS,
    check_explain_choice,
    check_unknown_categories_choice,
    unknown_field_names,
    validate_request,
)

BOOSTER_ARTIFACT = "booster"
SPEC_ARTIFACT = "spec"
# Threads per predict call; 1 suits a serving worker per core.
NTHREAD_ENV = "SKYPROPHET_NTHREAD"
# Requests of at least BATCH_ROWS flights are scored with this many threads (default: every core):
# 10,000 flights take 116 ms of XGBoost on one thread, 59 ms on two.
BATCH_NTHREAD_ENV = "SKYPROPHET_BATCH_NTHREAD"
BATCH_ROWS = 1_000
# "1" always, "0" never, unset: only inside `mlflow models serve` (see freeze_loaded_objects).
GC_FREEZE_ENV = "SKYPROPHET_GC_FREEZE"
# Set by `mlflow models serve` for the worker processes that load the model
# (mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH; a test checks the name).
SERVING_MODEL_PATH_ENV = "__pyfunc_model_path__"
# How far from 0 and 1 a probability is kept before an intercept shift (logit of 0 or 1 is infinite).
SHIFT_CLIP = 1e-6


try:  # XGBoost's C entry point for in-place prediction on a dense array, as inplace_predict calls it
    import ctypes

    from xgboost.core import _LIB, _check_call, c_bst_ulong, make_jcargs
    from xgboost.data import array_interface

    _VALUE_ARGS = make_jcargs(
        type=0, training=False, iteration_begin=0, iteration_end=0, missing=np.nan, strict_shape=False, cache_id=0
    )
except ImportError:  # another XGBoost: its inplace_predict
    _LIB = None


def predict_values(booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
    """``booster.inplace_predict(features)``, calling XGBoost's C function directly for a float32 matrix.

    The same C call with the same arguments, hence the same numbers (a test checks), without the
    Python wrapper's per-call work (type sniffing, building a class per call for the output's array
    interface): about 130 us of a one-flight request's ~270 us in XGBoost 3.2.
    """
    if _LIB is None or features.dtype != np.float32 or features.ndim != 2 or not features.flags.c_contiguous:
        return booster.inplace_predict(features)
    preds = ctypes.POINTER(ctypes.c_float)()
    shape = ctypes.POINTER(c_bst_ulong)()
    dims = c_bst_ulong()
    _check_call(
        _LIB.XGBoosterPredictFromDense(
            booster.handle,
            array_interface(features),
            _VALUE_ARGS,
            ctypes.c_void_p(),
            ctypes.byref(shape),
            ctypes.byref(dims),
            ctypes.byref(preds),
        )
    )
    output_shape = tuple(shape[i] for i in range(dims.value))
    if len(output_shape) != 1:  # not one score per flight: the wrapper knows the other shapes
        return booster.inplace_predict(features)
    return np.ctypeslib.as_array(preds, shape=output_shape).copy()  # the booster owns (and reuses) the buffer


# The output's column labels, built once per set of names: pandas 3 infers a new Arrow-backed text
# index per frame from plain labels (~60 us of a one-flight request's ~120 us for its output).
_OUTPUT_LABELS: dict[tuple[str, ...], pd.Index] = {}


def output_frame(columns: dict[str, np.ndarray | list]) -> pd.DataFrame:
    """``pd.DataFrame(columns)``: the same values, dtypes and labels (a test checks); numbers only in ~30 us, not ~130.

    ``DataFrame._from_arrays`` (pandas' own constructor from a list of columns, there since 0.23)
    with the labels made once; with a pandas without it, ``pd.DataFrame``.
    """
    if not all(isinstance(v, np.ndarray) and v.dtype.kind in "biuf" for v in columns.values()):
        return pd.DataFrame(columns)  # text columns: pandas infers their dtype
    names = tuple(columns)
    labels = _OUTPUT_LABELS.get(names)
    if labels is None:
        labels = _OUTPUT_LABELS.setdefault(names, pd.DataFrame(dict.fromkeys(names, [])).columns)
    arrays = list(columns.values())
    try:
        return pd.DataFrame._from_arrays(
            arrays, columns=labels, index=pd.RangeIndex(len(arrays[0])), verify_integrity=False
        )
    except (AttributeError, TypeError):
        return pd.DataFrame(columns)


def freeze_loaded_objects() -> bool:
    """Move everything alive after loading out of the garbage collector's sight, in a model server.

    A serving worker holds about 210,000 long-lived objects the collector tracks (MLflow, pandas,
    FastAPI, the model). Python's full collections walk all of them: 115-145 ms pauses a few times
    a second under load, which were the whole p99 of single-flight requests (142 ms, against 45 ms
    frozen). Frozen objects are never collected, so this is for a process that loads the model once
    and serves it; a notebook that loads the model keeps its collector unless it sets the variable.
    """
    setting = os.environ.get(GC_FREEZE_ENV)
    if setting == "0" or (setting is None and SERVING_MODEL_PATH_ENV not in os.environ):
        return False
    gc.collect()
    gc.freeze()
    return True


@dataclass
class ModelSpec:
    """Everything besides the booster that a model version carries (stored as one JSON file)."""

    features: FeatureSpec
    calibration_x: list[float]
    calibration_y: list[float]
    threshold: float
    # steps.recalibrate's delay-rate correction: p' = sigmoid(logit(p) + shift) after the isotonic
    # calibration, so the mean follows a moved delay rate while the ranking stays; 0.0 in older specs.
    intercept_shift: float = 0.0

    def save(self, path: str) -> None:
        """Write as JSON."""
        data = {
            "features": self.features.to_dict(),
            "calibration_x": self.calibration_x,
            "calibration_y": self.calibration_y,
            "threshold": self.threshold,
            "intercept_shift": self.intercept_shift,
        }
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle)

    @classmethod
    def load(cls, path: str) -> ModelSpec:
        """Read what ``save`` wrote."""
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        data["features"] = FeatureSpec.from_dict(data["features"])
        return cls(**data)

    def _calibration_points(self) -> tuple[np.ndarray, np.ndarray]:
        """The calibration's points as float64 arrays, made once (``np.interp`` converts lists on every call)."""
        source = (self.calibration_x, self.calibration_y)
        cached = self.__dict__.get("_points")
        if cached is None or cached[0] is not source[0] or cached[1] is not source[1]:
            cached = (*source, np.asarray(source[0], dtype=np.float64), np.asarray(source[1], dtype=np.float64))
            self.__dict__["_points"] = cached
        return cached[2], cached[3]

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Map booster scores to calibrated probabilities (linear between the centred isotonic points).

        With an ``intercept_shift`` the probability moves in logit space, clipped to
        [SHIFT_CLIP, 1 - SHIFT_CLIP] first so a calibrated 0 or 1 stays finite.
        """
        probability = np.interp(raw, *self._calibration_points())
        if not self.intercept_shift:
            return probability
        clipped = np.clip(probability, SHIFT_CLIP, 1 - SHIFT_CLIP)
        return 1.0 / (1.0 + np.exp(-(np.log(clipped / (1 - clipped)) + self.intercept_shift)))


class FlightDelayModel(mlflow.pyfunc.PythonModel):
    """Validates flights, builds features, scores them with XGBoost and calibrates the score.

    Logged from code (this file, ``mlflow.models.set_model`` below) with the booster and the spec
    as artifacts: loading a version runs no pickle.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the booster (XGBoost's own UBJ format) and the JSON spec."""
        self.spec = ModelSpec.load(context.artifacts[SPEC_ARTIFACT])
        self.booster = xgb.Booster(model_file=context.artifacts[BOOSTER_ARTIFACT])
        self.booster.set_param({"nthread": int(os.environ.get(NTHREAD_ENV, "1"))})
        # A second copy rather than set_param per call: the server predicts from several threads.
        self.batch_booster = self.booster.copy()
        self.batch_booster.set_param({"nthread": int(os.environ.get(BATCH_NTHREAD_ENV, os.cpu_count() or 1))})
        # Lookup tables and vocabulary sets built once here rather than per request.
        self.tables = CodedSpec.of(self.spec.features)
        self.vocabulary = {c: frozenset(v) for c, v in self.spec.features.vocabulary.items()}
        self.explainer = Explainer(self.booster, self.spec.calibrate)
        self.max_explain = max_explain_flights()
        freeze_loaded_objects()

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict | None = None,
    ) -> pd.DataFrame:
        """One row per flight: ``delay_probability`` in [0, 1] and ``delay`` (0/1 at the threshold).

        ``params``: ``unknown_categories`` "refuse" (default: a flight with a value the model never
        saw is a 400 naming the field) or "score" (scored with that value as unseen; the output
        gains ``unknown_fields``, the fields concerned per flight, "" when none); ``explain`` false
        (default) or true: the output gains ``top_factors`` and ``factor_values`` (pyfunc.explain), for at
        most SKYPROPHET_MAX_EXPLAIN_FLIGHTS flights (default 5,000; more is a 400 naming it).
        """
        params = params or {}
        choice = check_unknown_categories_choice(params.get("unknown_categories", "refuse"))
        explain = check_explain_choice(params.get(EXPLAIN_PARAM, False))
        if explain and len(model_input) > self.max_explain:  # before any work: explaining is ~0.35 ms a flight
            raise InvalidFlightsError(
                EXPLAIN_PARAM,
                f"{len(model_input):,} flights exceed the limit of {self.max_explain:,} explained flights per "
                f"request ({MAX_EXPLAIN_FLIGHTS_ENV}); send fewer, or leave explain false",
            )
        clean, unknown = validate_request(model_input, self.vocabulary, choice)
        features = build_features(clean, self.spec.features, self.tables)
        booster = self.batch_booster if len(features) >= BATCH_ROWS else self.booster
        score = predict_values(booster, features)
        probability = self.spec.calibrate(score)
        output = {"delay_probability": probability, "delay": (probability >= self.spec.threshold).astype(np.int64)}
        if choice == "score":
            output[UNKNOWN_FIELDS] = unknown_field_names(unknown)
        if explain:
            margin = booster.inplace_predict(features, predict_type="margin")
            inputs = Inputs(clean, self.spec.features, self.tables)
            output[TOP_FACTORS_COLUMN], output[FACTOR_VALUES_COLUMN] = self.explainer.explain(
                inputs, features, contributions(booster, features), margin, probability
            )
        return output_frame(output)


mlflow.models.set_model(FlightDelayModel())
