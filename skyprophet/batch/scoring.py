"""One batch through the model, the same for both engines: scores, or the rows it refused and why.

The model validates (``pyfunc.schema``); a batch it refuses is searched for its bad rows
(``tally.reject_reasons``) and the rest scored, so a clean batch costs one ``predict``. The pandas
engine's workers sum each batch (``score_batch``); Spark's Python workers annotate every row with
its scores, reason and day (``annotate_and_score``, one pass through Python per row). The Spark
workers import this module: it needs ``pyfunc``, ``contract``, ``tally`` and MLflow's pyfunc loader.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from pyfunc.schema import SCHEDULED_TIME, UNKNOWN_FIELDS
from skyprophet.batch.contract import AIRLINE, DAY, MODEL_PARAMS, REJECT_DETAIL, REJECT_REASON
from skyprophet.batch.tally import BatchScores, flight_days, group_sums, reject_reasons


def predict(model, frame: pd.DataFrame) -> pd.DataFrame:
    """The model's scores of ``frame`` with the batch parameters (unseen categories scored and named)."""
    return model.predict(frame, params=MODEL_PARAMS)


@dataclass
class _Scored:
    """One batch scored: the valid rows (all of them when ``valid`` is None) and their scores."""

    chunk: pd.DataFrame
    valid: np.ndarray | None
    reasons: np.ndarray
    details: np.ndarray
    scores: dict[str, np.ndarray]


def _score(model, chunk: pd.DataFrame) -> _Scored:
    chunk = chunk.reset_index(drop=True)
    valid = None
    reasons = details = np.array([], dtype=object)
    try:
        predicted = predict(model, chunk)
    except MlflowException as refused:
        found, why = reject_reasons(chunk)
        mask = found == ""
        if mask.all():
            # Refused for something that is not one flight's fault; as a plain MlflowException,
            # which pickles from a worker process (the schema's error type does not).
            raise MlflowException(refused.message) from None
        valid, reasons, details = mask, found[~mask], why[~mask]
        chunk = chunk[mask].reset_index(drop=True)
        predicted = predict(model, chunk) if len(chunk) else None
    if predicted is None:
        scores = {
            "delay_probability": np.array([], dtype=np.float64),
            "delay": np.array([], dtype=np.int64),
            UNKNOWN_FIELDS: np.array([], dtype=object),
        }
    else:
        scores = {
            "delay_probability": predicted["delay_probability"].to_numpy(np.float64),
            "delay": predicted["delay"].to_numpy(np.int64),
            UNKNOWN_FIELDS: predicted[UNKNOWN_FIELDS].to_numpy(dtype=object),
        }
    return _Scored(chunk, valid, reasons, details, scores)


def score_batch(model, chunk: pd.DataFrame) -> BatchScores:
    """Score one batch and sum it per (airline, day) (the pandas engine's unit of work)."""
    started = time.process_time()
    rows = len(chunk)
    done = _score(model, chunk)
    scores, chunk = done.scores, done.chunk
    flagged = scores[UNKNOWN_FIELDS] != ""
    days = flight_days(chunk[SCHEDULED_TIME]) if len(chunk) else None
    groups = group_sums(chunk[AIRLINE], days, scores, flagged) if len(chunk) else pd.DataFrame()
    rejected = pd.Series(done.reasons, dtype=object).value_counts().to_dict()
    counts = {r: int(n) for r, n in rejected.items()}
    return BatchScores(
        rows, done.valid, done.reasons, done.details, scores, groups, counts, time.process_time() - started
    )


def annotate_and_score(model, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus reason, detail, day and the three scores for every row (Spark's one pass).

    A rejected row has its reason and detail, an empty day and no scores (null probability, delay 0,
    unknown fields ""); a scored row has an empty reason and detail.
    """
    done = _score(model, frame)
    rows = len(frame)
    valid = np.ones(rows, dtype=bool) if done.valid is None else done.valid
    reasons = np.full(rows, "", dtype=object)
    details = np.full(rows, "", dtype=object)
    reasons[~valid], details[~valid] = done.reasons, done.details
    days = np.full(rows, "", dtype=object)
    probability = np.full(rows, np.nan)
    delay = np.zeros(rows, dtype=np.int64)
    unknown = np.full(rows, "", dtype=object)
    if len(done.chunk):
        days[valid] = flight_days(done.chunk[SCHEDULED_TIME])
        probability[valid] = done.scores["delay_probability"]
        delay[valid] = done.scores["delay"]
        unknown[valid] = done.scores[UNKNOWN_FIELDS]
    return frame.reset_index(drop=True).assign(
        **{
            REJECT_REASON: reasons,
            REJECT_DETAIL: details,
            DAY: days,
            "delay_probability": probability,
            "delay": delay,
            UNKNOWN_FIELDS: unknown,
        }
    )


def spark_scorer(archive_path: str) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The ``mapInPandas`` function: each Python worker loads the model once (MLflow's ``SparkModelCache``).

    ``archive_path`` is what ``SparkModelCache.add_local_model`` returned on the driver, as
    ``mlflow.pyfunc.spark_udf`` ships a model to its workers.
    """

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from mlflow.pyfunc.spark_model_cache import SparkModelCache

        model, _ = SparkModelCache.get_or_load(archive_path)
        for batch in batches:
            yield annotate_and_score(model, batch)

    return run
