"""The pipeline chained: etl -> train -> register -> promote, each an entry point of this project in its own run.

Like ``mlflow/mlflow`` ``examples/multistep_workflow``: each step is launched with
``mlflow.projects.run`` on this project, and the next step receives the previous run's artifact
URIs (``runs:/<etl>/processed``, the train run's ``models:/…``, the registered version's number),
never a local path. A version whose only failed check is ``quality`` under ``auto`` is an outcome,
not a failure; any other failed check is (a broken model is a broken pipeline).
"""

from __future__ import annotations

import logging

import mlflow
import mlflow.projects
from mlflow.projects import ExecutionException

from skyprophet import config
from skyprophet.mlops import tags, tracking
from skyprophet.mlops.tags import (
    ACCEPTANCE_FAILED_TAG,
    ACCEPTANCE_QUALITY_TAG,
    GATE_DECISION_TAG,
    MODEL_URI_TAG,
    REGISTERED_VERSION_TAG,
)
from skyprophet.science.recipe import Recipe

logger = logging.getLogger("skyprophet.main")


STEPS = ("etl", "train", "register", "promote")


class StepFailed(RuntimeError):
    """An entry point's run ended FAILED; ``run`` is that run (its tags say why)."""

    def __init__(self, entry_point: str, run: mlflow.entities.Run) -> None:
        self.run = run
        super().__init__(f"step {entry_point} failed (run {run.info.run_id})")


def run_step(entry_point: str, parameters: dict) -> mlflow.entities.Run:
    """Run one entry point of this project synchronously and return its finished run; StepFailed if it failed."""
    active = mlflow.active_run()
    try:
        submitted = mlflow.projects.run(
            str(config.PROJECT_ROOT),
            entry_point=entry_point,
            parameters={k: str(v) for k, v in parameters.items()},
            env_manager="local",
            experiment_id=active.info.experiment_id,
            synchronous=True,
        )
    except ExecutionException:
        # The failed run is the newest run of this entry point under the main run.
        failed = mlflow.MlflowClient().search_runs(
            [active.info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{active.info.run_id}' "
            f"and tags.`{tracking.STEP_TAG}` = '{entry_point}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not failed:
            raise
        raise StepFailed(entry_point, failed[0]) from None
    return mlflow.MlflowClient().get_run(submitted.run_id)


def run_promote(version: str, mode: str, promote_params: dict) -> dict[str, str]:
    """Run promote on ``version``; a quality-only failure under ``auto`` is an outcome, anything else StepFailed."""
    try:
        promote_run = run_step("promote", {**promote_params, "version": version, "promote": mode})
    except StepFailed as err:
        failed = err.run.data.tags.get(ACCEPTANCE_FAILED_TAG, "")
        if mode == "auto" and failed == "quality":
            logger.info(
                "promote: version %s stays in Staging: %s", version, err.run.data.tags.get(ACCEPTANCE_QUALITY_TAG)
            )
            return {"promote_run_id": err.run.info.run_id, "promoted": "False", "acceptance_failed": failed}
        logger.error("promote: version %s failed acceptance (%s); run %s", version, failed or "?", err.run.info.run_id)
        raise
    return {"promote_run_id": promote_run.info.run_id, "promoted": "True", "acceptance_failed": "none"}


def run_pipeline(
    etl_params: dict, train_params: dict, register_params: dict, promote_params: dict | None = None
) -> dict[str, str]:
    """Chain the steps and record their run ids on the main run."""
    Recipe.of(train_params).check()  # before etl runs, not after
    with tracking.step_run("main"):
        etl_run = run_step("etl", etl_params)
        processed_uri = f"runs:/{etl_run.info.run_id}/processed"
        train_run = run_step("train", {**train_params, "processed_uri": processed_uri})
        model_uri = train_run.data.tags[MODEL_URI_TAG]
        register_run = run_step(
            "register",
            {**register_params, "model_uri": model_uri, "holdout_uri": f"{processed_uri}/holdout.parquet"},
        )
        ids = {
            "etl_run_id": etl_run.info.run_id,
            "train_run_id": train_run.info.run_id,
            "register_run_id": register_run.info.run_id,
            "model_uri": model_uri,
            "registered_version": register_run.data.tags.get(REGISTERED_VERSION_TAG, ""),
            "gate_decision": register_run.data.tags.get(GATE_DECISION_TAG, ""),
            "promoted": "False",
        }
        mode = register_params.get("promote", "auto")
        if mode != "never" and tags.is_staged(register_run.data.tags):
            ids.update(run_promote(ids["registered_version"], mode, promote_params or {}))
        else:
            logger.info("promote: skipped (promote=%s); version %s on staging", mode, ids["registered_version"])
        mlflow.set_tags({f"skyprophet.{k}": v for k, v in ids.items()})
    return ids
