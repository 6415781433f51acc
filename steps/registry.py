"""Which version is Production (and Staging): one rule, one error message, for every step and tool.

``promote`` keeps the alias and the stage of the same name in step (stages are deprecated in
MLflow 3 but are what the UI's older flow and ``models:/<name>/Production`` use), so the alias
answers for both.
"""

from __future__ import annotations

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
