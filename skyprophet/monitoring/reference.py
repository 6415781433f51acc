"""Monitor's reference: the ``train`` dataset the Production version's train run logged, checked by digest."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
from mlflow.entities import DatasetInput
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from pyfunc.schema import TARGET
from skyprophet.mlops import tracking
from skyprophet.mlops.tags import TRAIN_CONTEXT, TRAIN_DATASET


class ReferenceDataError(RuntimeError):
    """The Production version's training data cannot be found, or changed since training."""


def source_run(version: ModelVersion) -> str:
    """The run that logged ``version`` (its train run, whose training data is the reference)."""
    if not version.run_id:
        raise ReferenceDataError(f"{version.name} version {version.version} has no source run, so no training data")
    return version.run_id


def reference_input(client: mlflow.MlflowClient, run_id: str) -> DatasetInput:
    """The ``train`` dataset (context ``training``) the train run logged as its input."""
    for dataset_input in client.get_run(run_id).inputs.dataset_inputs:
        context = {tag.key: tag.value for tag in dataset_input.tags}.get(MLFLOW_DATASET_CONTEXT)
        if dataset_input.dataset.name == TRAIN_DATASET and context == TRAIN_CONTEXT:
            return dataset_input
    raise ReferenceDataError(
        f"train run {run_id} logged no '{TRAIN_DATASET}' dataset; retrain with `mlflow run . -e main`"
    )


def load_reference(dataset_input: DatasetInput) -> tuple[pd.DataFrame, mlflow.data.Dataset]:
    """Download the reference through its lineage and check it is still what training saw (digest)."""
    logged = dataset_input.dataset
    source_uri = json.loads(logged.source).get("uri", logged.source)
    try:
        local = mlflow.data.get_source(dataset_input).load()
        frame = pd.read_parquet(local)
    except (MlflowException, OSError, ValueError) as err:
        raise ReferenceDataError(f"cannot load the training data {source_uri}: {err}") from err
    dataset = mlflow.data.from_pandas(
        frame, source=tracking.dataset_source(source_uri), name=TRAIN_DATASET, targets=TARGET
    )
    if dataset.digest != logged.digest:
        raise ReferenceDataError(
            f"the training data at {source_uri} changed since training (digest {dataset.digest}, "
            f"logged {logged.digest}); retrain (`mlflow run . -e main`) so the lineage points at kept data"
        )
    return frame, dataset
