"""Drift of new flights against reference flights on the model's own input features.

``detect_drift`` runs the adversarial validator (``skyprophet.monitoring.adversarial``) and the
population stability index (PSI) of every feature. Categories the model never saw keep an
"unseen" code instead of failing: they are drift too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pyfunc.features import FEATURE_NAMES, FeatureSpec, build_features
from pyfunc.schema import CATEGORY_COLUMNS, scorable
from skyprophet import config
from skyprophet.monitoring.adversarial import cross_validated_auc
from skyprophet.monitoring.flights import BadFlightsError

logger = logging.getLogger("skyprophet.monitor")
MONITOR = config.DEFAULTS["monitor"]
UNSEEN = "<unseen>"
RARE_OR_UNSEEN = "<rare or unseen>"
PSI_BINS = 10
# Shares below this count as this, so a category absent on one side gives a large, finite PSI.
PSI_FLOOR = 1e-4
# Per feature, the categories / bins kept in the report and drift.json (largest PSI first).
KEPT_BINS = 10


@dataclass
class FeatureDrift:
    """How one model input moved: validator importance (share of gain) and PSI with its largest bins."""

    name: str
    importance: float
    psi: float
    bins: list[dict[str, object]]


@dataclass
class DriftReport:
    """The adversarial validator's verdict and every feature's drift, most separating first."""

    roc_auc: float
    fold_roc_auc: list[float]
    reference_rows: int
    new_rows: int
    new_unseen_rows: int
    features: list[FeatureDrift]

    def top(self, n: int = 5, by: str = "importance") -> list[str]:
        """Names of the ``n`` features with the largest ``importance`` or ``psi``."""
        return [f.name for f in sorted(self.features, key=lambda f: -getattr(f, by))[:n]]

    def feature(self, name: str) -> FeatureDrift:
        """One feature's drift by name."""
        return next(f for f in self.features if f.name == name)


def _sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    if max_rows and len(frame) > max_rows:
        return frame.sample(n=max_rows, random_state=seed).reset_index(drop=True)
    return frame.reset_index(drop=True)


def _psi_terms(reference_share: np.ndarray, new_share: np.ndarray) -> np.ndarray:
    r, n = np.maximum(reference_share, PSI_FLOOR), np.maximum(new_share, PSI_FLOOR)
    return (n - r) * np.log(n / r)


def _psi_bins(labels: list[str], reference_share: np.ndarray, new_share: np.ndarray) -> tuple[float, list[dict]]:
    terms = _psi_terms(reference_share, new_share)
    order = [i for i in np.argsort(-terms) if reference_share[i] > 0 or new_share[i] > 0][:KEPT_BINS]
    bins = [
        {"bin": labels[i], "reference": float(reference_share[i]), "new": float(new_share[i]), "psi": float(terms[i])}
        for i in order
    ]
    return float(terms.sum()), bins


def categorical_psi(reference: np.ndarray, new: np.ndarray, names: list[str], other: str) -> tuple[float, list]:
    """PSI over categories (codes; the code ``len(names)`` is ``other``), with per-category terms."""
    codes = np.union1d(np.unique(reference), np.unique(new)).astype(int)
    labels = [names[c] if c < len(names) else other for c in codes]
    reference_share = np.array([(reference == c).mean() for c in codes])
    new_share = np.array([(new == c).mean() for c in codes])
    return _psi_bins(labels, reference_share, new_share)


def numeric_psi(reference: np.ndarray, new: np.ndarray, bins: int = PSI_BINS) -> tuple[float, list]:
    """PSI over bins cut at the reference's quantiles (ties merged), with per-bin terms."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    if len(edges) == 0:
        edges = np.unique(reference)[:1]
    labels = [f"<= {edges[0]:g}"]
    labels += [f"({low:g}, {high:g}]" for low, high in zip(edges[:-1], edges[1:], strict=True)]
    labels.append(f"> {edges[-1]:g}")
    count = len(edges) + 1
    reference_share = np.bincount(np.searchsorted(edges, reference, side="left"), minlength=count) / len(reference)
    new_share = np.bincount(np.searchsorted(edges, new, side="left"), minlength=count) / len(new)
    return _psi_bins(labels, reference_share, new_share)


def category_labels(spec: FeatureSpec) -> dict[str, tuple[list[str], str]]:
    """Per categorical feature: the name of each code, and the name of the code past the end."""
    labels = {f"{column}_code": (list(spec.vocabulary[column]), UNSEEN) for column in CATEGORY_COLUMNS}
    labels["flight_key_code"] = (list(spec.flight_keys), RARE_OR_UNSEEN)
    return labels


def detect_drift(
    reference: pd.DataFrame,
    new: pd.DataFrame,
    spec: FeatureSpec,
    cv_folds: int = MONITOR["cv_folds"],
    seed: int = MONITOR["seed"],
    max_rows: int = MONITOR["max_rows"],
    exclude_features: tuple[str, ...] = (),
) -> DriftReport:
    """Adversarial validation and PSI of cleaned ``new`` flights against cleaned ``reference`` flights.

    Both sides are sampled down to ``max_rows`` (0 = all); ``exclude_features`` leaves model inputs
    out of both (say, the calendar ones when a batch covers one month of a year-long reference).
    """
    unknown = sorted(set(exclude_features) - set(FEATURE_NAMES))
    if unknown:
        raise ValueError(f"exclude_features {unknown} are not model features; choose from {list(FEATURE_NAMES)}")
    names = [n for n in FEATURE_NAMES if n not in exclude_features]
    if not names:
        raise ValueError("exclude_features leaves no feature to compare")
    if min(len(reference), len(new)) < cv_folds:
        raise BadFlightsError(f"{len(new)} new and {len(reference)} reference flights: need {cv_folds} on each side")
    reference, new = _sample(reference, max_rows, seed), _sample(new, max_rows, seed + 1)
    columns = [FEATURE_NAMES.index(n) for n in names]
    reference_x = build_features(reference, spec)[:, columns]
    new_x = build_features(new, spec)[:, columns]
    features = np.vstack([reference_x, new_x])
    is_new = np.r_[np.zeros(len(reference_x)), np.ones(len(new_x))]
    logger.info(
        "validate: %d reference vs %d new flights, %d features, %d folds",
        len(reference),
        len(new),
        len(names),
        cv_folds,
    )
    aucs, importance = cross_validated_auc(features, is_new, names, cv_folds, seed)
    labels = category_labels(spec)
    drifts = []
    for i, name in enumerate(names):
        if name in labels:
            psi, bins = categorical_psi(reference_x[:, i], new_x[:, i], *labels[name])
        else:
            psi, bins = numeric_psi(reference_x[:, i], new_x[:, i])
        drifts.append(FeatureDrift(name, importance[name], psi, bins))
    drifts.sort(key=lambda f: (-f.importance, -f.psi))
    return DriftReport(
        roc_auc=float(np.mean(aucs)),
        fold_roc_auc=aucs,
        reference_rows=len(reference),
        new_rows=len(new),
        new_unseen_rows=int((~scorable(new, spec.vocabulary)).sum()),
        features=drifts,
    )
