"""register: a train run's model -> a new version of ``flight-delay`` on the alias ``staging``.

Reads: the model URI (``models:/m-…`` or ``runs:/…/model``; default: the newest train run's)
and the holdout flights. Writes: a model version with the gate's comparison as tags
(``gate.decision``: the candidate against the current Production on the latest period) and
description, on the alias ``staging`` and the stage ``Staging`` (kept in step; the previous
Staging version archived). It never moves ``production``: ``steps.promote`` does, after the
acceptance checks. The candidate and the current Production are scored on the same holdout
flights before anything is written, and the version is created with every gate tag in one call;
a failure after the version exists deletes it again where allowed (under auth deleting needs
MANAGE; the version then keeps its tags and a rerun reuses it), so nothing is half-registered.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from sklearn.metrics import average_precision_score, roc_auc_score

from pyfunc.schema import SCHEDULED_TIME, TARGET, parse_scheduled_time
from skyprophet import config
from skyprophet.config import PROMOTE_CHOICES
from skyprophet.mlops import tags as run_tags
from skyprophet.mlops import tracking
from skyprophet.mlops.registry import STAGING_ALIAS, STAGING_STAGE, production_version, transition_stage
from skyprophet.mlops.tags import (
    CANDIDATE_URI_TAG,
    GATE_DECISION_TAG,
    HOLDOUT_URI_TAG,
    MODEL_URI_TAG,
    REFIT_OF_TAG,
    REFIT_RUN_TAG,
    REGISTERED_MODEL_TAG,
    REGISTERED_VERSION_TAG,
    STAGED_TAG,
    TRAINED_THROUGH_TAG,
)
from skyprophet.mlops.tracking import MissingInputError, artifact_location, resolve_local
from skyprophet.science import metrics
from skyprophet.science.fit import fit_model, log_fitted
from skyprophet.science.recipe import recipe_of

logger = logging.getLogger("skyprophet.register")
# Where a refit run keeps the flights it was fitted on (train + holdout).
REFIT_FOLDER, REFIT_FLIGHTS = "training", "train.parquet"


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


# Scores one model in a fresh interpreter (``-P``: the checkout is not on sys.path), so the model
# runs the ``pyfunc`` code it was logged with, not whatever this checkout or another model loaded.
# Writes the delay probability per holdout flight, NaN where the model says it cannot score the
# flight (``unknown_categories=score`` names the fields it never saw in ``unknown_fields``).
_SCORE_SCRIPT = """
import sys
import numpy as np, pandas as pd, mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
flights = pd.read_parquet(sys.argv[2])
schema = model.metadata.get_input_schema()  # None since the flights' contract is the model's own
inputs = [c for c in schema.input_names() if c in flights.columns] if schema else list(flights.columns)
answer = model.predict(flights[inputs], params={"unknown_categories": "score"})
scores = np.array(answer["delay_probability"], dtype=float)
scores[np.asarray(answer["unknown_fields"]) != ""] = np.nan
pd.DataFrame({"delay_probability": scores}).to_parquet(sys.argv[3])
"""


def score_isolated(model_uri: str, holdout_path: Path, env: dict[str, str] | None = None) -> np.ndarray:
    """Delay probabilities of ``model_uri`` on the holdout, NaN for flights it cannot score.

    ``env``: the whole environment of the scoring process (``promote`` scores a local copy with
    ``processes.isolated_env``); by default ours, with the tracking URI, minus PYTHONPATH.
    """
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "scores.parquet"
        if env is None:
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


GATE_METRICS = ("roc_auc", "pr_auc", "ece")


def gate_metrics(target: np.ndarray, scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """ROC AUC, PR AUC and ECE of each model on the holdout flights that every one of them can score."""
    known = np.logical_and.reduce([~np.isnan(s) for s in scores.values()])
    result = {}
    for key, score in scores.items():
        y, p = target[known], score[known]
        result[key] = {
            "roc_auc": float(roc_auc_score(y, p)),
            "pr_auc": float(average_precision_score(y, p)),
            "ece": metrics.expected_calibration_error(y, p),
        }
    return result


def trained_through(version: ModelVersion) -> pd.Timestamp | None:
    """The last scheduled time among the version's training flights (tagged by train), if known."""
    return run_tags.trained_through(version.tags)


def production_scores(
    client: mlflow.MlflowClient, production: ModelVersion, holdout_path: Path, holdout: pd.DataFrame, train_path: Path
) -> tuple[np.ndarray, str]:
    """Production's probabilities on the holdout, and how they were obtained.

    A Production version that has not seen the holdout period is scored as it is, with its own
    code. One that has (it was refitted on flights of that period) would be judged on flights it
    learned, so its recipe is refitted on the candidate's training flights and scored instead.
    """
    period_start = parse_scheduled_time(holdout[SCHEDULED_TIME]).min()
    seen_until = trained_through(production)
    if seen_until is None or seen_until < period_start:
        return score_isolated(f"models:/{production.name}/{production.version}", holdout_path), "served model"
    recipe = recipe_of(client.get_run(production.run_id))
    logger.info("gate: Production %s has seen the holdout period; refitting its recipe", production.version)
    fitted, _ = fit_model(pd.read_parquet(train_path), recipe)
    return fitted.scores(holdout), "recipe refitted on the candidate's training flights"


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


def stage(client: mlflow.MlflowClient, name: str, version: ModelVersion) -> bool:
    """Alias ``staging`` and stage ``Staging`` on ``version`` (the previous Staging one archived).

    A version that already left Staging (a rerun of register on a promoted or archived version)
    stays where it is; returns whether it was staged.
    """
    current = client.get_model_version(name, version.version).current_stage
    if current not in ("None", STAGING_STAGE):
        logger.info("register: version %s is in %s already; staging left as it is", version.version, current)
        return False
    transition_stage(client, name, version.version, STAGING_STAGE)
    client.set_registered_model_alias(name, STAGING_ALIAS, version.version)
    return True


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


def model_threshold(model_uri: str) -> float | None:
    """The decision threshold stored in the model's ``spec.json`` (the 0/1 ``delay`` cut), if readable."""
    import json

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
        return float(json.loads((local / "artifacts" / "spec.json").read_text(encoding="utf-8"))["threshold"])
    except (MlflowException, OSError, KeyError, ValueError):
        return None


def describe(
    gate: dict[str, dict[str, float]],
    period: str,
    production: ModelVersion | None,
    how: str,
    decision: str,
    threshold: float | None = None,
) -> str:
    """The version's description: what a person promoting it in the MLflow UI needs to see."""
    lines = [
        f"Gate on the latest period ({period}), flights every model can score: {decision}.",
        "",
        f"Decision threshold (delay = 1 at or above): {'unknown' if threshold is None else f'{threshold:.4f}'}.",
        "",
        "| model | ROC AUC | PR AUC | ECE |",
        "|---|---|---|---|",
    ]
    for key, values in gate.items():
        label = key if key == "candidate" else f"production v{production.version} ({how})"
        lines.append(f"| {label} | {values['roc_auc']:.4f} | {values['pr_auc']:.4f} | {values['ece']:.4f} |")
    return "\n".join(lines)


REGISTER = config.DEFAULTS["register"]


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


@dataclass
class Gate:
    """The gate's comparison on the holdout: each model's figures, how Production was scored, the verdict.

    ``passed``: the candidate's ROC AUC is at least Production's (or there is no Production) on the
    latest period; recorded as ``gate.decision`` = ``promoted`` / ``not promoted``, which
    ``steps.promote``'s quality check reads (``promote=force`` overrides it, nothing else).
    """

    figures: dict[str, dict[str, float]]
    period: str
    production: ModelVersion | None
    production_scored_as: str
    passed: bool

    def tags(self, holdout_uri: str, promote_mode: str) -> dict[str, str]:
        """The version tags a person reads in the UI (and the tests and CD read back)."""
        tags = {
            "gate.period": self.period,
            "gate.production_version": "none" if self.production is None else str(self.production.version),
            "gate.production_scored_as": self.production_scored_as or "none",
            "gate.decision": "promoted" if self.passed else "not promoted",
            "gate.holdout_uri": holdout_uri,
            "gate.promote_mode": promote_mode,
        }
        for key in ("candidate", "production"):
            for metric in GATE_METRICS:
                value = self.figures.get(key, {}).get(metric)
                tags[f"gate.{key}_{metric}"] = "none" if value is None else f"{value:.5f}"
        return tags


def run_gate(client: mlflow.MlflowClient, model_uri: str, model_name: str, processed: Path, promote_mode: str) -> Gate:
    """Score the candidate and the current Production on the holdout (the latest period); decide."""
    holdout_path = processed / "holdout.parquet"
    holdout = pd.read_parquet(holdout_path)
    times = parse_scheduled_time(holdout[SCHEDULED_TIME])
    period = f"{times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}"
    logger.info("gate: %d holdout flights, %s", len(holdout), period)
    production, how = production_version(client, model_name), ""
    # The two scorings are separate processes (or Production's refit): side by side, not one after the other.
    with ThreadPoolExecutor(max_workers=2) as pool:
        candidate = pool.submit(score_isolated, model_uri, holdout_path)
        if production is not None:
            scores_how = pool.submit(
                production_scores, client, production, holdout_path, holdout, processed / "train.parquet"
            )
        scores = {"candidate": candidate.result()}
        if production is not None:
            scores["production"], how = scores_how.result()
    figures = gate_metrics(holdout[TARGET].to_numpy(), scores)
    better = production is None or figures["candidate"]["roc_auc"] >= figures["production"]["roc_auc"]
    return Gate(figures, period, production, how, better)


def run(
    model_uri: str = REGISTER["model_uri"],
    holdout_uri: str = REGISTER["holdout_uri"],
    model_name: str = REGISTER["model_name"],
    promote_mode: str = REGISTER["promote"],
) -> RegisterResult:
    """Gate, refit (when it may be promoted), register and stage inside one MLflow run.

    ``promote_mode`` is recorded (``gate.promote_mode``); it decides the refit: a version the gate
    passed, or one to be forced, is refitted on all flights, since it may go to Production.
    """
    if promote_mode not in PROMOTE_CHOICES:
        raise ValueError(f"promote must be one of {PROMOTE_CHOICES}, got {promote_mode!r}")
    with tracking.step_run("register") as active:
        client = mlflow.MlflowClient()
        if not model_uri:
            train_run = newest_train_run(client)
            model_uri = train_run.data.tags[MODEL_URI_TAG]
            holdout_uri = holdout_uri or train_run.data.tags.get(HOLDOUT_URI_TAG, "")
        holdout_uri = holdout_uri or str(config.datasets_dir() / "processed" / "holdout.parquet")
        tracking.log_params(
            {"model_uri": model_uri, "holdout_uri": holdout_uri, "model_name": model_name, "promote": promote_mode}
        )
        processed = processed_folder(holdout_uri)
        gate = run_gate(client, model_uri, model_name, processed, promote_mode)
        mlflow.log_metrics({f"gate_{k}_{m}": v for k, figures in gate.figures.items() for m, v in figures.items()})
        version = find_existing_version(client, model_name, model_uri)
        created, refit_run = version is None, ""
        tags = gate.tags(holdout_uri, promote_mode)
        if created:
            source_uri = model_uri
            source = candidate_run(client, model_uri)
            may_serve = gate.passed or promote_mode == "force"
            if may_serve and source is not None and source.data.tags.get(tracking.STEP_TAG) == "train":
                source_uri, refit_run = refit_on_all_flights(source, processed)
                tags[REFIT_RUN_TAG] = refit_run
            served = candidate_run(client, source_uri)
            if served is not None and (through := served.data.tags.get(TRAINED_THROUGH_TAG)):
                tags[TRAINED_THROUGH_TAG] = through
            threshold = model_threshold(source_uri)
            tags["model.threshold"] = "unknown" if threshold is None else f"{threshold:.5f}"
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
                threshold = model_threshold(f"models:/{model_name}/{version.version}")
                tags["model.threshold"] = "unknown" if threshold is None else f"{threshold:.5f}"
                for key, value in tags.items():
                    client.set_model_version_tag(model_name, version.version, key, value)
            decision = tags["gate.decision"] + (f"; refitted on all flights in run {refit_run}" if refit_run else "")
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
                    tags["gate.decision"],
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
                GATE_DECISION_TAG: tags["gate.decision"],
                STAGED_TAG: run_tags.staged_value(staged),
            }
        )
        run_id = active.info.run_id
    production = gate.figures.get("production", {}).get("roc_auc")
    return RegisterResult(
        run_id, model_name, version.version, gate.passed, gate.figures["candidate"]["roc_auc"], production, refit_run
    )


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


def main() -> None:
    """CLI: ``python -m steps.register --model-uri ... --promote auto|force|never``."""
    args = vars(config.argument_parser("register", __doc__).parse_args())
    promote_mode = args.pop("promote")
    tracking.setup_logging()
    result = run(**args, promote_mode=promote_mode)
    logger.info("done: %s", result)


if __name__ == "__main__":
    main()
