"""A candidate -> a registry version on the alias ``staging``, with the gate's comparison as its tags.

The candidate and the current Production are scored on the same holdout flights before anything
is written, and the version is created with every gate tag in one call; a failure after the
version exists deletes it again where allowed (under auth deleting needs MANAGE; the version then
keeps its tags and a rerun reuses it), so nothing is half-registered. ``production`` never moves
here: ``skyprophet.lifecycle.promotion`` moves it, after the acceptance checks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException

from skyprophet import config
from skyprophet.config import PROMOTE_CHOICES
from skyprophet.lifecycle.candidates import (
    candidate_run,
    find_existing_version,
    newest_train_run,
    processed_folder,
    refit_on_all_flights,
)
from skyprophet.lifecycle.gate import describe, model_threshold, run_gate
from skyprophet.mlops import tags as run_tags
from skyprophet.mlops import tracking
from skyprophet.mlops.registry import STAGING_ALIAS, STAGING_STAGE, stage, version_uri
from skyprophet.mlops.tags import (
    CANDIDATE_URI_TAG,
    GATE_DECISION_TAG,
    GATE_VERDICT_TAG,
    HOLDOUT_URI_TAG,
    MODEL_URI_TAG,
    REFIT_RUN_TAG,
    REGISTERED_MODEL_TAG,
    REGISTERED_VERSION_TAG,
    STAGED_TAG,
    THRESHOLD_TAG,
    TRAINED_THROUGH_TAG,
)
from skyprophet.params import RegisterParams

logger = logging.getLogger("skyprophet.register")


@dataclass
class RegisterResult:
    """The version registered (now on ``staging`` unless it already left Staging) and the gate's verdict."""

    run_id: str
    model_name: str
    version: str
    gate_passed: bool
    candidate_roc_auc: float
    production_roc_auc: float | None
    refit_run_id: str = ""


def register(params: RegisterParams = RegisterParams()) -> RegisterResult:
    """Gate, refit (when it may be promoted), register and stage inside one MLflow run.

    ``params.promote`` is recorded (``gate.promote_mode``); it decides the refit: a version the gate
    passed, or one to be forced, is refitted on all flights, since it may go to Production.
    """
    model_uri, holdout_uri = params.model_uri, params.holdout_uri  # "" resolved below
    model_name = params.model_name
    if params.promote not in PROMOTE_CHOICES:
        raise ValueError(f"promote must be one of {PROMOTE_CHOICES}, got {params.promote!r}")
    with tracking.step_run("register") as active:
        client = mlflow.MlflowClient()
        if not model_uri:
            train_run = newest_train_run(client)
            model_uri = train_run.data.tags[MODEL_URI_TAG]
            holdout_uri = holdout_uri or train_run.data.tags.get(HOLDOUT_URI_TAG, "")
        holdout_uri = holdout_uri or str(config.datasets_dir() / "processed" / "holdout.parquet")
        tracking.log_step_params(params, model_uri=model_uri, holdout_uri=holdout_uri)
        processed = processed_folder(holdout_uri)
        gate = run_gate(client, model_uri, model_name, processed, params.promote)
        mlflow.log_metrics({f"gate_{k}_{m}": v for k, figures in gate.figures.items() for m, v in figures.items()})
        version = find_existing_version(client, model_name, model_uri)
        created, refit_run = version is None, ""
        tags = gate.tags(holdout_uri, params.promote)
        if created:
            source_uri = model_uri
            source = candidate_run(client, model_uri)
            may_serve = gate.passed or params.promote == "force"
            if may_serve and source is not None and source.data.tags.get(tracking.STEP_TAG) == "train":
                source_uri, refit_run = refit_on_all_flights(source, processed)
                tags[REFIT_RUN_TAG] = refit_run
            served = candidate_run(client, source_uri)
            if served is not None and (through := served.data.tags.get(TRAINED_THROUGH_TAG)):
                tags[TRAINED_THROUGH_TAG] = through
            threshold = model_threshold(source_uri)
            tags[THRESHOLD_TAG] = "unknown" if threshold is None else f"{threshold:.5f}"
            logger.info("register: new version of %s from %s", model_name, source_uri)
            # One call with every tag: under auth the pipeline cannot delete a version (that needs
            # MANAGE), so a version must never exist without its gate tags.
            with tracking.refusals_explained(
                f"registering a version of {model_name!r}",
                f"EDIT on registered model {model_name!r} (the pipeline's grant)",
            ):
                version = mlflow.register_model(
                    source_uri,
                    model_name,
                    tags={**tags, CANDIDATE_URI_TAG: model_uri, MODEL_URI_TAG: source_uri},
                )
        else:
            logger.info("register: %s is already version %s", model_uri, version.version)
        try:
            if not created:
                if version.run_id and (through := client.get_run(version.run_id).data.tags.get(TRAINED_THROUGH_TAG)):
                    tags[TRAINED_THROUGH_TAG] = through
                threshold = model_threshold(version_uri(model_name, version.version))
                tags[THRESHOLD_TAG] = "unknown" if threshold is None else f"{threshold:.5f}"
                for key, value in tags.items():
                    client.set_model_version_tag(model_name, version.version, key, value)
            decision = tags[GATE_VERDICT_TAG] + (f"; refitted on all flights in run {refit_run}" if refit_run else "")
            client.update_model_version(
                model_name,
                version.version,
                description=describe(
                    gate.figures, gate.period, gate.production, gate.production_scored_as, decision, threshold
                ),
            )
            with tracking.refusals_explained(
                f"moving {STAGING_ALIAS} of {model_name!r} to version {version.version}",
                f"EDIT on registered model {model_name!r} (the pipeline's grant)",
            ):
                staged = stage(client, model_name, version)
            if staged:
                logger.info(
                    "register: version %s -> alias %s, stage %s (gate: %s); next: `make promote` (steps.promote)",
                    version.version,
                    STAGING_ALIAS,
                    STAGING_STAGE,
                    tags[GATE_VERDICT_TAG],
                )
        except Exception:
            if created:  # it carries its gate tags already; a rerun finds it by its candidate tag and reuses it
                logger.error("register: failed after creating version %s; deleting it", version.version)
                try:
                    client.delete_model_version(model_name, version.version)
                except MlflowException as err:  # no MANAGE (under auth), or the server went away
                    logger.error(
                        "register: could not delete version %s (%s); it keeps its gate tags and rerunning register "
                        "reuses it",
                        version.version,
                        err,
                    )
            raise
        mlflow.set_tags(
            {
                REGISTERED_MODEL_TAG: model_name,
                REGISTERED_VERSION_TAG: version.version,
                GATE_DECISION_TAG: tags[GATE_VERDICT_TAG],
                STAGED_TAG: run_tags.staged_value(staged),
            }
        )
        run_id = active.info.run_id
    production = gate.figures.get("production", {}).get("roc_auc")
    return RegisterResult(
        run_id, model_name, version.version, gate.passed, gate.figures["candidate"]["roc_auc"], production, refit_run
    )
