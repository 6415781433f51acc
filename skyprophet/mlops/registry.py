"""Every move of the registry's pointers (aliases, stages, promotion history) and which version is Production.

``stage`` (register), ``move_production`` (promote), ``restore_production`` (rollback) and ``sync``
are the only writers of the aliases and stages; every reader asks ``production_version``.

One pointer: the alias ``production`` is what serves; every consumer reads
``models:/flight-delay@production``. The stage ``Production`` (deprecated in MLflow 3, kept for
the UI) follows the alias: ``sync`` repairs it idempotently, and ``promote`` and ``rollback`` run
it first, so a crash between the two moves is mended by the next run (or ``python -m
skyprophet.mlops.registry sync``). A loader of the Production version gets it through ``download_production``
/ ``verified_copy``: its artifacts must match the digest recorded at acceptance (``skyprophet.mlops.digest``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from skyprophet import config
from skyprophet.mlops.digest import DIGEST_TAG as DIGEST_TAG_NAME
from skyprophet.mlops.digest import PASSED, VERDICT_TAG, ArtifactDigestError, verify
from skyprophet.mlops.tracking import refusals_explained

logger = logging.getLogger("skyprophet.registry")

PRODUCTION_ALIAS, PRODUCTION_STAGE = "production", "Production"
STAGING_ALIAS, STAGING_STAGE = "staging", "Staging"
HISTORY_TAG = "promotion.history"  # on the registered model: the Production versions in order, comma-separated
PREVIOUS_TAG = "promotion.previous_version"
PROMOTED_AT_TAG = "promotion.promoted_at"  # when the version last became Production (realized quality reads it)
MANAGE = "MANAGE on registered model {name!r} (the promoter's grant)"
CRASH_ENV = "SKYPROPHET_PROMOTE_CRASH_AFTER"  # tests: tags | alias | stage -> os._exit(1) right after that write


class NoProductionVersionError(FileNotFoundError):
    """The registered model has no Production version yet; the message says what to run."""


def version_uri(name: str, version: str | int) -> str:
    """``models:/<name>/<version>``: one registered version, whatever its aliases say later."""
    return f"models:/{name}/{version}"


def production_version(client: mlflow.MlflowClient, name: str) -> ModelVersion | None:
    """The version under the alias ``production``, or None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, PRODUCTION_ALIAS)
    except MlflowException:
        return None


def require_production(client: mlflow.MlflowClient, name: str) -> ModelVersion:
    """``production_version``, or NoProductionVersionError saying what to run first."""
    version = production_version(client, name)
    if version is None:
        raise NoProductionVersionError(f"model {name} has no Production version: run `mlflow run . -e main` first")
    return version


def transition_stage(client: mlflow.MlflowClient, name: str, version: str, stage: str) -> None:
    """Stage ``stage`` on ``version``, the version in it before archived (what the alias of that name says).

    MLflow warns (FutureWarning) on every call that stages are deprecated; SkyProphet keeps them on
    purpose (see above), so the warning would repeat on each register, promote and rollback while
    asking for nothing that can be done here. It is ignored for this call only.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"``mlflow\.tracking\.client\.MlflowClient\.transition_model_version_stage``",
            category=FutureWarning,
        )
        client.transition_model_version_stage(name, version, stage, archive_existing_versions=True)


def sync(client: mlflow.MlflowClient, name: str) -> str | None:
    """The stage ``Production`` onto the version the alias names (any other archived); the version, or None.

    Idempotent: nothing is written when the pointers agree. The alias ``staging`` left on the
    Production version (a promote that stopped before removing it) is removed too.
    """
    production = production_version(client, name)
    if production is None:
        return None
    number = str(production.version)
    in_stage = [
        str(v.version) for v in client.search_model_versions(f"name = '{name}'") if v.current_stage == PRODUCTION_STAGE
    ]
    if in_stage != [number]:
        logger.info(
            "registry: stage %s was on %s; moving it to version %s (the alias)", PRODUCTION_STAGE, in_stage, number
        )
        transition_stage(client, name, number, PRODUCTION_STAGE)
    if STAGING_ALIAS in production.aliases:
        client.delete_registered_model_alias(name, STAGING_ALIAS)
    return number


def download_version(name: str, version: str, dst: Path) -> Path:
    """The version's model folder, downloaded fresh under ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=version_uri(name, version), dst_path=str(dst)))


def download_verified(version: ModelVersion, dst: Path) -> Path:
    """A version that passed acceptance, downloaded and checked against its digest; ArtifactDigestError naming it."""
    verdict = version.tags.get(VERDICT_TAG)
    if verdict != PASSED:
        raise ArtifactDigestError(
            f"version {version.version} of {version.name!r} has {VERDICT_TAG}={verdict or 'none'}, not {PASSED}: "
            f"refusing to load it; run `make promote VERSION={version.version}`"
        )
    local = download_version(version.name, str(version.version), dst)
    verify(version, local)
    return local


def download_production(client: mlflow.MlflowClient, name: str, dst: Path) -> tuple[ModelVersion, Path]:
    """The version ``production`` names and its verified local copy (see ``download_verified``)."""
    version = require_production(client, name)
    return version, download_verified(version, dst)


def verified_copy(model_uri: str, dst: Path) -> str:
    """What a loader should load for ``model_uri``: the verified local copy when it names the Production version.

    A ``models:/`` URI (alias, stage, number) resolving to the version ``production`` names, or to
    any version carrying a recorded digest, is downloaded under ``dst`` and verified (refused,
    naming the version, when its artifacts changed); anything else is returned as it is.
    """
    if not model_uri.startswith("models:/"):
        return model_uri
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    client = mlflow.MlflowClient()
    name, number = get_model_name_and_version(client, model_uri)
    version = client.get_model_version(name, number)
    production = production_version(client, name)
    if (production is None or str(production.version) != str(number)) and DIGEST_TAG_NAME not in version.tags:
        return model_uri
    return str(download_verified(version, dst))


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


def crash_point(after: str) -> None:
    """The test hook: ``SKYPROPHET_PROMOTE_CRASH_AFTER=<after>`` stops this process dead right here."""
    if os.environ.get(CRASH_ENV) == after:
        sys.stderr.write(f"promote: {CRASH_ENV}={after}: exiting without cleanup\n")
        sys.stderr.flush()
        os._exit(1)


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
    with refusals_explained(f"moving {PRODUCTION_ALIAS} of {name!r} to version {version}", MANAGE.format(name=name)):
        client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
        crash_point("alias")
        transition_stage(client, name, version, PRODUCTION_STAGE)
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
        client.set_model_version_tag(name, version, PROMOTED_AT_TAG, now)
        client.set_model_version_tag(name, version, "promotion.reason", reason)
        if previous_version and previous_version != str(version):
            client.set_model_version_tag(name, previous_version, "promotion.superseded_by", str(version))
            client.set_model_version_tag(name, previous_version, "promotion.superseded_at", now)
        if previous_version and (not past or past[-1] != previous_version):
            past.append(previous_version)
        client.set_registered_model_tag(name, HISTORY_TAG, ",".join([*past, str(version)]))
    return previous_version


def production_before(client: mlflow.MlflowClient, name: str, current: ModelVersion) -> list[str]:
    """The Production versions before ``current``, in order (its ``promotion.history``, else its own link)."""
    past = history(client, name)
    if past and past[-1] == str(current.version):
        return past[:-1]
    link = current.tags.get(PREVIOUS_TAG, "none")  # no history on the model (older versions)
    return [] if link == "none" else [link]


def restore_production(client: mlflow.MlflowClient, name: str, current: ModelVersion, past: list[str]) -> str:
    """Alias ``production`` back to ``past[-1]``, then the stage, then the ``promotion.*`` records; that version.

    The same order as ``move_production`` (the alias serves, so it moves first). ``past`` becomes
    the model's ``promotion.history``. Whether the target may serve is checked before.
    """
    target = past[-1]
    with refusals_explained(
        f"moving {PRODUCTION_ALIAS} of {name!r} back to version {target}", MANAGE.format(name=name)
    ):
        client.set_registered_model_alias(name, PRODUCTION_ALIAS, target)
        crash_point("alias")
        transition_stage(client, name, target, PRODUCTION_STAGE)
        crash_point("stage")
        now = datetime.now(UTC).isoformat()
        client.set_model_version_tag(name, str(current.version), "promotion.rolled_back_at", now)
        client.set_model_version_tag(name, str(current.version), "promotion.rolled_back_to", target)
        client.set_model_version_tag(name, target, "promotion.restored_at", now)
        client.set_model_version_tag(name, target, "promotion.restored_from", str(current.version))
        client.set_registered_model_tag(name, HISTORY_TAG, ",".join(past))
    return target


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m skyprophet.mlops.registry sync [--model-name NAME]``: the stage onto the alias's version."""
    parser = argparse.ArgumentParser(prog="python -m skyprophet.mlops.registry", description=sync.__doc__)
    parser.add_argument("command", choices=["sync"])
    parser.add_argument("--model-name", default=config.MODEL_NAME)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    number = sync(mlflow.MlflowClient(), args.model_name)
    sys.stdout.write(
        f"registry: {args.model_name!r} has no {PRODUCTION_ALIAS} alias; nothing to sync\n"
        if number is None
        else f"registry: alias {PRODUCTION_ALIAS} and stage {PRODUCTION_STAGE} both on version {number}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
