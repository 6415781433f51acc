"""register: a train run's model -> a new version of ``flight-delay``, promoted when it earns it.

Reads: the model URI (``models:/m-…`` or ``runs:/…/model``; default: the newest train run's)
and the holdout flights. Writes: a model version with the gate's comparison as tags; on
promotion the alias ``production`` and the stage ``Production`` (the previous one archived).
The candidate and the current Production are scored on the same holdout flights before anything
is written; a failure after the version exists deletes it again, so nothing is half-registered.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from sklearn.metrics import roc_auc_score

from pyfunc.schema import TARGET
from steps import config, tracking
from steps.train import HOLDOUT_URI_TAG, MODEL_URI_TAG, MissingInputError, resolve_local

logger = logging.getLogger("skyprophet.register")
PRODUCTION_ALIAS = "production"
PRODUCTION_STAGE = "Production"
PROMOTE_CHOICES = ("auto", "force", "never")


@dataclass
class RegisterResult:
    """The version registered and whether it is now Production."""

    run_id: str
    model_name: str
    version: str
    promoted: bool
    candidate_roc_auc: float
    production_roc_auc: float | None


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


def current_production(client: mlflow.MlflowClient, name: str) -> ModelVersion | None:
    """The version the alias ``production`` points at, if the model and alias exist."""
    try:
        return client.get_model_version_by_alias(name, PRODUCTION_ALIAS)
    except MlflowException:
        return None


# Scores one model in a fresh interpreter (``-P``: the checkout is not on sys.path), so the model
# runs the ``pyfunc`` code it was logged with, not whatever this checkout or another model loaded.
# Writes the delay probability per holdout flight, NaN where the model refuses the flight's
# categories (it never saw them).
_SCORE_SCRIPT = """
import sys
import numpy as np, pandas as pd, mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])  # puts the model's own code first on sys.path
from pyfunc.schema import clean_flights, unknown_categories
flights = pd.read_parquet(sys.argv[2])
known = ~unknown_categories(clean_flights(flights), model.unwrap_python_model().spec.features.vocabulary).to_numpy()
scores = np.full(len(flights), np.nan)
scores[known] = model.predict(flights[known])["delay_probability"].to_numpy()
pd.DataFrame({"delay_probability": scores}).to_parquet(sys.argv[3])
"""


def score_isolated(model_uri: str, holdout_path: Path) -> np.ndarray:
    """Delay probabilities of ``model_uri`` on the holdout, NaN for flights it cannot score."""
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "scores.parquet"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_RUN_ID")}
        env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
        done = subprocess.run(
            [sys.executable, "-P", "-c", _SCORE_SCRIPT, model_uri, str(holdout_path), str(output)],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"scoring {model_uri} on the holdout failed:\n{done.stderr[-3000:]}")
        return pd.read_parquet(output)["delay_probability"].to_numpy()


def holdout_auc(model_uris: dict[str, str], holdout_path: Path) -> dict[str, float]:
    """ROC AUC of each model on the holdout flights that every one of them can score."""
    target = pd.read_parquet(holdout_path, columns=[TARGET])[TARGET].to_numpy()
    logger.info("gate: scoring %s on %d holdout flights", list(model_uris), len(target))
    scores = {key: score_isolated(uri, holdout_path) for key, uri in model_uris.items()}
    known = np.logical_and.reduce([~np.isnan(s) for s in scores.values()])
    return {key: float(roc_auc_score(target[known], s[known])) for key, s in scores.items()}


def find_existing_version(
    client: mlflow.MlflowClient, name: str, model_uri: str, source_run: str
) -> ModelVersion | None:
    """A version already registered from this model (a rerun registers nothing new)."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    for version in versions:
        if version.tags.get(MODEL_URI_TAG) == model_uri or (
            source_run and version.run_id == source_run and version.source == model_uri
        ):
            return version
    return None


def promote(client: mlflow.MlflowClient, name: str, version: str) -> None:
    """Alias ``production`` and stage ``Production`` on ``version``; previous one archived."""
    client.transition_model_version_stage(name, version, PRODUCTION_STAGE, archive_existing_versions=True)
    client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)


REGISTER = config.DEFAULTS["register"]


def run(
    model_uri: str = REGISTER["model_uri"],
    holdout_uri: str = REGISTER["holdout_uri"],
    model_name: str = REGISTER["model_name"],
    promote_mode: str = REGISTER["promote"],
) -> RegisterResult:
    """Gate, register and (maybe) promote inside one MLflow run."""
    if promote_mode not in PROMOTE_CHOICES:
        raise ValueError(f"promote must be one of {PROMOTE_CHOICES}, got {promote_mode!r}")
    with tracking.step_run("register") as active:
        client = mlflow.MlflowClient()
        source_run = ""
        if not model_uri:
            train_run = newest_train_run(client)
            model_uri, source_run = train_run.data.tags[MODEL_URI_TAG], train_run.info.run_id
            holdout_uri = holdout_uri or train_run.data.tags.get(HOLDOUT_URI_TAG, "")
        holdout_uri = holdout_uri or str(config.datasets_dir() / "processed" / "holdout.parquet")
        tracking.log_params(
            {"model_uri": model_uri, "holdout_uri": holdout_uri, "model_name": model_name, "promote": promote_mode}
        )
        holdout_path = resolve_local(holdout_uri)
        if not holdout_path.is_file():
            raise MissingInputError(f"holdout {holdout_uri} not found: run `mlflow run . -e etl` first")
        production = current_production(client, model_name)
        uris = {"candidate": model_uri}
        if production is not None:
            uris["production"] = f"models:/{model_name}/{production.version}"
        auc = holdout_auc(uris, holdout_path)
        production_auc = auc.get("production")
        better = production_auc is None or auc["candidate"] >= production_auc
        should_promote = promote_mode == "force" or (promote_mode == "auto" and better)
        mlflow.log_metrics({f"gate_{k}_roc_auc": v for k, v in auc.items()})
        tags = {
            "gate.candidate_roc_auc": f"{auc['candidate']:.5f}",
            "gate.production_roc_auc": "none" if production_auc is None else f"{production_auc:.5f}",
            "gate.production_version": "none" if production is None else str(production.version),
            "gate.decision": "promoted" if should_promote else "not promoted",
            "gate.holdout_uri": holdout_uri,
            "gate.promote_mode": promote_mode,
            MODEL_URI_TAG: model_uri,
        }
        version = find_existing_version(client, model_name, model_uri, source_run)
        created = version is None
        if created:
            logger.info("register: new version of %s from %s", model_name, model_uri)
            with tracking.refusals_explained(
                f"registering a version of {model_name!r}",
                f"EDIT on registered model {model_name!r} (the pipeline's grant)",
            ):
                version = mlflow.register_model(model_uri, model_name, tags={MODEL_URI_TAG: model_uri})
        else:
            logger.info("register: %s is already version %s", model_uri, version.version)
        try:
            for key, value in tags.items():
                client.set_model_version_tag(model_name, version.version, key, value)
            if should_promote:
                logger.info(
                    "promote: version %s -> alias %s, stage %s", version.version, PRODUCTION_ALIAS, PRODUCTION_STAGE
                )
                with tracking.refusals_explained(
                    f"moving {PRODUCTION_ALIAS} of {model_name!r} to version {version.version}",
                    f"MANAGE on registered model {model_name!r} (the promoter's grant)",
                ):
                    promote(client, model_name, version.version)
        except Exception:
            if created:
                logger.error("register: failed after creating version %s; deleting it", version.version)
                try:
                    client.delete_model_version(model_name, version.version)
                except MlflowException as err:  # the server went away: a rerun finds the version by its tag
                    logger.error(
                        "register: could not delete version %s (%s); rerunning register reuses it", version.version, err
                    )
            raise
        mlflow.set_tags(
            {"registered_model": model_name, "registered_version": version.version, "promoted": str(should_promote)}
        )
        run_id = active.info.run_id
    return RegisterResult(run_id, model_name, version.version, should_promote, auc["candidate"], production_auc)


def main() -> None:
    """CLI: ``python -m steps.register --model-uri ... --promote auto|force|never``."""
    defaults = config.DEFAULTS["register"]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", default=defaults["model_uri"])
    parser.add_argument("--holdout-uri", default=defaults["holdout_uri"])
    parser.add_argument("--model-name", default=defaults["model_name"])
    parser.add_argument("--promote", dest="promote_mode", choices=PROMOTE_CHOICES, default=defaults["promote"])
    args = parser.parse_args()
    tracking.setup_logging()
    result = run(**vars(args))
    logger.info("done: %s", result)


if __name__ == "__main__":
    main()
