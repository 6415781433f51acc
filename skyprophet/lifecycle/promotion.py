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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
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
    uri = version.tags.get("gate.holdout_uri", "")
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


def quality_check(
    client: mlflow.MlflowClient, candidate: ModelVersion, model_dir: Path, mode: str, workdir: Path
) -> acceptance.CheckResult:
    """The candidate and the current Production scored here on the holdout period, each in an isolated process.

    The pipeline's ``gate.*`` tags are not trusted: the holdout location is taken from
    ``gate.holdout_uri`` (else etl's default) and ``gate.decision`` is only shown as a hint. Both
    models run from local copies in ``processes.isolated_env`` (their code sees no credential);
    a Production version with a recorded digest is verified first.
    """
    holdout_uri = candidate.tags.get("gate.holdout_uri") or str(config.datasets_dir() / "processed" / "holdout.parquet")
    try:
        holdout_path = resolve_local(holdout_uri)
        holdout = pd.read_parquet(holdout_path)
    except (MlflowException, OSError, ValueError) as err:
        return acceptance.CheckResult("quality", False, f"holdout {holdout_uri} not readable ({err})")
    times = parse_scheduled_time(holdout[SCHEDULED_TIME])
    period = f"{times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}"
    env = isolated_env(workdir)
    production = production_version(client, candidate.name)
    label = "none"
    # Each model scores in a process of its own; the candidate's runs while Production is fetched and scored.
    with ThreadPoolExecutor(max_workers=1) as pool:
        candidate_scores = pool.submit(score_isolated, str(model_dir), holdout_path, env=env)
        compared, production_error = None, None
        if production is not None and str(production.version) != str(candidate.version):
            label = f"v{production.version}"
            try:
                if DIGEST_TAG in production.tags:
                    production_dir = registry.download_verified(production, workdir / "production")
                else:  # moved there before digests were recorded
                    label += " (no recorded digest)"
                    production_dir = registry.download_version(
                        production.name, production.version, workdir / "production"
                    )
                compared = score_isolated(str(production_dir), holdout_path, env=env)
            except (ArtifactDigestError, RuntimeError) as err:
                production_error = err
        try:
            scores = {"candidate": candidate_scores.result()}
        except RuntimeError as err:
            reason = f"the candidate did not score the holdout: {str(err)[-300:]}"
            return acceptance.CheckResult("quality", False, reason)
    if production_error is not None:
        if mode != "force":
            reason = f"Production {label} not comparable: {str(production_error)[-300:]}"
            return acceptance.CheckResult("quality", False, reason)
        return acceptance.CheckResult("quality", True, f"Production {label} not comparable, promotion forced")
    if compared is not None:
        scores["production"] = compared
    figures = gate_metrics(holdout[TARGET].to_numpy(), scores)
    return acceptance.quality(figures, period, label, mode, candidate.tags.get("gate.decision", ""))


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

                def quality() -> acceptance.CheckResult:
                    return quality_check(client, candidate, model_dir, params.promote, workdir)

                if url:
                    results = acceptance.run_url_checks(acceptance.Endpoint(url, id_token), flights, **load_options)
                    results.append(quality())
                else:  # the quality check runs while the server starts
                    results = serve_and_check(
                        model_dir, number, workdir, flights, params.workers, load_options, quality
                    )
            failed = [r.name for r in results if not r.passed]
            mlflow.set_tags({f"acceptance.{r.name}": r.tag[:5000] for r in results})
            mlflow.set_tags({"acceptance.failed": ",".join(failed) or "none", DIGEST_TAG: artifact_digest})
            previous = publish(client, candidate, results, params.promote, artifact_digest)
        mlflow.set_tags({"promoted": str(params.promote != "never"), "promotion.previous_version": previous or "none"})
        return PromoteResult(model_name, number, params.promote != "never", previous, results)


def serve_and_check(
    model_dir: Path,
    number: str,
    workdir: Path,
    flights: list[dict],
    workers: int,
    load_options: dict,
    meanwhile: Callable[[], acceptance.CheckResult] | None = None,
) -> list[acceptance.CheckResult]:
    """The URL checks against ``mlflow models serve`` of the local copy, in an allow-listed environment.

    ``meanwhile`` (promote's quality check) runs while the server starts up; its result comes last.
    """
    home = workdir / "home"
    home.mkdir()
    log = workdir / "model-server.log"
    env = isolated_env(home, {"UVICORN_LOOP": os.environ.get("UVICORN_LOOP", UVICORN_LOOP)})
    with ServedModel(str(model_dir), log, env, workers=workers, isolated=True, wait=False) as server:
        after = [meanwhile()] if meanwhile is not None else []
        try:
            server.wait_ready()
        except RuntimeError as err:  # the server never answered /ping: every URL check fails
            reason = f"the model server did not start: {str(err)[-400:]}"
            return [acceptance.CheckResult(name, False, reason) for name in acceptance.URL_CHECKS] + after
        logger.info("promote: serving version %s (local copy) on %s", number, server.url)
        return acceptance.run_url_checks(acceptance.Endpoint(server.url), flights, **load_options) + after


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
