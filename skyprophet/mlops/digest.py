"""The digest of a model version's artifacts, recorded at acceptance and checked by every loader of Production.

``promote`` downloads the version it accepts, computes ``artifact_digest`` over that local copy
and writes it on the version (tag ``acceptance.artifact_digest``) with the verdict (tag
``acceptance.verdict``) before it moves ``production``. A loader of a Production version
(``steps.serve``, ``steps.score``, ``registry.download_production``) downloads it again and calls
``verify``: artifacts changed in the store after acceptance are refused, naming the version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion

DIGEST_TAG = "acceptance.artifact_digest"
VERDICT_TAG = "acceptance.verdict"
PASSED = "passed"


class ArtifactDigestError(RuntimeError):
    """A version's artifacts do not match the digest recorded at its acceptance (or none was recorded)."""


def artifact_digest(local_dir: str | Path) -> str:
    """``sha256:<hex>`` over every file under ``local_dir``: sorted relative paths, each with its length and bytes.

    Computed on a fresh download, before anything loads it (loading writes ``__pycache__`` folders).
    """
    root = Path(local_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix().encode()
        content = path.read_bytes()
        digest.update(len(relative).to_bytes(8, "big") + relative + len(content).to_bytes(8, "big") + content)
    return f"sha256:{digest.hexdigest()}"


def verify(version: ModelVersion, local_dir: str | Path) -> str:
    """``local_dir``'s digest when it matches the one recorded on ``version``; else ArtifactDigestError naming it."""
    label = f"version {version.version} of {version.name!r}"
    recorded = (version.tags or {}).get(DIGEST_TAG)
    if not recorded:
        raise ArtifactDigestError(
            f"{label} has no {DIGEST_TAG} tag: it never passed acceptance; run `make promote VERSION={version.version}`"
        )
    found = artifact_digest(local_dir)
    if found != recorded:
        raise ArtifactDigestError(
            f"{label}: its artifacts changed after acceptance ({DIGEST_TAG} {recorded}, downloaded {found}); "
            "refusing to load it. Roll back (`make rollback`) or accept it again "
            f"(`make promote VERSION={version.version}`)"
        )
    return found
