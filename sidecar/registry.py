"""What the sidecar reports about the served model, read once from the registry at start.

The model version behind ``MODEL_URI`` (``models:/name/Stage``, ``models:/name@alias``,
``models:/name/<version>`` or ``models:/name/latest``), its stage and aliases, its run, the
decision threshold shipped inside it and its own serving input example (the canary body).
Only ``MLmodel``, the serving example and the threshold spec are read: no pandas, no XGBoost,
so the sidecar image stays small (mlflow-skinny).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import yaml
from mlflow.entities.model_registry import ModelVersion

from skyprophet.mlops.digest import DIGEST_TAG, verify

MODEL_URI_PATTERN = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<ref>[^/]+))$")
# The pyfunc's artifact holding the threshold (pyfunc/model.py SPEC_ARTIFACT).
SPEC_ARTIFACT = "spec"
# The alias that serves (skyprophet/mlops/registry.py PRODUCTION_ALIAS): its version's files are always verified.
PRODUCTION_ALIAS = "production"


class RegistryLookupError(RuntimeError):
    """The model URI does not name a registered version the sidecar can describe."""


@dataclass(frozen=True)
class ModelInfo:
    """The served model version as the registry and its MLmodel describe it."""

    model_uri: str
    name: str
    version: str
    stage: str
    aliases: list[str]
    run_id: str | None
    threshold: float | None
    canary: dict = field(repr=False)
    canary_rows: int = 0

    def report(self) -> dict:
        """The part of ``/health``'s body that describes the model."""
        report = asdict(self)
        report.pop("canary")
        return report


def find_version(client: mlflow.MlflowClient, model_uri: str) -> ModelVersion:
    """The registered version a ``models:/`` URI points at now."""
    match = MODEL_URI_PATTERN.match(model_uri)
    if match is None:
        raise RegistryLookupError(f"MODEL_URI {model_uri!r} is not models:/<name>/<stage|version|latest> or @<alias>")
    name, alias, ref = match["name"], match["alias"], match["ref"]
    if alias:
        return client.get_model_version_by_alias(name, alias)
    if ref.isdigit():
        return client.get_model_version(name, ref)
    versions = client.search_model_versions(f"name = '{name}'")
    if ref.lower() != "latest":
        versions = [v for v in versions if v.current_stage.lower() == ref.lower()]
    if not versions:
        raise RegistryLookupError(
            f"no version of {name!r} in stage {ref!r}; promote one first (mlflow run . -e register)"
        )
    newest = max(versions, key=lambda v: int(v.version))
    return client.get_model_version(name, newest.version)  # search results carry no aliases


def alias_version(name: str, alias: str) -> str:
    """The version ``alias`` of registered model ``name`` names now (MLflow's error when none)."""
    return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)


def read_model_files(model_dir: Path) -> tuple[dict, float | None]:
    """The serving input example and the threshold from a downloaded model directory."""
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8"))
    example_info = mlmodel.get("saved_input_example_info") or {}
    example_path = example_info.get("serving_input_path")
    if not example_path:
        raise RegistryLookupError(f"{model_dir} has no serving input example; log the model with input_example=")
    canary = json.loads((model_dir / example_path).read_text(encoding="utf-8"))
    artifacts = mlmodel.get("flavors", {}).get("python_function", {}).get("artifacts", {})
    spec_path = artifacts.get(SPEC_ARTIFACT, {}).get("path")
    threshold = None
    if spec_path and (model_dir / spec_path).is_file():
        threshold = json.loads((model_dir / spec_path).read_text(encoding="utf-8")).get("threshold")
    return canary, threshold


def example_rows(canary: dict) -> int:
    """How many flights the serving example holds (one prediction is expected per flight)."""
    for key in ("dataframe_split", "inputs", "instances"):
        if key in canary:
            body = canary[key]
            return len(body["data"]) if isinstance(body, dict) and "data" in body else len(body)
    return len(canary.get("dataframe_records", []))


def load_model_info(model_uri: str) -> ModelInfo:
    """Look the version up in the registry (``MLFLOW_TRACKING_URI``) and read its example and threshold."""
    client = mlflow.MlflowClient()
    version = find_version(client, model_uri)
    with tempfile.TemporaryDirectory(prefix="sidecar-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{version.name}/{version.version}", dst_path=tmp
        )
        # The files a Production version serves are the ones accepted: checked against the digest
        # recorded at acceptance before anything reads them (a mismatch is a registry error in /health).
        if DIGEST_TAG in (version.tags or {}) or PRODUCTION_ALIAS in version.aliases:
            verify(version, local)
        canary, threshold = read_model_files(Path(local))
    return ModelInfo(
        model_uri=model_uri,
        name=version.name,
        version=str(version.version),
        stage=version.current_stage,
        aliases=sorted(version.aliases),
        run_id=version.run_id,
        threshold=threshold,
        canary=canary,
        canary_rows=example_rows(canary),
    )
