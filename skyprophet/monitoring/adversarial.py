"""The adversarial validator: XGBoost learns to tell reference rows from new rows (stratified K-fold).

An out-of-fold ROC AUC of 0.5 means indistinguishable; each feature's share of the validators'
total gain says which inputs separate them.
"""

from __future__ import annotations

import numpy as np
import xgboost as xgb
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from pyfunc.features import FEATURE_NAMES, FEATURE_TYPES

# A small validator: drift that a few shallow trees cannot find is not worth an alert.
VALIDATOR_PARAMS = {
    "objective": "binary:logistic",
    "eval_metric": "auc",
    "tree_method": "hist",
    "max_cat_to_onehot": 1,
    "eta": 0.15,
    "max_depth": 4,
    "min_child_weight": 5.0,
    "subsample": 0.8,
    # One thread: on a shared 2-core machine two OpenMP threads ran 10-20x slower than one.
    "nthread": 1,
}
VALIDATOR_ROUNDS = 50


def cross_validated_auc(
    features: np.ndarray, is_new: np.ndarray, names: list[str], folds: int, seed: int
) -> tuple[list[float], dict[str, float]]:
    """Out-of-fold ROC AUC of each fold and each feature's share of the validators' total gain."""
    types = [FEATURE_TYPES[FEATURE_NAMES.index(n)] for n in names]
    params = {**VALIDATOR_PARAMS, "seed": seed}
    aucs, gain = [], dict.fromkeys(names, 0.0)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_rows, score_rows in splitter.split(features, is_new):
        matrix = xgb.DMatrix(
            features[fit_rows],
            label=is_new[fit_rows],
            feature_names=names,
            feature_types=types,
            enable_categorical=True,
        )
        booster = xgb.train(params, matrix, num_boost_round=VALIDATOR_ROUNDS)
        aucs.append(float(roc_auc_score(is_new[score_rows], booster.inplace_predict(features[score_rows]))))
        for name, value in booster.get_score(importance_type="total_gain").items():
            gain[name] += value
    total = sum(gain.values()) or 1.0
    return aucs, {name: value / total for name, value in gain.items()}
