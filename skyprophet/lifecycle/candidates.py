"""Where a candidate comes from: the train run that logged it, a version already registered from it, its refit.

``register`` reads these before it writes anything.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from skyprophet.mlops import tracking
from skyprophet.mlops.tags import CANDIDATE_URI_TAG, MODEL_URI_TAG, REFIT_OF_TAG
from skyprophet.mlops.tracking import MissingInputError, artifact_location, resolve_local
from skyprophet.science.fit import log_fitted
from skyprophet.science.recipe import recipe_of

logger = logging.getLogger("skyprophet.register")


# Where a refit run keeps the flights it was fitted on (train + holdout).
REFIT_FOLDER, REFIT_FLIGHTS = "training", "train.parquet"


def newest_train_run(client: mlflow.MlflowClient) -> mlflow.entities.Run:
    """The most recent finished train run that logged a model, in any experiment."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`{tracking.STEP_TAG}` = 'train' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs or MODEL_URI_TAG not in runs[0].data.tags:
        raise MissingInputError("no finished train run with a model: run `mlflow run . -e train` first")
    return runs[0]


def find_existing_version(client: mlflow.MlflowClient, name: str, model_uri: str) -> ModelVersion | None:
    """A version already registered from this candidate (a rerun registers nothing new)."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    for version in versions:
        if version.tags.get(CANDIDATE_URI_TAG) == model_uri or version.tags.get(MODEL_URI_TAG) == model_uri:
            return version
    return None


def refit_on_all_flights(candidate_run: mlflow.entities.Run, processed: Path) -> tuple[str, str]:
    """The candidate's recipe fitted on train + holdout, logged in a nested run; its model URI and run id.

    Only a candidate of train's own is refitted (train's recipe is what its run logged); the
    version then serves a model that has seen the most recent flights.
    """
    flights = pd.concat(
        [pd.read_parquet(processed / "train.parquet"), pd.read_parquet(processed / "holdout.parquet")],
        ignore_index=True,
    )
    recipe = recipe_of(candidate_run)
    with mlflow.start_run(nested=True, run_name="refit") as refit:
        mlflow.set_tags({tracking.STEP_TAG: "refit", REFIT_OF_TAG: candidate_run.info.run_id})
        logger.info("refit: the candidate's recipe on all %d flights", len(flights))
        # The training flights are kept with the run, where its lineage (monitor's reference) points.
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / REFIT_FLIGHTS
            flights.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), REFIT_FOLDER)
        source = artifact_location(f"runs:/{refit.info.run_id}/{REFIT_FOLDER}/{REFIT_FLIGHTS}")
        model_uri = log_fitted(flights, recipe, source=source)
    return model_uri, refit.info.run_id


def candidate_run(client: mlflow.MlflowClient, model_uri: str) -> mlflow.entities.Run | None:
    """The run that logged ``model_uri`` (``runs:/<id>/…`` or a logged model ``models:/m-…``)."""
    try:
        if model_uri.startswith("runs:/"):
            return client.get_run(model_uri[len("runs:/") :].split("/", 1)[0])
        if model_uri.startswith("models:/m-"):
            return client.get_run(mlflow.get_logged_model(model_uri[len("models:/") :]).source_run_id)
    except MlflowException:
        return None
    return None


def processed_folder(holdout_uri: str) -> Path:
    """The local folder holding etl's ``train.parquet`` and ``holdout.parquet`` beside ``holdout_uri``."""
    folder_uri = holdout_uri.rsplit("/", 1)[0] if holdout_uri.endswith(".parquet") else holdout_uri
    try:
        folder = resolve_local(folder_uri)
    except MlflowException as err:
        raise MissingInputError(f"holdout {holdout_uri} not found: run `mlflow run . -e etl` first") from err
    if not (folder / "holdout.parquet").is_file() or not (folder / "train.parquet").is_file():
        raise MissingInputError(
            f"holdout {holdout_uri} (and its train.parquet) not found: run `mlflow run . -e etl` first"
        )
    return folder
