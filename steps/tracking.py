"""The one module that talks to MLflow set-up: tracking URI, experiment, step runs, client."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from urllib.parse import urlparse

import mlflow
import requests
from mlflow.tracking import MlflowClient

from steps.config import PROJECT_ROOT

EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
DEFAULT_EXPERIMENT = "skyprophet"
STEP_TAG = "skyprophet.step"
logger = logging.getLogger("skyprophet")


class TrackingUnavailableError(RuntimeError):
    """The tracking server does not answer; nothing was written."""


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, or the embedded SQLite store in the checkout."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def check_tracking_reachable(uri: str) -> None:
    """Fail at once, naming the URI, when an HTTP tracking server does not answer."""
    if urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
    except requests.RequestException as err:
        raise TrackingUnavailableError(
            f"MLflow tracking server at {uri} does not answer ({err.__class__.__name__}); "
            "start it (make tracking-server) or set MLFLOW_TRACKING_URI"
        ) from err


def configure() -> MlflowClient:
    """Point MLflow at the tracking store (checked first) and return a client for it."""
    uri = tracking_uri()
    check_tracking_reachable(uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


@contextlib.contextmanager
def step_run(step: str) -> Iterator[mlflow.ActiveRun]:
    """The MLflow run a step works in: the one ``mlflow run`` started, or a new one."""
    configure()
    if not os.environ.get("MLFLOW_RUN_ID"):
        mlflow.set_experiment(os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT))
    with mlflow.start_run() as run:
        mlflow.set_tag(STEP_TAG, step)
        logger.info("%s: run %s in experiment %s", step, run.info.run_id, run.info.experiment_id)
        yield run


def log_params(params: dict) -> None:
    """Log the step's parameters; ``mlflow run`` may have logged them already as given.

    A value the step resolved differently (``""`` to a default path, ``5`` to ``5.0``) goes to a
    ``resolved.<name>`` tag, since MLflow refuses to change a logged parameter.
    """
    run = mlflow.active_run()
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data.params
    mlflow.log_params({k: v for k, v in params.items() if k not in logged})
    mlflow.set_tags({f"resolved.{k}": v for k, v in params.items() if k in logged and logged[k] != str(v)})


def setup_logging() -> None:
    """One-line log records for the step CLIs."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
