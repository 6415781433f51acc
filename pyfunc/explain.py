"""Why a flight got its delay probability: the booster's exact feature contributions, in words.

XGBoost's ``pred_contribs`` (Tree SHAP) splits each flight's raw margin into one contribution per
feature plus a bias (the margin expected before any feature is known), so that

    bias + sum of the feature contributions == raw margin            (exact, up to float32 rounding)

The margin is in the booster's own unit: predicted minutes late (capped at 30) for
``objective=minutes_late``, log-odds of the 0/1 label for ``objective=delayed``. The calibration
then maps the booster's score (the margin, or its sigmoid for ``delayed``) to the probability. It
is monotone, not linear, so contributions do not add up in probability; what is exact in
probability is, per factor, ``probability_without``: the calibrated probability of the margin
minus that factor's contribution. It is not the probability of any real flight with another
value (Shapley values are relative to the model's average behaviour), but it says how far this
factor moved this flight's probability with the others' contributions held as they are.

Features that state one fact (``Feature.factor``, e.g. ``hour`` and ``minute_of_day`` are the
departure time) are one factor: their contributions are added, which keeps the sum exact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xgboost as xgb

from pyfunc.feature_values import Inputs
from pyfunc.features import FEATURE_NAMES, FEATURE_TYPES, FEATURES, Feature

TOP_FACTORS = 3
TOP_FACTORS_COLUMN = "top_factors"
FACTOR_VALUES_COLUMN = "factor_values"
# Explained flights per request (the model parameter ``explain``), from this variable or the default:
# 5,000 explained flights are about 1.8 s of CPU and 6 MB of JSON with the default recipe (100,000 were
# ~45 s and ~118 MB, past the server's 60 s timeout with the thread still running).
MAX_EXPLAIN_FLIGHTS_ENV = "SKYPROPHET_MAX_EXPLAIN_FLIGHTS"
MAX_EXPLAIN_FLIGHTS = 5_000
# The global picture (train, evaluate) averages the contributions of at most this many flights.
GLOBAL_SAMPLE = 2_000
# Decimals of the numbers in factor_values (the sum identity holds to about 1e-5 after rounding).
DECIMALS = 6
# The margin's unit per XGBoost objective, and the map from margin to the score the calibration reads.
MARGIN_UNITS = {"reg:squarederror": "minutes late (capped)", "binary:logistic": "log-odds of delay"}
SCORE_OF_MARGIN: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "reg:squarederror": lambda margin: margin,
    "binary:logistic": lambda margin: 1.0 / (1.0 + np.exp(-margin)),
}


@dataclass(frozen=True)
class Factor:
    """A fact about a flight a planner reads: one or more features and how to say their value."""

    name: str
    columns: tuple[int, ...]
    describe: Callable[[Inputs, np.ndarray], list[str]]


def _generic(feature: Feature) -> Callable[[Inputs, np.ndarray], list[str]]:
    """``<name> <value>``, for a feature declared without ``describe``."""

    def describe(inputs: Inputs, rows: np.ndarray) -> list[str]:
        return [f"{feature.name} {value:g}" for value in np.asarray(feature.compute(inputs))[rows].tolist()]

    return describe


def factors_of(features: tuple[Feature, ...] = FEATURES) -> tuple[Factor, ...]:
    """The factors of ``features`` in declaration order (a factor's words are its first member's)."""
    members: dict[str, list[int]] = {}
    for column, feature in enumerate(features):
        members.setdefault(feature.factor_name, []).append(column)
    factors = []
    for name, columns in members.items():
        first = features[columns[0]]
        describe = first.describe or _generic(first)
        factors.append(Factor(name, tuple(columns), describe))
    return tuple(factors)


FACTORS = factors_of()


def max_explain_flights() -> int:
    """The cap on explained flights per request: SKYPROPHET_MAX_EXPLAIN_FLIGHTS, else MAX_EXPLAIN_FLIGHTS."""
    raw = os.environ.get(MAX_EXPLAIN_FLIGHTS_ENV, "")
    if not raw:
        return MAX_EXPLAIN_FLIGHTS
    if not raw.isdigit() or int(raw) == 0:
        raise ValueError(f"{MAX_EXPLAIN_FLIGHTS_ENV}={raw!r}: expected a positive whole number of flights")
    return int(raw)


def feature_matrix(features: np.ndarray) -> xgb.DMatrix:
    """The features as a DMatrix with the booster's names and kinds (what ``predict`` needs)."""
    return xgb.DMatrix(
        features, feature_names=list(FEATURE_NAMES), feature_types=list(FEATURE_TYPES), enable_categorical=True
    )


def contributions(booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
    """Exact Tree SHAP contributions in the booster's margin: (flights, features + 1), bias last.

    XGBoost predicts thread-safely on tree models (``predict`` as ``inplace_predict``), so a
    serving worker may call this from several request threads.
    """
    return booster.predict(feature_matrix(features), pred_contribs=True)


def mean_absolute_contributions(
    booster: xgb.Booster, features: np.ndarray, sample: int = GLOBAL_SAMPLE, seed: int = 0
) -> dict[str, float]:
    """Mean |contribution| per feature, in the margin's unit, over ``features``' flights (the global picture).

    Exact contributions cost about 30 ms a flight on one thread for 400 trees of depth 9 (SCL's
    recipe), so at most ``sample`` flights, drawn with ``seed``, are used.
    """
    if len(features) == 0:
        return {name: 0.0 for name in FEATURE_NAMES}
    if len(features) > sample:
        features = features[np.sort(np.random.default_rng(seed).choice(len(features), sample, replace=False))]
    mean = np.abs(contributions(booster, features)[:, :-1].astype(np.float64)).mean(axis=0)
    return dict(zip(FEATURE_NAMES, mean.tolist(), strict=True))


def objective_of(booster: xgb.Booster) -> str:
    """The booster's XGBoost objective (which fixes the margin's unit)."""
    return json.loads(booster.save_config())["learner"]["objective"]["name"]


class Explainer:
    """Top factors in words and their numbers (JSON text) for scored flights."""

    def __init__(self, booster: xgb.Booster, calibrate: Callable[[np.ndarray], np.ndarray]) -> None:
        objective = objective_of(booster)
        if objective not in SCORE_OF_MARGIN:
            raise ValueError(
                f"explain: objective {objective!r} has no known margin (expected one of {SCORE_OF_MARGIN})"
            )
        self.unit = MARGIN_UNITS[objective]
        self.score_of_margin = SCORE_OF_MARGIN[objective]
        self.calibrate = calibrate
        membership = np.zeros((len(FEATURE_NAMES), len(FACTORS)))
        for index, factor in enumerate(FACTORS):
            membership[list(factor.columns), index] = 1.0
        self.membership = membership

    def probability_of_margin(self, margin: np.ndarray) -> np.ndarray:
        """The calibrated probability of a raw margin (what ``predict`` does to the booster's output)."""
        return self.calibrate(self.score_of_margin(margin))

    def explain(
        self, inputs: Inputs, features: np.ndarray, contribs: np.ndarray, margin: np.ndarray, probability: np.ndarray
    ) -> tuple[list[str], list[str]]:
        """Per flight: ``top_factors`` text and ``factor_values`` JSON.

        ``contribs`` from ``contributions``; ``margin`` is the booster's raw margin as the normal
        prediction computed it (not the sum of ``contribs``: the identity is what tests check).
        """
        n = len(features)
        by_factor = contribs[:, :-1].astype(np.float64) @ self.membership
        top = np.argsort(-np.abs(by_factor), axis=1, kind="stable")[:, :TOP_FACTORS]
        rows = np.arange(n)[:, None]
        top_contribution = by_factor[rows, top]
        without = self.probability_of_margin(margin.astype(np.float64)[:, None] - top_contribution)
        words = np.empty((n, TOP_FACTORS), dtype=object)
        for index, factor in enumerate(FACTORS):
            where = np.nonzero(top == index)
            if len(where[0]):
                words[where] = factor.describe(inputs, where[0])
        signs = np.where(top_contribution > 0, "(+)", np.where(top_contribution < 0, "(-)", "(0)"))
        names = [f.name for f in FACTORS]
        bias = np.round(contribs[:, -1].astype(np.float64), DECIMALS).tolist()
        per_feature = np.round(contribs[:, :-1].astype(np.float64), DECIMALS).tolist()
        baseline = np.round(self.probability_of_margin(contribs[:, -1].astype(np.float64)), DECIMALS).tolist()
        margins = np.round(margin.astype(np.float64), DECIMALS).tolist()
        probabilities = np.round(probability, DECIMALS).tolist()
        top_values = np.round(top_contribution, DECIMALS).tolist()
        without_values = np.round(without, DECIMALS).tolist()
        texts, values = [], []
        for i in range(n):
            texts.append(", ".join(f"{w} {s}" for w, s in zip(words[i], signs[i], strict=True)))
            values.append(
                json.dumps(
                    {
                        "unit": self.unit,
                        "margin": margins[i],
                        "bias": bias[i],
                        "probability": probabilities[i],
                        "probability_at_bias": baseline[i],
                        "top": [
                            {
                                "factor": names[top[i, k]],
                                "text": words[i, k],
                                "contribution": top_values[i][k],
                                "probability_without": without_values[i][k],
                            }
                            for k in range(TOP_FACTORS)
                        ],
                        "contributions": dict(zip(FEATURE_NAMES, per_feature[i], strict=True)),
                    },
                    separators=(",", ":"),
                )
            )
        return texts, values
