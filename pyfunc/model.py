"""The MLflow pyfunc served as ``flight-delay``: raw scheduled flights in, calibrated delay odds out."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import mlflow.pyfunc
import numpy as np
import pandas as pd
import xgboost as xgb

from pyfunc.fastpath import validate_request_fast, with_indexed_categories
from pyfunc.features import FeatureSpec, build_features
from pyfunc.schema import validate_request

BOOSTER_ARTIFACT = "booster"
SPEC_ARTIFACT = "spec"
# Threads per predict call; 1 suits a serving worker per core. Override for batch scoring.
NTHREAD_ENV = "SKYPROPHET_NTHREAD"
# "0" serves through the straightforward pandas path (same outputs, slower; for benchmarks and tests).
FAST_PATH_ENV = "SKYPROPHET_FAST_PATH"


@dataclass
class ModelSpec:
    """Everything besides the booster that a model version carries (stored as one JSON file)."""

    features: FeatureSpec
    calibration_x: list[float]
    calibration_y: list[float]
    threshold: float

    def save(self, path: str) -> None:
        """Write as JSON."""
        data = {
            "features": self.features.to_dict(),
            "calibration_x": self.calibration_x,
            "calibration_y": self.calibration_y,
            "threshold": self.threshold,
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

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Map booster scores to calibrated probabilities (linear between the centred isotonic points)."""
        return np.interp(raw, self.calibration_x, self.calibration_y)


class FlightDelayModel(mlflow.pyfunc.PythonModel):
    """Validates flights, builds features, scores them with XGBoost and calibrates the score."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the booster (XGBoost's own UBJ format) and the JSON spec."""
        self.spec = ModelSpec.load(context.artifacts[SPEC_ARTIFACT])
        self.booster = xgb.Booster(model_file=context.artifacts[BOOSTER_ARTIFACT])
        self.booster.set_param({"nthread": int(os.environ.get(NTHREAD_ENV, "1"))})
        self.fast_path = os.environ.get(FAST_PATH_ENV, "1") != "0"
        # Built once here rather than per request (see pyfunc/fastpath.py).
        self.indexed_features = with_indexed_categories(self.spec.features)

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict | None = None,
    ) -> pd.DataFrame:
        """One row per flight: ``delay_probability`` in [0, 1] and ``delay`` (0/1 at the threshold)."""
        vocabulary = self.spec.features.vocabulary
        if getattr(self, "fast_path", False):
            features = build_features(validate_request_fast(model_input, vocabulary), self.indexed_features)
        else:
            features = build_features(validate_request(model_input, vocabulary), self.spec.features)
        raw = self.booster.inplace_predict(features)
        probability = self.spec.calibrate(raw)
        return pd.DataFrame(
            {
                "delay_probability": probability,
                "delay": (probability >= self.spec.threshold).astype(np.int64),
            }
        )
