"""The model a batch is scored with, pinned and loaded.

A ``models:/`` alias or stage is pinned to the version it names now, and the pyfunc is loaded with
its XGBoost threads for a batch set (``SKYPROPHET_BATCH_NTHREAD``).
"""

from __future__ import annotations

import os

import mlflow
from mlflow.exceptions import MlflowException

from skyprophet.batch.contract import BATCH_NTHREAD_ENV, ScoreInputError
from skyprophet.mlops import tracking
from skyprophet.mlops.registry import version_uri


def resolve_model(model_uri: str) -> tuple[str, str, str]:
    """(URI of one version, model name, version): aliases and stages pinned to the version they name now."""
    if not model_uri.startswith("models:/"):
        return model_uri, "", ""
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    try:
        name, version = get_model_name_and_version(mlflow.MlflowClient(), model_uri)
    except (MlflowException, ValueError) as err:
        raise ScoreInputError(
            f"model {model_uri} not found in {tracking.tracking_uri()}: {err}; train one with `make pipeline`"
        ) from err
    return version_uri(name, version), name, str(version)


def load_model(uri: str, batch_threads: int | None = None):
    """The pyfunc model; ``batch_threads`` sets its XGBoost threads for batches (read when it loads)."""
    import mlflow.pyfunc

    before = os.environ.get(BATCH_NTHREAD_ENV)
    if batch_threads is not None:
        os.environ[BATCH_NTHREAD_ENV] = str(batch_threads)
    try:
        return mlflow.pyfunc.load_model(uri)
    finally:
        if before is None:
            os.environ.pop(BATCH_NTHREAD_ENV, None)
        else:
            os.environ[BATCH_NTHREAD_ENV] = before
