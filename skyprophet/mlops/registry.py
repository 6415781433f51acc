"""Which version is Production (and Staging): one rule, one error message, for every step and tool.

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
import sys
import warnings
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from skyprophet import config
from skyprophet.mlops.digest import DIGEST_TAG as DIGEST_TAG_NAME
from skyprophet.mlops.digest import PASSED, VERDICT_TAG, ArtifactDigestError, verify

logger = logging.getLogger("skyprophet.registry")

PRODUCTION_ALIAS, PRODUCTION_STAGE = "production", "Production"
STAGING_ALIAS, STAGING_STAGE = "staging", "Staging"


class NoProductionVersionError(FileNotFoundError):
    """The registered model has no Production version yet; the message says what to run."""


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
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)))


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
