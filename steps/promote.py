"""promote: the Staging version (or one a person picked) through the acceptance checks to Production.

Downloads the version, records the digest of that copy and serves the copy with a real ``mlflow
models serve`` on 127.0.0.1 in an allow-listed environment (no tracking, cloud or token
credentials: the version's own code runs there), or checks a server already running at
``--url``. Runs ``skyprophet.ops.acceptance``'s smoke, contract and load checks against it and the quality
check (candidate and current Production scored here, isolated, on the gate's holdout period), and
writes each result to the version (tag ``acceptance.<check>`` = ``passed`` / ``failed: <reason>``,
``acceptance.artifact_digest``, then ``acceptance.verdict``, a block in its description). Only when
every check passed does it move the alias ``production`` (what serves), then the stage
``Production`` (a follower, the previous version archived), then record the history (tags
``promotion.*``, the model's ``promotion.history``). A failed check changes nothing in Production,
says which check failed and why, and exits 1. Everything runs under the promotion lock (the
registered model ``<name>.promotion-lock``): a second promote or rollback exits 3 naming the first.

``promote``: ``auto`` (the gate must have passed the version), ``force`` (the gate's quality
comparison may have lost; smoke, contract and load must still pass: a forced version is still a
served one), ``never`` (checks and records, moves nothing).

``--rollback`` moves ``production`` back to the version it replaced (``make rollback``).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from skyprophet import config
from skyprophet.config import PROMOTE_CHOICES
from skyprophet.mlops import digest, registry, tracking
from skyprophet.mlops.digest import DIGEST_TAG, PASSED, VERDICT_TAG, ArtifactDigestError
from skyprophet.mlops.registry import (
    PRODUCTION_ALIAS,
    PRODUCTION_STAGE,
    STAGING_ALIAS,
    STAGING_STAGE,
    production_version,
)
from skyprophet.mlops.tracking import resolve_local
from skyprophet.ops import acceptance
from skyprophet.ops.processes import ServedModel, isolated_env

logger = logging.getLogger("skyprophet.promote")
PROMOTE = config.DEFAULTS["promote"]
HISTORY_TAG = "promotion.history"  # on the registered model: the Production versions in order, comma-separated
PREVIOUS_TAG = "promotion.previous_version"
ACCEPTANCE_HEADING = "### Acceptance checks"
MANAGE = "MANAGE on registered model {name!r} (the promoter's grant)"
CRASH_ENV = "SKYPROPHET_PROMOTE_CRASH_AFTER"  # tests: tags | alias | stage -> os._exit(1) right after that write
LOCK_SUFFIX = ".promotion-lock"
LOCK_STALE_ENV = "SKYPROPHET_PROMOTE_LOCK_STALE_S"
LOCK_STALE_S = 3600.0  # a lock older than this is taken over (a promote takes minutes)


class NothingToPromote(RuntimeError):
    """No version on ``staging`` (or the picked one does not exist); the message says what to run first."""


class AcceptanceFailed(RuntimeError):
    """A check failed: Production was not touched. ``results`` holds every check's outcome."""

    def __init__(self, version: str, results: list[acceptance.CheckResult]) -> None:
        self.version = version
        self.results = results
        failed = [r for r in results if not r.passed]
        super().__init__(
            f"version {version} stays in Staging, Production untouched; failed: "
            + "; ".join(f"{r.name}: {r.reason}" for r in failed)
        )


class PromotionInProgress(RuntimeError):
    """Another promote or rollback holds the promotion lock; the message names it."""


def lock_holder() -> dict[str, str]:
    """Who takes the lock: the tracking identity (when set), user, host and process."""
    return {
        "holder": os.environ.get("MLFLOW_TRACKING_USERNAME") or os.environ.get("USER", "unknown"),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "started_at": datetime.now(UTC).isoformat(),
        "started_epoch": f"{time.time():.0f}",
    }


def lock_is_stale(tags: dict[str, str]) -> bool:
    """Older than ``SKYPROPHET_PROMOTE_LOCK_STALE_S`` (default 3600 s), or its process on this host is gone."""
    age = time.time() - float(tags.get("started_epoch", "0") or 0)
    if age > float(os.environ.get(LOCK_STALE_ENV, LOCK_STALE_S)):
        return True
    if tags.get("host") == socket.gethostname() and tags.get("pid", "").isdigit():
        try:
            os.kill(int(tags["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
    return False


def describe_lock(tags: dict[str, str]) -> str:
    """``alice (pid 42 on host-1) since …, promote version 3``."""
    who = f"{tags.get('holder', '?')} (pid {tags.get('pid', '?')} on {tags.get('host', '?')})"
    return f"{who} since {tags.get('started_at', '?')}, {tags.get('action', '?')}"


@contextmanager
def promotion_lock(client: mlflow.MlflowClient, name: str, action: str) -> Iterator[dict[str, str]]:
    """Hold the registered model ``<name>.promotion-lock`` (its creation is atomic in the registry).

    A second holder gets RESOURCE_ALREADY_EXISTS and PromotionInProgress naming the first. A stale
    lock (``lock_is_stale``: its process died, or it is older than the limit) is taken over once.
    Released (deleted) at the end, also on errors; an ``os._exit`` leaves it, to be taken over.
    """
    lock = f"{name}{LOCK_SUFFIX}"
    mine = {**lock_holder(), "action": action}
    for attempt in (1, 2):
        try:
            client.create_registered_model(
                lock, tags=mine, description=f"Held while a promotion of {name!r} runs; deleted at its end."
            )
            break
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            held = client.get_registered_model(lock).tags
        except MlflowException:  # released meanwhile
            continue
        if attempt == 1 and lock_is_stale(held):
            logger.warning("promote: taking over the stale promotion lock of %s", describe_lock(held))
            client.delete_registered_model(lock)
            continue
        raise PromotionInProgress(
            f"another promotion of {name!r} holds the lock {lock!r}: {describe_lock(held)}; wait for it to end "
            f"(a lock whose process is gone, or older than {LOCK_STALE_ENV}="
            f"{os.environ.get(LOCK_STALE_ENV, f'{LOCK_STALE_S:.0f}')} s, is taken over)"
        )
    else:
        raise PromotionInProgress(f"could not take the promotion lock {lock!r} of {name!r}")
    try:
        yield mine
    finally:
        try:
            client.delete_registered_model(lock)
        except MlflowException as err:
            logger.error("promote: could not release the promotion lock %s (%s)", lock, err)


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
    from pyfunc.model import ModelSpec
    from pyfunc.schema import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, clean_flights, scorable

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


def describe_acceptance(
    description: str, results: list[acceptance.CheckResult], mode: str, outcome: str, production: str
) -> str:
    """The version's description with its acceptance block (replacing an earlier one)."""
    kept = (description or "").split(ACCEPTANCE_HEADING, 1)[0].rstrip()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [ACCEPTANCE_HEADING, "", f"{when}, promote={mode}, Production then: {production}.", ""]
    lines += [f"- {result.line()}" for result in results]
    lines += ["", f"**{outcome}**"]
    return (kept + "\n\n" if kept else "") + "\n".join(lines)


def crash_point(after: str) -> None:
    """The test hook: ``SKYPROPHET_PROMOTE_CRASH_AFTER=<after>`` stops this process dead right here."""
    if os.environ.get(CRASH_ENV) == after:
        sys.stderr.write(f"promote: {CRASH_ENV}={after}: exiting without cleanup\n")
        sys.stderr.flush()
        os._exit(1)


def record(
    client: mlflow.MlflowClient, version: ModelVersion, results, mode: str, outcome: str, artifact_digest: str
) -> None:
    """Tags ``acceptance.<check>``, the digest and the verdict, and the description block, on the version.

    The verdict (what the tracking server checks before ``production`` may move) is written first
    when it is a failure and last when it is a pass, so a stop part-way never leaves ``passed``
    beside other checks' or another digest's results.
    """
    name, number = version.name, str(version.version)
    failed = [r.name for r in results if not r.passed]
    verdict = f"failed: {', '.join(failed)}" if failed else PASSED
    if failed:
        client.set_model_version_tag(name, number, VERDICT_TAG, verdict)
    production = production_version(client, name)
    for result in results:
        client.set_model_version_tag(name, number, f"acceptance.{result.name}", result.tag)
    client.set_model_version_tag(name, number, "acceptance.checked_at", datetime.now(UTC).isoformat())
    client.set_model_version_tag(name, number, "acceptance.mode", mode)
    client.set_model_version_tag(name, number, DIGEST_TAG, artifact_digest)
    if not failed:
        client.set_model_version_tag(name, number, VERDICT_TAG, verdict)
    set_outcome(client, version, results, mode, outcome, "none" if production is None else str(production.version))


def set_outcome(client, version: ModelVersion, results, mode: str, outcome: str, production: str) -> None:
    """The acceptance block of the version's description (Production then: ``production``), ending with ``outcome``."""
    description = client.get_model_version(version.name, version.version).description
    label = "none" if production in ("", "none") else f"version {production}"
    text = describe_acceptance(description, results, mode, outcome, label)
    client.update_model_version(version.name, version.version, description=text)


def history(client: mlflow.MlflowClient, name: str) -> list[str]:
    """The Production versions in order (the registered model's ``promotion.history`` tag)."""
    return [v for v in client.get_registered_model(name).tags.get(HISTORY_TAG, "").split(",") if v]


def move_production(client: mlflow.MlflowClient, name: str, version: str, reason: str) -> str:
    """Alias ``production``, then stage ``Production`` (the previous one archived), then the records; the previous.

    The alias is what serves, so it moves first: a stop after it leaves the stage behind, which
    ``registry.sync`` (run first by every promote and rollback) repairs. The ``promotion.*`` tags
    and the model's ``promotion.history`` are written after both moves (under the promotion lock
    when ``promote`` calls this). Whether the version may serve is checked before (its acceptance
    verdict) and, under auth, by the tracking server.
    """
    previous = production_version(client, name)
    previous_version = "" if previous is None else str(previous.version)
    with tracking.refusals_explained(
        f"moving {PRODUCTION_ALIAS} of {name!r} to version {version}", MANAGE.format(name=name)
    ):
        client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
        crash_point("alias")
        registry.transition_stage(client, name, version, PRODUCTION_STAGE)
        crash_point("stage")
        try:
            staging = client.get_model_version_by_alias(name, STAGING_ALIAS)
            if str(staging.version) == str(version):  # it left Staging
                client.delete_registered_model_alias(name, STAGING_ALIAS)
        except MlflowException:
            pass
        now = datetime.now(UTC).isoformat()
        past = [v for v in history(client, name) if v != str(version)]
        if previous_version == str(version):  # again on the alias (a rerun after a stop): what it replaced
            previous_version = past[-1] if past else ""
        client.set_model_version_tag(name, version, PREVIOUS_TAG, previous_version or "none")
        client.set_model_version_tag(name, version, "promotion.promoted_at", now)
        client.set_model_version_tag(name, version, "promotion.reason", reason)
        if previous_version and previous_version != str(version):
            client.set_model_version_tag(name, previous_version, "promotion.superseded_by", str(version))
            client.set_model_version_tag(name, previous_version, "promotion.superseded_at", now)
        if previous_version and (not past or past[-1] != previous_version):
            past.append(previous_version)
        client.set_registered_model_tag(name, HISTORY_TAG, ",".join([*past, str(version)]))
    return previous_version


def publish(
    client: mlflow.MlflowClient,
    version: ModelVersion,
    results: list[acceptance.CheckResult],
    mode: str,
    artifact_digest: str,
) -> str:
    """The write half of a promotion, in order: acceptance tags + digest + verdict, alias, stage, records.

    Returns the previous Production version ("" for none). AcceptanceFailed (Production untouched)
    when a check failed; ``mode`` never: recorded, nothing moved. Call it holding the lock.
    """
    number = str(version.version)
    failed = [r.name for r in results if not r.passed]
    if failed:
        outcome = f"Failed: {', '.join(failed)}. Stays in {STAGING_STAGE}; Production untouched."
    elif mode == "never":
        outcome = "All checks passed; promote=never: Production untouched."
    else:
        outcome = f"All checks passed; moving {PRODUCTION_ALIAS} to it."
    record(client, version, results, mode, outcome, artifact_digest)
    crash_point("tags")
    if failed:
        raise AcceptanceFailed(number, results)
    if mode == "never":
        return ""
    previous = move_production(client, version.name, number, f"acceptance passed (promote={mode})")
    set_outcome(client, version, results, mode, f"All checks passed: promoted to {PRODUCTION_STAGE}.", None)
    logger.info(
        "promote: version %s is Production (alias %s); previous: %s", number, PRODUCTION_ALIAS, previous or "none"
    )
    return previous


def quality_check(
    client: mlflow.MlflowClient, candidate: ModelVersion, model_dir: Path, mode: str, workdir: Path
) -> acceptance.CheckResult:
    """The candidate and the current Production scored here on the holdout period, each in an isolated process.

    The pipeline's ``gate.*`` tags are not trusted: the holdout location is taken from
    ``gate.holdout_uri`` (else etl's default) and ``gate.decision`` is only shown as a hint. Both
    models run from local copies in ``processes.isolated_env`` (their code sees no credential);
    a Production version with a recorded digest is verified first.
    """
    from pyfunc.schema import SCHEDULED_TIME, TARGET, parse_scheduled_time
    from steps.register import gate_metrics, score_isolated

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


def promote(
    model_name: str = PROMOTE["model_name"],
    version: str = PROMOTE["version"],
    promote_mode: str = PROMOTE["promote"],
    url: str = "",
    id_token: str = "",
    users: int = PROMOTE["users"],
    spawn_rate: float = PROMOTE["spawn_rate"],
    duration: str = PROMOTE["duration"],
    p95_ms: float = PROMOTE["p95_ms"],
    workers: int = PROMOTE["workers"],
) -> PromoteResult:
    """Acceptance checks on the version, then (all passed, mode not never) Production; AcceptanceFailed otherwise.

    Under the promotion lock from start to end (a second promote or rollback refuses, naming this
    one). The candidate is downloaded here, its digest computed on that copy, and that copy served
    in an allow-listed environment (``processes.isolated_env``): its code sees no credential.
    """
    if promote_mode not in PROMOTE_CHOICES:
        raise ValueError(f"promote must be one of {PROMOTE_CHOICES}, got {promote_mode!r}")
    with tracking.step_run("promote"):
        client = mlflow.MlflowClient()
        candidate = find_version(client, model_name, str(version or ""))
        number = str(candidate.version)
        tracking.log_params({"model_name": model_name, "version": number, "promote": promote_mode})
        with promotion_lock(client, model_name, f"promote version {number}"):
            registry.sync(client, model_name)
            logger.info(
                "promote: version %s of %s (stage %s), promote=%s",
                number,
                model_name,
                candidate.current_stage,
                promote_mode,
            )
            load_options = {"users": users, "spawn_rate": spawn_rate, "duration": duration, "p95_ms": p95_ms}
            with tempfile.TemporaryDirectory(prefix="promote-") as tmp:
                workdir = Path(tmp)
                model_dir = registry.download_version(model_name, number, workdir / "candidate")
                artifact_digest = digest.artifact_digest(model_dir)  # before anything loads (and writes) it
                flights = acceptance_flights(candidate, model_dir)

                def quality() -> acceptance.CheckResult:
                    return quality_check(client, candidate, model_dir, promote_mode, workdir)

                if url:
                    results = acceptance.run_url_checks(acceptance.Endpoint(url, id_token), flights, **load_options)
                    results.append(quality())
                else:  # the quality check runs while the server starts
                    results = serve_and_check(model_dir, number, workdir, flights, workers, load_options, quality)
            failed = [r.name for r in results if not r.passed]
            mlflow.set_tags({f"acceptance.{r.name}": r.tag[:5000] for r in results})
            mlflow.set_tags({"acceptance.failed": ",".join(failed) or "none", DIGEST_TAG: artifact_digest})
            previous = publish(client, candidate, results, promote_mode, artifact_digest)
        mlflow.set_tags({"promoted": str(promote_mode != "never"), "promotion.previous_version": previous or "none"})
        return PromoteResult(model_name, number, promote_mode != "never", previous, results)


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
    env = isolated_env(home, {"UVICORN_LOOP": os.environ.get("UVICORN_LOOP", "uvloop")})
    with ServedModel(str(model_dir), log, env, workers=workers, isolated=True, wait=False) as server:
        after = [meanwhile()] if meanwhile is not None else []
        try:
            server.wait_ready()
        except RuntimeError as err:  # the server never answered /ping: every URL check fails
            reason = f"the model server did not start: {str(err)[-400:]}"
            return [acceptance.CheckResult(name, False, reason) for name in acceptance.URL_CHECKS] + after
        logger.info("promote: serving version %s (local copy) on %s", number, server.url)
        return acceptance.run_url_checks(acceptance.Endpoint(server.url), flights, **load_options) + after


def rollback(model_name: str = PROMOTE["model_name"]) -> PromoteResult:
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
            past = history(client, model_name)
            if past and past[-1] == str(current.version):
                past = past[:-1]
            else:  # no history on the model (older versions): the version's own link
                link = current.tags.get(PREVIOUS_TAG, "none")
                past = [] if link == "none" else [link]
            if not past:
                raise NothingToPromote(f"version {current.version} has no previous Production version to roll back to")
            target = past[-1]
            with tempfile.TemporaryDirectory(prefix="rollback-") as tmp:
                try:
                    registry.download_verified(client.get_model_version(model_name, target), Path(tmp))
                except ArtifactDigestError as err:
                    raise NothingToPromote(f"cannot roll back to version {target}: {err}") from None
            logger.info("rollback: %s from version %s to version %s", PRODUCTION_ALIAS, current.version, target)
            with tracking.refusals_explained(
                f"moving {PRODUCTION_ALIAS} of {model_name!r} back to version {target}", MANAGE.format(name=model_name)
            ):
                client.set_registered_model_alias(model_name, PRODUCTION_ALIAS, target)
                crash_point("alias")
                registry.transition_stage(client, model_name, target, PRODUCTION_STAGE)
                crash_point("stage")
                now = datetime.now(UTC).isoformat()
                client.set_model_version_tag(model_name, str(current.version), "promotion.rolled_back_at", now)
                client.set_model_version_tag(model_name, str(current.version), "promotion.rolled_back_to", target)
                client.set_model_version_tag(model_name, target, "promotion.restored_at", now)
                client.set_model_version_tag(model_name, target, "promotion.restored_from", str(current.version))
                client.set_registered_model_tag(model_name, HISTORY_TAG, ",".join(past))
        mlflow.set_tags({"rollback.from": str(current.version), "rollback.to": target})
        return PromoteResult(model_name, target, True, str(current.version))


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m steps.promote [--version N] [--promote auto|force|never]`` or ``--rollback``."""
    parser = config.argument_parser("promote", __doc__)
    parser.add_argument("--url", default="", help="check a server already running there instead of starting one")
    parser.add_argument("--id-token", default="", help="Bearer token for --url (a private Cloud Run service)")
    parser.add_argument("--rollback", action="store_true", help="move production back to the previous version")
    args = parser.parse_args(argv)
    tracking.setup_logging()
    if args.promote not in PROMOTE_CHOICES:
        parser.error(f"--promote: choose one of {', '.join(PROMOTE_CHOICES)}")
    out, err_out = sys.stdout.write, sys.stderr.write
    try:
        if args.rollback:
            result = rollback(args.model_name)
            out(f"rollback: {PRODUCTION_ALIAS} is version {result.version} again (was {result.previous_version})\n")
            return 0
        options = {k: v for k, v in vars(args).items() if k not in ("rollback", "promote")}
        result = promote(promote_mode=args.promote, **options)
    except NothingToPromote as err:
        err_out(f"promote: {err}\n")
        return 2
    except PromotionInProgress as err:
        err_out(f"promote: {err}\n")
        return 3
    except AcceptanceFailed as err:
        for check in err.results:
            err_out(f"acceptance {check.line()}\n")
        err_out(f"promote: {err}\n")
        return 1
    for check in result.results:
        out(f"acceptance {check.line()}\n")
    if result.promoted:
        previous = result.previous_version or "none"
        out(f"promote: version {result.version} is Production (previous: {previous}); undo with `make rollback`\n")
    else:
        out(f"promote: version {result.version} passed every check; promote=never, Production untouched\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
