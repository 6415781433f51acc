"""A version through the acceptance checks to Production, and back (rollback).

The version is downloaded, the digest of that copy recorded, and the copy served with a real
``mlflow models serve`` on 127.0.0.1 in an allow-listed environment (no tracking, cloud or token
credentials: the version's own code runs there), or a server already running at a URL is checked.
``skyprophet.ops.acceptance``'s smoke, contract and load checks run against it, and the quality
check scores the candidate and the current Production, isolated, on the gate's holdout period.
Everything runs under the promotion lock; the writes are ``acceptance_record.publish``'s.
"""

from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import requests
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pyfunc.model import ModelSpec
from pyfunc.schema import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SCHEDULED_TIME,
    TARGET,
    clean_flights,
    parse_scheduled_time,
    scorable,
)
from skyprophet import config
from skyprophet.config import PROMOTE_CHOICES
from skyprophet.lifecycle.acceptance_record import publish
from skyprophet.lifecycle.gate import gate_metrics
from skyprophet.mlops import digest, registry, tracking
from skyprophet.mlops.digest import DIGEST_TAG, ArtifactDigestError
from skyprophet.mlops.promotion_lock import promotion_lock
from skyprophet.mlops.registry import PRODUCTION_ALIAS, STAGING_ALIAS, production_version
from skyprophet.mlops.tags import ACCEPTANCE_FAILED_TAG, GATE_HOLDOUT_URI_TAG, GATE_VERDICT_TAG, acceptance_tag
from skyprophet.mlops.tracking import resolve_local
from skyprophet.ops import acceptance
from skyprophet.ops.isolated_scoring import score_isolated
from skyprophet.ops.processes import UVICORN_LOOP, ServedModel, isolated_env
from skyprophet.params import LOAD_CHECK, PromoteParams

logger = logging.getLogger("skyprophet.promote")


class NothingToPromote(RuntimeError):
    """No version on ``staging`` (or the picked one does not exist); the message says what to run first."""


@dataclass
class PromoteResult:
    """What promote did: the version checked, each result, whether it is Production now and what it replaced."""

    model_name: str
    version: str
    promoted: bool
    previous_version: str = ""
    results: list[acceptance.CheckResult] = field(default_factory=list)


def find_version(client: mlflow.MlflowClient, name: str, version: str) -> ModelVersion:
    """The picked version, else the one on ``staging``; NothingToPromote saying what to run first."""
    try:
        if version:
            return client.get_model_version(name, str(version))
        return client.get_model_version_by_alias(name, STAGING_ALIAS)
    except MlflowException as err:
        if tracking.refused_status(err) is not None:
            raise
        what = f"version {version} of {name!r}" if version else f"no version of {name!r} on the alias {STAGING_ALIAS!r}"
        raise NothingToPromote(
            f"{what}{' does not exist' if version else ''}: run `mlflow run . -e register` (or `make pipeline`) "
            "first, which puts each new version on staging"
        ) from err


def holdout_flights(version: ModelVersion, model_dir: Path, limit: int = 200) -> list[dict]:
    """Up to ``limit`` real flights of the gate's latest period the version can score (known categories)."""
    uri = version.tags.get(GATE_HOLDOUT_URI_TAG, "")
    if not uri:
        return []
    try:
        flights = pd.read_parquet(resolve_local(uri))
    except (MlflowException, OSError, ValueError) as err:
        logger.warning("promote: holdout %s not readable (%s); scoring the input example only", uri, err)
        return []
    spec = ModelSpec.load(str(model_dir / "artifacts" / "spec.json"))
    known = scorable(clean_flights(flights), spec.features.vocabulary)
    columns = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in flights.columns]
    chosen = flights.loc[known, columns].astype(str)
    return acceptance.json_records(chosen.sample(min(limit, len(chosen)), random_state=0))


def acceptance_flights(version: ModelVersion, model_dir: Path) -> list[dict]:
    """The version's input example (real training flights) plus real flights of the latest period."""
    return acceptance.model_flights(str(model_dir), holdout_flights(version, model_dir))


class QualityUnavailable(RuntimeError):
    """The quality check cannot compare: the holdout is unreadable (the message says which and why)."""


@dataclass
class QualityHoldout:
    """The flights of the gate's holdout period, where they are and which period they cover."""

    frame: pd.DataFrame
    path: Path
    period: str


@dataclass
class ProductionScores:
    """The current Production's probabilities on the holdout (or why there are none)."""

    label: str = "none"
    scores: np.ndarray | None = None
    error: Exception | None = None


def read_quality_holdout(candidate: ModelVersion) -> QualityHoldout:
    """The holdout from ``gate.holdout_uri`` (else etl's default); QualityUnavailable when it cannot be read.

    The pipeline's ``gate.*`` tags are not trusted: the flights are scored again here, and
    ``gate.decision`` is only shown as a hint.
    """
    uri = candidate.tags.get(GATE_HOLDOUT_URI_TAG) or str(config.datasets_dir() / "processed" / "holdout.parquet")
    try:
        path = resolve_local(uri)
        frame = pd.read_parquet(path)
    except (MlflowException, OSError, ValueError) as err:
        raise QualityUnavailable(f"holdout {uri} not readable ({err})") from None
    times = parse_scheduled_time(frame[SCHEDULED_TIME])
    return QualityHoldout(frame, path, f"{times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}")


def score_production(
    client: mlflow.MlflowClient, candidate: ModelVersion, holdout: QualityHoldout, workdir: Path
) -> ProductionScores:
    """The current Production scored on the holdout from a local copy in ``processes.isolated_env``.

    A Production version with a recorded digest is verified first; none (or the candidate itself)
    gives no scores.
    """
    production = production_version(client, candidate.name)
    if production is None or str(production.version) == str(candidate.version):
        return ProductionScores()
    label = f"v{production.version}"
    try:
        if DIGEST_TAG in production.tags:
            local = registry.download_verified(production, workdir / "production")
        else:  # moved there before digests were recorded
            label += " (no recorded digest)"
            local = registry.download_version(production.name, production.version, workdir / "production")
        return ProductionScores(label, score_isolated(str(local), holdout.path, env=isolated_env(workdir)))
    except (ArtifactDigestError, RuntimeError) as err:
        return ProductionScores(label, error=err)


def judge_quality(
    candidate: ModelVersion,
    mode: str,
    holdout: QualityHoldout,
    candidate_scores: np.ndarray | Exception,
    production: ProductionScores,
) -> acceptance.CheckResult:
    """The quality check's verdict from both models' probabilities on the holdout (``acceptance.quality``)."""
    if isinstance(candidate_scores, Exception):
        reason = f"the candidate did not score the holdout: {str(candidate_scores)[-300:]}"
        return acceptance.CheckResult("quality", False, reason)
    if production.error is not None:
        if mode != "force":
            reason = f"Production {production.label} not comparable: {str(production.error)[-300:]}"
            return acceptance.CheckResult("quality", False, reason)
        return acceptance.CheckResult(
            "quality", True, f"Production {production.label} not comparable, promotion forced"
        )
    scores = {"candidate": candidate_scores}
    if production.scores is not None:
        scores["production"] = production.scores
    figures = gate_metrics(holdout.frame[TARGET].to_numpy(), scores)
    return acceptance.quality(figures, holdout.period, production.label, mode, candidate.tags.get(GATE_VERDICT_TAG, ""))


def quality_check(
    client: mlflow.MlflowClient, candidate: ModelVersion, model_dir: Path, mode: str, workdir: Path
) -> acceptance.CheckResult:
    """The candidate and the current Production scored here on the holdout period, each in an isolated process.

    What ``promote --url`` runs (the served copy is elsewhere): both models run from local copies
    in ``processes.isolated_env`` (their code sees no credential), side by side.
    """
    try:
        holdout = read_quality_holdout(candidate)
    except QualityUnavailable as err:
        return acceptance.CheckResult("quality", False, str(err))
    with ThreadPoolExecutor(max_workers=1) as pool:
        candidate_scores = pool.submit(score_isolated, str(model_dir), holdout.path, env=isolated_env(workdir))
        production = score_production(client, candidate, holdout, workdir)
        try:
            scores: np.ndarray | Exception = candidate_scores.result()
        except RuntimeError as err:
            scores = err
    return judge_quality(candidate, mode, holdout, scores, production)


def served_scores(endpoint: acceptance.Endpoint, holdout: QualityHoldout) -> np.ndarray | Exception:
    """The candidate's probabilities on the holdout from its served copy, NaN where it cannot score a flight."""
    columns = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in holdout.frame.columns]
    try:
        return acceptance.score_flights(endpoint, holdout.frame[columns])
    except (acceptance.ScoringError, requests.RequestException) as err:
        return err


def promote(params: PromoteParams = PromoteParams(), url: str = "", id_token: str = "") -> PromoteResult:
    """Acceptance checks on the version, then (all passed, mode not never) Production; AcceptanceFailed otherwise.

    Under the promotion lock from start to end (a second promote or rollback refuses, naming this
    one). The candidate is downloaded here, its digest computed on that copy, and that copy served
    in an allow-listed environment (``processes.isolated_env``): its code sees no credential.
    ``url`` (with ``id_token``) checks a server already running there instead of serving a copy.
    """
    model_name = params.model_name
    if params.promote not in PROMOTE_CHOICES:
        raise ValueError(f"promote must be one of {PROMOTE_CHOICES}, got {params.promote!r}")
    with tracking.step_run("promote"):
        client = mlflow.MlflowClient()
        candidate = find_version(client, model_name, str(params.version or ""))
        number = str(candidate.version)
        tracking.log_step_params(params, only=("model_name", "version", "promote"), version=number)
        with promotion_lock(client, model_name, f"promote version {number}"):
            registry.sync(client, model_name)
            logger.info(
                "promote: version %s of %s (stage %s), promote=%s",
                number,
                model_name,
                candidate.current_stage,
                params.promote,
            )
            load_options = {name: getattr(params, name) for name in LOAD_CHECK}
            with tempfile.TemporaryDirectory(prefix="promote-") as tmp:
                workdir = Path(tmp)
                model_dir = registry.download_version(model_name, number, workdir / "candidate")
                artifact_digest = digest.artifact_digest(model_dir)  # before anything loads (and writes) it
                flights = acceptance_flights(candidate, model_dir)

                if url:
                    results = acceptance.run_url_checks(acceptance.Endpoint(url, id_token), flights, **load_options)
                    results.append(quality_check(client, candidate, model_dir, params.promote, workdir))
                else:
                    results = serve_and_check(
                        client, candidate, model_dir, params.promote, workdir, flights, params.workers, load_options
                    )
            failed = [r.name for r in results if not r.passed]
            mlflow.set_tags({acceptance_tag(r.name): r.tag[:5000] for r in results})
            mlflow.set_tags({ACCEPTANCE_FAILED_TAG: ",".join(failed) or "none", DIGEST_TAG: artifact_digest})
            previous = publish(client, candidate, results, params.promote, artifact_digest)
        mlflow.set_tags({"promoted": str(params.promote != "never"), registry.PREVIOUS_TAG: previous or "none"})
        return PromoteResult(model_name, number, params.promote != "never", previous, results)


def serve_and_check(
    client: mlflow.MlflowClient,
    candidate: ModelVersion,
    model_dir: Path,
    mode: str,
    workdir: Path,
    flights: list[dict],
    workers: int,
    load_options: dict,
) -> list[acceptance.CheckResult]:
    """The URL checks and the quality check against ``mlflow models serve`` of the local copy.

    The copy runs in an allow-listed environment (``processes.isolated_env``). Production is scored
    (isolated) while the server starts; the candidate's holdout probabilities come from the served
    copy itself once it answers, so its code runs in one process, not two. The quality result is last.
    """
    home = workdir / "home"
    home.mkdir()
    log = workdir / "model-server.log"
    env = isolated_env(home, {"UVICORN_LOOP": os.environ.get("UVICORN_LOOP", UVICORN_LOOP)})
    try:
        holdout: QualityHoldout | None = read_quality_holdout(candidate)
    except QualityUnavailable as err:
        holdout, unavailable = None, acceptance.CheckResult("quality", False, str(err))
    with (
        ServedModel(str(model_dir), log, env, workers=workers, isolated=True, wait=False) as server,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        production = pool.submit(score_production, client, candidate, holdout, workdir) if holdout else None
        try:
            server.wait_ready()
        except RuntimeError as err:  # the server never answered /ping: every check on it fails
            reason = f"the model server did not start: {str(err)[-400:]}"
            results = [acceptance.CheckResult(name, False, reason) for name in acceptance.URL_CHECKS]
            scores: np.ndarray | Exception = RuntimeError(reason)
        else:
            logger.info("promote: serving version %s (local copy) on %s", candidate.version, server.url)
            endpoint = acceptance.Endpoint(server.url)
            results = acceptance.run_url_checks(endpoint, flights, **load_options)
            scores = served_scores(endpoint, holdout) if holdout else RuntimeError("no holdout")
        if production is None:
            return [*results, unavailable]
        return [*results, judge_quality(candidate, mode, holdout, scores, production.result())]


def rollback(model_name: str = PromoteParams.model_name) -> PromoteResult:
    """``production`` back to the version the current one replaced, in promote's order; the history kept in tags.

    The target must itself have passed acceptance (verdict ``passed``, artifacts matching its digest).
    """
    with tracking.step_run("rollback"):
        client = mlflow.MlflowClient()
        with promotion_lock(client, model_name, "rollback"):
            registry.sync(client, model_name)
            current = production_version(client, model_name)
            if current is None:
                raise NothingToPromote(f"{model_name!r} has no {PRODUCTION_ALIAS} version to roll back")
            past = registry.production_before(client, model_name, current)
            if not past:
                raise NothingToPromote(f"version {current.version} has no previous Production version to roll back to")
            target = past[-1]
            with tempfile.TemporaryDirectory(prefix="rollback-") as tmp:
                try:
                    registry.download_verified(client.get_model_version(model_name, target), Path(tmp))
                except ArtifactDigestError as err:
                    raise NothingToPromote(f"cannot roll back to version {target}: {err}") from None
            logger.info("rollback: %s from version %s to version %s", PRODUCTION_ALIAS, current.version, target)
            registry.restore_production(client, model_name, current, past)
        mlflow.set_tags({"rollback.from": str(current.version), "rollback.to": target})
        return PromoteResult(model_name, target, True, str(current.version))
