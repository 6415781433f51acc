"""Time splits: which flights a model learns from and which it is measured on, and etl's split on disk.

What users do is score months that have not flown yet, so every split that chooses anything is
time-forward: etl's holdout is the file's latest months (``split_latest``), evaluate's backtest
and the hyper-parameter search fit on every month before the one they score (``month_ahead``),
and train's calibration folds score blocks of days with a booster that saw only earlier days
(``forward_folds``). Random whole days (``split_by_day``, ``day_folds``) are a secondary view.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.model_selection import GroupKFold

from pyfunc.schema import SCHEDULED_TIME, parse_scheduled_time
from skyprophet.mlops.tracking import MissingInputError, resolve_local

# etl's ``split``: the latest ``holdout_months`` (what gates a version) or random whole days.
SPLITS = ("latest", "day")
# evaluate's forward split: train before this month of the data's last year, test from it on.
FORWARD_FIRST_TEST_MONTH = 11
# The parts of etl's processed split (``<processed_uri>/<part>.parquet``).
TRAIN_PART, HOLDOUT_PART = "train", "holdout"

Folds = list[tuple[np.ndarray, np.ndarray]]


class RawDataError(ValueError):
    """The raw file cannot be used as it is."""


def load_processed(processed_uri: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The etl step's train and holdout flights."""
    try:
        folder = resolve_local(processed_uri)
    except MlflowException as err:
        raise MissingInputError(
            f"cannot read processed data at {processed_uri}: run `mlflow run . -e etl` first"
        ) from err
    paths = [folder / f"{TRAIN_PART}.parquet", folder / f"{HOLDOUT_PART}.parquet"]
    if not all(p.is_file() for p in paths):
        raise MissingInputError(f"no train/holdout parquet under {processed_uri}: run `mlflow run . -e etl` first")
    return pd.read_parquet(paths[0]), pd.read_parquet(paths[1])


def months_of(flights: pd.DataFrame) -> pd.Series:
    """Each flight's scheduled calendar month (a pandas Period)."""
    return parse_scheduled_time(flights[SCHEDULED_TIME]).dt.to_period("M")


def month_ahead(month: pd.Series, months: int) -> list[pd.Period]:
    """The last ``months`` calendar months of ``month`` (never the first): each is scored from all before it."""
    return sorted(month.unique())[1:][-months:]


def month_ahead_folds(times: pd.Series, months: int) -> Folds:
    """For each of the last ``months`` calendar months (never the first): (rows before it, its rows)."""
    month = times.dt.to_period("M")
    return [(np.flatnonzero(month < m), np.flatnonzero(month == m)) for m in month_ahead(month, months)]


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
#   days: day-grouped folds over all training days (it lets the calibration see neighbouring days'
#     weather, which future months do not offer).
CALIBRATIONS = {"forward": forward_folds, "days": day_folds}


def latest_period_start(times: pd.Series, months: int) -> pd.Timestamp:
    """First day of the file's last ``months`` calendar months (the last month counts even if partial)."""
    last_month = times.max().to_period("M")
    return (last_month - (months - 1)).to_timestamp()


def split_latest(flights: pd.DataFrame, holdout_months: int) -> pd.Series:
    """True for holdout flights: those of the file's last ``holdout_months`` calendar months.

    What users do is score months that have not flown yet, so the holdout that gates a version
    is the latest period, trained on everything before it (never random days of the same months).
    """
    times = parse_scheduled_time(flights[SCHEDULED_TIME])
    if holdout_months < 1:
        raise ValueError(f"holdout_months must be at least 1, got {holdout_months}")
    start = latest_period_start(times, holdout_months)
    holdout = times >= start
    if holdout.all():
        span = f"{times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}"
        raise RawDataError(
            f"the file's flights ({span}) leave no month before the last {holdout_months} to train on: "
            "lower holdout_months"
        )
    return holdout


def split_by_day(flights: pd.DataFrame, holdout_fraction: float, seed: int) -> pd.Series:
    """True for holdout flights: whole calendar days drawn at random, so no day is on both sides.

    A secondary view only (``split=day``): the model may learn the weather of the training days'
    neighbours, which no future flight offers.
    """
    days = parse_scheduled_time(flights[SCHEDULED_TIME]).dt.normalize()
    unique_days = np.sort(days.unique())
    n_holdout = int(round(holdout_fraction * len(unique_days)))
    holdout_days = np.random.default_rng(seed).choice(unique_days, size=n_holdout, replace=False)
    return days.isin(holdout_days)


def forward_split(flights: pd.DataFrame) -> pd.Series:
    """True for forward-test flights: scheduled on or after Nov 1 of the data's last year.

    A file that does not reach November falls back to its last sixth of calendar days, so the
    split exists for any airport's file.
    """
    times = parse_scheduled_time(flights[SCHEDULED_TIME])
    cutoff = pd.Timestamp(year=int(times.max().year), month=FORWARD_FIRST_TEST_MONTH, day=1)
    test = times >= cutoff
    if test.all() or not test.any():
        days = np.sort(times.dt.normalize().unique())
        cutoff = days[int(len(days) * 5 / 6)]
        test = times >= cutoff
    return test


def period_of(flights: pd.DataFrame) -> str:
    """First and last scheduled day of ``flights``."""
    times = parse_scheduled_time(flights[SCHEDULED_TIME])
    return f"{times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}"
