"""The project's rule on artifacts through the tracking server's proxy: write-once.

``artifact_rule`` is what ``auth_rules.project_rule`` asks for any other route (rule
``write-once-artifacts``; see ``auth_rules``): no overwrite, no DELETE, no new file in a
finalized logged model, through the artifact routes and the UI's upload-artifact, but the admin's.
"""

from __future__ import annotations

import re

from skyprophet.ops.auth_caller import RULE_WRITE_ONCE, Caller, refused

_ARTIFACT_ROUTE = re.compile(
    r"/(?:ajax-)?api/2\.0/mlflow-artifacts/(?P<kind>artifacts|mpu/create|mpu/complete)/(?P<path>.+)", re.DOTALL
)
_LOGGED_MODEL_ARTIFACTS = re.compile(r"/models/(?P<model_id>m-[0-9a-f]+)/artifacts(?:/|$)")
_UPLOAD_ROUTE = re.compile(r"/ajax-api/2\.0/mlflow/upload-artifact/?")


def _artifact_exists(path: str) -> bool:
    """Whether ``path`` (relative to the proxy's destination) is already a file or folder there."""
    import posixpath

    from mlflow.server import handlers
    from mlflow.utils.uri import validate_path_is_safe

    path = handlers._get_workspace_scoped_repo_path_if_enabled(validate_path_is_safe(path))
    head, tail = posixpath.split(path.strip("/"))
    repo = handlers._get_artifact_repo_mlflow_artifacts()
    return any(posixpath.basename(info.path.rstrip("/")) == tail for info in repo.list_artifacts(head or None))


def _write_once(what: str, path: str, caller: Caller):
    """409 when a non-admin writes over an existing artifact."""
    from mlflow.exceptions import MlflowException

    try:
        exists = _artifact_exists(path)
    except MlflowException:  # an unsafe path: the handler refuses it
        return None
    if not exists or caller.is_admin:
        return None
    return refused(
        RULE_WRITE_ONCE,
        f"{what} {path!r} already exists and artifacts are write-once (a served version may read it); "
        f"log under a new path (a new run or model); user {caller.username!r} is not an admin",
        status=409,
    )


def _sealed_model(path: str, caller: Caller):
    """409 when a non-admin adds a file to a finalized (READY) logged model: what a version serves is complete.

    MLflow finalizes a logged model after uploading all its files (``log_model``), so nothing
    legitimate writes there afterwards. The path is normalised first (``a//b``, ``./``).
    """
    import posixpath

    from mlflow.entities import LoggedModelStatus
    from mlflow.exceptions import MlflowException
    from mlflow.server import handlers

    match = _LOGGED_MODEL_ARTIFACTS.search(posixpath.normpath("/" + path))
    if not match or caller.is_admin:
        return None
    try:
        model = handlers._get_tracking_store().get_logged_model(match["model_id"])
    except MlflowException:
        return None
    if model.status != LoggedModelStatus.READY:
        return None
    return refused(
        RULE_WRITE_ONCE,
        f"logged model {model.model_id} is finalized (READY): its artifacts take no new file ({path!r}); "
        f"log a new model instead; user {caller.username!r} is not an admin",
        status=409,
    )


def artifact_rule(path: str, method: str, caller: Caller):
    """Artifacts are write-once: no overwrite (PUT, multipart) and no DELETE through the proxy but the admin's."""
    if match := _ARTIFACT_ROUTE.fullmatch(path):
        kind, artifact = match["kind"], match["path"]
        if kind == "artifacts" and method == "DELETE" and not caller.is_admin:
            return refused(
                RULE_WRITE_ONCE,
                f"deleting the artifact {artifact!r} through the proxy is the admin's only (artifacts are "
                f"write-once: a served version may read it); user {caller.username!r} is not an admin",
            )
        if (kind, method) in (("artifacts", "PUT"), ("mpu/create", "POST"), ("mpu/complete", "POST")):
            return _write_once("the artifact", artifact, caller) or _sealed_model(artifact, caller)
    elif _UPLOAD_ROUTE.fullmatch(path) and method == "POST":
        return _upload_rule(caller)
    return None


def _upload_rule(caller: Caller):
    """The UI's upload-artifact route writes into a run's folder: write-once too (proxied run roots)."""
    import posixpath
    from urllib.parse import urlparse

    from flask import request
    from mlflow.exceptions import MlflowException
    from mlflow.server import handlers

    run_id, relative = request.args.get("run_uuid"), request.args.get("path")
    if not run_id or not relative:
        return None
    try:
        root = handlers._get_tracking_store().get_run(run_id).info.artifact_uri
    except MlflowException:
        return None
    parsed = urlparse(root)
    if parsed.scheme != "mlflow-artifacts":
        return None
    return _write_once("the run artifact", posixpath.join(parsed.path.strip("/"), relative), caller)
