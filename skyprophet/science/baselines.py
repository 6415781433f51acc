"""The design's two reference models, scored on the same split as the project's model.

- challenge: XGBoost with ``scale_pos_weight`` on the challenge's one-hot top-10 features;
- seed: XGBoost on one-hot ``OPERA, TIPOVUELO, MES, SIGLADES, DIANOM``.

Both use the raw file's ``MES``/``DIANOM`` columns as the originals did.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb

from pyfunc.schema import TARGET

CHALLENGE_TOP10 = [
    "OPERA_Latin American Wings",
    "MES_7",
    "MES_10",
    "OPERA_Grupo LATAM",
    "MES_12",
    "TIPOVUELO_I",
    "MES_4",
    "MES_11",
    "OPERA_Sky Airline",
    "OPERA_Copa Air",
]
SEED_COLUMNS = ["OPERA", "TIPOVUELO", "MES", "SIGLADES", "DIANOM"]


def one_hot(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``get_dummies`` of the named raw columns, as floats."""
    return pd.get_dummies(frame[columns].astype(str), columns=columns).astype(np.float32)


def _fit_predict(train_x: pd.DataFrame, train_y: np.ndarray, test_x: pd.DataFrame, **params) -> np.ndarray:
    test_x = test_x.reindex(columns=train_x.columns, fill_value=0.0)
    model = xgb.XGBClassifier(random_state=1, learning_rate=0.01, n_jobs=2, **params)
    model.fit(train_x, train_y)
    return model.predict_proba(test_x)[:, 1]


def challenge_baseline(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Delay scores of the challenge's top-10 model (not calibrated: it is class-weighted)."""
    y = train[TARGET].to_numpy()
    columns = ["OPERA", "MES", "TIPOVUELO"]
    train_x = one_hot(train, columns).reindex(columns=CHALLENGE_TOP10, fill_value=0.0)
    test_x = one_hot(test, columns).reindex(columns=CHALLENGE_TOP10, fill_value=0.0)
    return _fit_predict(train_x, y, test_x, scale_pos_weight=(y == 0).sum() / max((y == 1).sum(), 1))


def seed_baseline(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Delay probabilities of the seed's five-category one-hot model."""
    return _fit_predict(one_hot(train, SEED_COLUMNS), train[TARGET].to_numpy(), one_hot(test, SEED_COLUMNS))
