"""What acceptance writes on a version, in an order a stop part-way cannot turn into a false ``passed``.

Tags ``acceptance.<check>``, the artifact digest, the verdict (what the tracking server checks
before ``production`` may move) and a block in the version's description; then, all passed, the
move of ``production`` (``skyprophet.mlops.registry.move_production``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import mlflow
from mlflow.entities.model_registry import ModelVersion

from skyprophet.mlops.digest import DIGEST_TAG, PASSED, VERDICT_TAG
from skyprophet.mlops.registry import (
    PRODUCTION_ALIAS,
    PRODUCTION_STAGE,
    STAGING_STAGE,
    crash_point,
    move_production,
    production_version,
)
from skyprophet.mlops.tags import acceptance_tag
from skyprophet.ops import acceptance

logger = logging.getLogger("skyprophet.promote")


ACCEPTANCE_HEADING = "### Acceptance checks"


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
        client.set_model_version_tag(name, number, acceptance_tag(result.name), result.tag)
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
