"""evaluate's optional hyper-parameter search, scored month ahead (it changes nothing: copy the winner by hand).

Sampled recipes (``SEARCH_SPACE``, without replacement, Production's or the default recipe first)
are fitted on every month before each of the last ``SEARCH_MONTHS`` training months and scored on
that month; the table is sorted by that month-ahead ROC AUC. The winner goes into train's defaults.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pyfunc.schema import SCHEDULED_TIME, parse_scheduled_time
from skyprophet.science.fit import fitting_label, out_of_fold_scores, training_features
from skyprophet.science.recipe import OBJECTIVES, Recipe
from skyprophet.science.splits import month_ahead_folds

logger = logging.getLogger("skyprophet.evaluate")
# Hyper-parameter candidates of the optional search (sampled without replacement).
SEARCH_SPACE = {
    "objective": list(OBJECTIVES),
    "n_estimators": [200, 400, 600],
    "learning_rate": [0.02, 0.03, 0.05],
    "max_depth": [4, 6, 8, 9],
    "min_child_weight": [5.0, 20.0, 50.0, 100.0],
    "subsample": [0.7, 0.8, 1.0],
    "colsample_bytree": [0.3, 0.4, 0.6, 0.8],
    "scale_pos_weight": [1.0, 3.0],
}
SEARCH_MONTHS = 3


def search(flights: pd.DataFrame, recipe: Recipe, trials: int, seed: int) -> pd.DataFrame:
    """Month-ahead ROC AUC (the last SEARCH_MONTHS months, each from all before) of sampled recipes."""
    features, target, _, _ = training_features(flights, recipe)
    folds = month_ahead_folds(parse_scheduled_time(flights[SCHEDULED_TIME]), SEARCH_MONTHS)
    scored = np.concatenate([rows for _, rows in folds])
    rng = np.random.default_rng(seed)
    candidates = [recipe.effective()]
    seen = {candidates[0]}
    while len(candidates) < trials + 1 and len(seen) < 10_000:
        candidate = recipe.replace(**{k: v[rng.integers(len(v))] for k, v in SEARCH_SPACE.items()}).effective()
        if candidate not in seen:
            seen.add(candidate)
            candidates.append(candidate)
    rows = []
    for i, candidate in enumerate(candidates):
        label = fitting_label(flights, candidate.objective)
        scores = out_of_fold_scores(features, label, folds, candidate)
        auc = float(roc_auc_score(target[scored], scores[scored]))
        logger.info("search %d/%d: month-ahead ROC AUC %.4f %s", i, len(candidates) - 1, auc, candidate)
        rows.append({**{k: getattr(candidate, k) for k in SEARCH_SPACE}, "month_ahead_roc_auc": auc})
    return pd.DataFrame(rows).sort_values("month_ahead_roc_auc", ascending=False).reset_index(drop=True)
