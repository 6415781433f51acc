"""Which version is Production (and Staging): one rule, one error message, for every step and tool.

``promote`` keeps the alias and the stage of the same name in step (stages are deprecated in
MLflow 3 but are what the UI's older flow and ``models:/<name>/Production`` use), so the alias
answers for both.
"""

from __future__ import annotations

import warnings

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

PRODUCTION_ALIAS, PRODUCTION_STAGE = "production", "Production"
STAGING_ALIAS, STAGING_STAGE = "staging", "Staging"


class NoProductionVersionError(FileNotFoundError):
    """The registered model has no Production version yet; the message says what to run."""


def production_version(client: mlflow.MlflowClient, name: str) -> ModelVersion | None:
    """The version under the alias ``production``, or None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, PRODUCTION_ALIAS)
    except MlflowException:
        return None


def require_production(client: mlflow.MlflowClient, name: str) -> ModelVersion:
    """``production_version``, or NoProductionVersionError saying what to run first."""
    version = production_version(client, name)
    if version is None:
        raise NoProductionVersionError(f"model {name} has no Production version: run `mlflow run . -e main` first")
    return version


def transition_stage(client: mlflow.MlflowClient, name: str, version: str, stage: str) -> None:
    """Stage ``stage`` on ``version``, the version in it before archived (what the alias of that name says).

    MLflow warns (FutureWarning) on every call that stages are deprecated; SkyProphet keeps them on
    purpose (see above), so the warning would repeat on each register, promote and rollback while
    asking for nothing that can be done here. It is ignored for this call only.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"``mlflow\.tracking\.client\.MlflowClient\.transition_model_version_stage``",
            category=FutureWarning,
        )
        client.transition_model_version_stage(name, version, stage, archive_existing_versions=True)
