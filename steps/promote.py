"""promote: the Staging version (or one a person picked) through the acceptance checks to Production.

Serves the version with a real ``mlflow models serve`` on 127.0.0.1 (or checks a server already
running at ``--url``), runs ``steps.acceptance``'s smoke, contract and load checks against it and
the quality check on the gate's figures register recorded, and writes each result to the version
(tag ``acceptance.<check>`` = ``passed`` / ``failed: <reason>``, a line in its description). Only
when every check passed does it move the alias ``production`` and the stage ``Production`` to the
version (the previous one archived; history in the tags ``promotion.*`` and the registered
model's ``promotion.history``). A failed check changes nothing in Production, says which check
failed and why, and exits 1.

``promote``: ``auto`` (the gate must have passed the version), ``force`` (the gate's quality
comparison may have lost; smoke, contract and load must still pass: a forced version is still a
served one), ``never`` (checks and records, moves nothing).

``--rollback`` moves ``production`` back to the version it replaced (``make rollback``).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from steps import acceptance, config, registry, tracking
from steps.processes import ServedModel
from steps.registry import PRODUCTION_ALIAS, PRODUCTION_STAGE, STAGING_ALIAS, STAGING_STAGE, production_version
from steps.train import resolve_local

logger = logging.getLogger("skyprophet.promote")
PROMOTE = config.DEFAULTS["promote"]
PROMOTE_CHOICES = ("auto", "force", "never")
HISTORY_TAG = "promotion.history"  # on the registered model: the Production versions in order, comma-separated
PREVIOUS_TAG = "promotion.previous_version"
ACCEPTANCE_HEADING = "### Acceptance checks"
MANAGE = "MANAGE on registered model {name!r} (the promoter's grant)"


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


def acceptance_flights(version: ModelVersion) -> list[dict]:
    """The version's input example (real training flights) plus real flights of the latest period."""
    uri = f"models:/{version.name}/{version.version}"
    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    return acceptance.model_flights(uri, holdout_flights(version, model_dir))


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


def record(client: mlflow.MlflowClient, version: ModelVersion, results, mode: str, outcome: str) -> None:
    """Tags ``acceptance.<check>`` and the description block on the version."""
    production = production_version(client, version.name)
    for result in results:
        client.set_model_version_tag(version.name, version.version, f"acceptance.{result.name}", result.tag)
    client.set_model_version_tag(version.name, version.version, "acceptance.checked_at", datetime.now(UTC).isoformat())
    description = client.get_model_version(version.name, version.version).description
    production_label = "none" if production is None else f"version {production.version}"
    text = describe_acceptance(description, results, mode, outcome, production_label)
    client.update_model_version(version.name, version.version, description=text)


def history(client: mlflow.MlflowClient, name: str) -> list[str]:
    """The Production versions in order (the registered model's ``promotion.history`` tag)."""
    return [v for v in client.get_registered_model(name).tags.get(HISTORY_TAG, "").split(",") if v]


def move_production(client: mlflow.MlflowClient, name: str, version: str, reason: str) -> str:
    """Alias ``production`` and stage ``Production`` on ``version``, the previous one archived; its number."""
    previous = production_version(client, name)
    previous_version = "" if previous is None else str(previous.version)
    with tracking.refusals_explained(
        f"moving {PRODUCTION_ALIAS} of {name!r} to version {version}", MANAGE.format(name=name)
    ):
        registry.transition_stage(client, name, version, PRODUCTION_STAGE)
        client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
        try:
            staging = client.get_model_version_by_alias(name, STAGING_ALIAS)
            if str(staging.version) == str(version):  # alias and stage in step: it left Staging
                client.delete_registered_model_alias(name, STAGING_ALIAS)
        except MlflowException:
            pass
        now = datetime.now(UTC).isoformat()
        client.set_model_version_tag(name, version, PREVIOUS_TAG, previous_version or "none")
        client.set_model_version_tag(name, version, "promotion.promoted_at", now)
        client.set_model_version_tag(name, version, "promotion.reason", reason)
        if previous_version and previous_version != str(version):
            client.set_model_version_tag(name, previous_version, "promotion.superseded_by", str(version))
            client.set_model_version_tag(name, previous_version, "promotion.superseded_at", now)
    return previous_version


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
    """Acceptance checks on the version, then (all passed, mode not never) Production; AcceptanceFailed otherwise."""
    if promote_mode not in PROMOTE_CHOICES:
        raise ValueError(f"promote must be one of {PROMOTE_CHOICES}, got {promote_mode!r}")
    with tracking.step_run("promote"):
        client = mlflow.MlflowClient()
        candidate = find_version(client, model_name, str(version or ""))
        number = str(candidate.version)
        tracking.log_params({"model_name": model_name, "version": number, "promote": promote_mode})
        logger.info(
            "promote: version %s of %s (stage %s), promote=%s",
            number,
            model_name,
            candidate.current_stage,
            promote_mode,
        )
        flights = acceptance_flights(candidate)
        load_options = {"users": users, "spawn_rate": spawn_rate, "duration": duration, "p95_ms": p95_ms}
        with tempfile.TemporaryDirectory(prefix="promote-") as tmp:
            if url:
                results = acceptance.run_url_checks(acceptance.Endpoint(url, id_token), flights, **load_options)
            else:
                log = Path(tmp) / "model-server.log"
                try:
                    with ServedModel(f"models:/{model_name}/{number}", log, workers=workers) as server:
                        logger.info("promote: serving version %s on %s", number, server.url)
                        results = acceptance.run_url_checks(acceptance.Endpoint(server.url), flights, **load_options)
                except RuntimeError as err:  # the server never answered /ping: every URL check fails
                    reason = f"the model server did not start: {str(err)[-400:]}"
                    results = [acceptance.CheckResult(name, False, reason) for name in acceptance.URL_CHECKS]
        results.append(acceptance.quality(candidate.tags, promote_mode))
        failed = [r.name for r in results if not r.passed]
        mlflow.set_tags({f"acceptance.{r.name}": r.tag[:5000] for r in results})
        mlflow.set_tag("acceptance.failed", ",".join(failed) or "none")
        if failed:
            outcome = f"Failed: {', '.join(failed)}. Stays in {STAGING_STAGE}; Production untouched."
        elif promote_mode == "never":
            outcome = "All checks passed; promote=never: Production untouched."
        else:
            outcome = f"All checks passed: promoted to {PRODUCTION_STAGE}."
        record(client, candidate, results, promote_mode, outcome)
        if failed:
            raise AcceptanceFailed(number, results)
        previous = ""
        if promote_mode != "never":
            previous = move_production(client, model_name, number, f"acceptance passed (promote={promote_mode})")
            past = [v for v in history(client, model_name) if v != number]
            if previous and (not past or past[-1] != previous):
                past.append(previous)
            client.set_registered_model_tag(model_name, HISTORY_TAG, ",".join([*past, number]))
            logger.info(
                "promote: version %s is Production (alias %s); previous: %s",
                number,
                PRODUCTION_ALIAS,
                previous or "none",
            )
        mlflow.set_tags({"promoted": str(promote_mode != "never"), "promotion.previous_version": previous or "none"})
        return PromoteResult(model_name, number, promote_mode != "never", previous, results)


def rollback(model_name: str = PROMOTE["model_name"]) -> PromoteResult:
    """``production`` back to the version the current one replaced; the history kept in tags."""
    with tracking.step_run("rollback"):
        client = mlflow.MlflowClient()
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
        logger.info("rollback: %s from version %s to version %s", PRODUCTION_ALIAS, current.version, target)
        with tracking.refusals_explained(
            f"moving {PRODUCTION_ALIAS} of {model_name!r} back to version {target}", MANAGE.format(name=model_name)
        ):
            registry.transition_stage(client, model_name, target, PRODUCTION_STAGE)
            client.set_registered_model_alias(model_name, PRODUCTION_ALIAS, target)
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
