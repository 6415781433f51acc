"""The project's rules inside the tracking server, after MLflow's own basic-auth check.

What MLflow 3.17.2's basic-auth enforces by itself (checked on a real server, see
tests/integration/test_auth.py): every API call needs a known user and password (401
otherwise); READ lets a user read; creating a model version needs EDIT on the registered model,
and **so does setting an alias or transitioning a stage**, so an identity that may register
versions may also move ``production``. MLflow cannot tell the two apart, so the server runs with
``authorization_function = skyprophet.ops.auth_rules:authenticate_request``: MLflow's own basic-auth check, then
the project's rules, on every route that reaches them (``/api/2.0/…``, the UI's ``/ajax-api/2.0/…``,
and the artifact routes FastAPI serves itself). Each refusal names its rule:

- ``production-needs-manage``: setting or deleting the alias ``production``, and any stage
  transition to or from ``Production``, needs MANAGE on the registered model (the promoter) or admin.
- ``production-needs-acceptance``: the alias ``production`` or the stage ``Production`` only ever
  names a version whose tag ``acceptance.verdict`` is ``passed`` (promote writes it, and the
  artifacts' digest, before it moves the alias); the admin too. Answered 400 with what to run
  (``make promote VERSION=N``).
- ``protected-model``: creating, renaming (from or to), deleting a protected registered model, and
  deleting its versions, is the admin's (``SKYPROPHET_PROTECTED_MODELS``, comma-separated, default
  ``flight-delay``): nobody can move the name aside and register a model of their own under it.
- ``trusted-tags``: model-version and registered-model tags ``acceptance.*`` and ``promotion.*``
  (what promote, rollback and readers trust) are set, deleted, or given at version creation only
  with MANAGE on the model or as the admin. ``gate.*`` stays the pipeline's.
- ``write-once-artifacts``: through the artifact proxy a non-admin cannot overwrite an existing
  artifact (PUT, multipart upload, the UI's upload-artifact: 409), delete one (403), or add a file
  to a finalized (READY) logged model (409).

Request parameters are read with MLflow's own request parser for the route, so a rule sees what
the handler will act on.

"""

from __future__ import annotations

import logging
import os
import re

from skyprophet.config import MODEL_NAME
from skyprophet.mlops.digest import PASSED as VERDICT_PASSED
from skyprophet.mlops.digest import VERDICT_TAG

logger = logging.getLogger("skyprophet.auth")

# What only the promoter (MANAGE on the registered model) may do, and only to an accepted version.
PROTECTED_ALIASES = frozenset({"production"})
PROTECTED_STAGE = "production"
# Registered models only the admin creates, renames or deletes (comma-separated; default MODEL_NAME).
PROTECTED_MODELS_ENV = "SKYPROPHET_PROTECTED_MODELS"
# Tags promotion, rollback and readers trust: written by the promoter (MANAGE) or the admin only.
TRUSTED_TAG_PREFIXES = ("acceptance.", "promotion.")

#
# Each rule has a name; every refusal starts with it, and docs/operations.md lists them.
# Request parameters are read with the server's own parser (handlers._get_request_message with the
# route's protobuf class), so a rule sees exactly what the handler will act on (``newName`` as well
# as ``new_name``, a DELETE's JSON body as well as its query string).

RULE_PROTECTED_MODEL = "protected-model"
RULE_TRUSTED_TAGS = "trusted-tags"
RULE_PRODUCTION_MANAGE = "production-needs-manage"
RULE_PRODUCTION_ACCEPTED = "production-needs-acceptance"
RULE_WRITE_ONCE = "write-once-artifacts"

# Matched against the whole path (after a --static-prefix), never a tail: an artifact's path is the caller's.
_API_ROUTE = re.compile(r"/(?:ajax-)?api/\d+\.\d+/mlflow/(?P<route>[a-z-]+/[a-z-]+)/?")
_ARTIFACT_ROUTE = re.compile(
    r"/(?:ajax-)?api/2\.0/mlflow-artifacts/(?P<kind>artifacts|mpu/create|mpu/complete)/(?P<path>.+)", re.DOTALL
)
_LOGGED_MODEL_ARTIFACTS = re.compile(r"/models/(?P<model_id>m-[0-9a-f]+)/artifacts(?:/|$)")
_UPLOAD_ROUTE = re.compile(r"/ajax-api/2\.0/mlflow/upload-artifact/?")


def protected_models() -> frozenset[str]:
    """Registered model names only the admin may create, rename, delete or delete versions of (case-folded)."""
    raw = os.environ.get(PROTECTED_MODELS_ENV, "").strip() or MODEL_NAME
    return frozenset(name.strip().casefold() for name in raw.split(",") if name.strip())


def _is_protected(name: str) -> bool:
    return name.strip().casefold() in protected_models()


def _is_trusted_tag(key: str) -> bool:
    return key.strip().lower().startswith(TRUSTED_TAG_PREFIXES)


def _refused(rule: str, message: str, status: int = 403):
    """A plain-text refusal naming the rule (MLflow's own refusals are plain text too)."""
    from flask import make_response

    prefix = {403: "Permission denied", 409: "Conflict"}.get(status, "Refused")
    response = make_response(f"{prefix} [{rule}]: {message}")
    response.status_code = status
    response.mimetype = "text/plain"
    return response


def _bad_request(rule: str, message: str):
    """A 400 in MLflow's JSON error shape, so clients and the UI show the message itself."""
    from flask import jsonify

    response = jsonify({"error_code": "INVALID_PARAMETER_VALUE", "message": f"[{rule}] {message}"})
    response.status_code = 400
    return response


class _Caller:
    """The authenticated user of this request; admin flag and permissions looked up once, when needed."""

    def __init__(self, username: str) -> None:
        self.username = username
        self._admin: bool | None = None

    @property
    def is_admin(self) -> bool:
        if self._admin is None:
            from mlflow.server import auth as basic

            self._admin = bool(basic.store.get_user(self.username).is_admin)
        return self._admin

    def permission(self, model_name: str):
        """The caller's permission on a registered model (or prompt) by name, as MLflow resolves it."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
        from mlflow.server import auth as basic

        try:
            return basic._get_registered_model_or_prompt_permission(model_name)
        except MlflowException as err:
            if err.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
        return basic._get_role_permission_or_default(
            basic._role_permission_for_known_workspace(self.username, "registered_model", model_name, None)
        )

    def needs_manage(self, rule: str, what: str, name: str, why: str = ""):
        """None when the caller is an admin or has MANAGE on the model, else the refusal."""
        if self.is_admin:
            return None
        permission = self.permission(name)
        if permission.can_manage:
            return None
        return _refused(
            rule,
            f"{what} of registered model {name!r} needs MANAGE on it (the promoter's grant){why}; "
            f"user {self.username!r} has {permission.name}",
        )

    def needs_admin(self, what: str, name: str):
        """None for an admin, else the protected-model refusal."""
        if self.is_admin:
            return None
        listed = ", ".join(sorted(protected_models()))
        return _refused(
            RULE_PROTECTED_MODEL,
            f"{what} is the admin's only: {name!r} is a protected model ({PROTECTED_MODELS_ENV}: {listed}); "
            f"user {self.username!r} is not an admin",
        )


def _message(proto_class):
    """The request parsed as its handler parses it, or None when the handler will answer 400 itself."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import handlers

    try:
        return handlers._get_request_message(proto_class())
    except MlflowException:
        return None


def _model_exists(name: str) -> bool:
    """Whether a registered model of exactly this name exists (the server's own registry store)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import handlers

    try:
        handlers._get_model_registry_store().get_registered_model(name)
    except MlflowException:
        return False
    return True


def _version_verdict(name: str, version: str) -> str | None:
    """The version's ``acceptance.verdict`` tag from the server's own registry store; None when absent."""
    from mlflow.server import handlers

    tags = handlers._get_model_registry_store().get_model_version(name, version).tags
    return tags.get(VERDICT_TAG)


def _needs_acceptance(name: str, version: str, move: str):
    """None when the version's acceptance.verdict is ``passed``; else the 400 saying what to run."""
    from mlflow.exceptions import MlflowException

    try:
        verdict = _version_verdict(name, version)
    except MlflowException:  # an unknown version: the handler answers 404
        return None
    if verdict == VERDICT_PASSED:
        return None
    state = "is missing" if verdict is None else f"is {verdict!r}"
    return _bad_request(
        RULE_PRODUCTION_ACCEPTED,
        f"version {version} of {name!r} has not passed the acceptance checks ({VERDICT_TAG} {state}), "
        f"so {move}: run `make promote VERSION={version}`",
    )


def _registry_rule(route: str, method: str, caller: _Caller):
    """The refusal for a registry request that breaks a rule, else None."""
    from mlflow.protos import model_registry_pb2 as pb

    if (route, method) == ("registered-models/create", "POST"):
        message = _message(pb.CreateRegisteredModel)
        # register_model creates the model first and takes "already exists" as success: let MLflow say so.
        if message and _is_protected(message.name) and not _model_exists(message.name):
            return caller.needs_admin(f"creating registered model {message.name!r}", message.name)
    elif (route, method) == ("registered-models/rename", "POST"):
        message = _message(pb.RenameRegisteredModel)
        if message and (_is_protected(message.name) or _is_protected(message.new_name)):
            protected = message.name if _is_protected(message.name) else message.new_name
            what = f"renaming registered model {message.name!r} to {message.new_name!r}"
            return caller.needs_admin(what, protected)
    elif (route, method) == ("registered-models/delete", "DELETE"):
        message = _message(pb.DeleteRegisteredModel)
        if message and _is_protected(message.name):
            return caller.needs_admin(f"deleting registered model {message.name!r}", message.name)
    elif (route, method) == ("model-versions/delete", "DELETE"):
        message = _message(pb.DeleteModelVersion)
        if message and _is_protected(message.name):
            what = f"deleting version {message.version} of registered model {message.name!r}"
            return caller.needs_admin(what, message.name)
    elif route in (
        "model-versions/set-tag",
        "model-versions/delete-tag",
        "registered-models/set-tag",
        "registered-models/delete-tag",
    ):
        return _tag_rule(route, method, caller)
    elif (route, method) == ("model-versions/create", "POST"):
        message = _message(pb.CreateModelVersion)
        trusted = sorted(tag.key for tag in message.tags if _is_trusted_tag(tag.key)) if message else []
        if trusted:
            return caller.needs_manage(
                RULE_TRUSTED_TAGS, f"creating a version with the tags {', '.join(trusted)}", message.name, _TAGS_WHY
            )
    elif route == "registered-models/alias" and method in ("POST", "DELETE"):
        return _alias_rule(method, caller)
    elif (route, method) == ("model-versions/transition-stage", "POST"):
        return _stage_rule(caller)
    return None


_TAGS_WHY = f": {' and '.join(p + '*' for p in TRUSTED_TAG_PREFIXES)} tags are the promoter's record"


def _tag_rule(route: str, method: str, caller: _Caller):
    from mlflow.protos import model_registry_pb2 as pb

    classes = {
        ("model-versions/set-tag", "POST"): (pb.SetModelVersionTag, "setting"),
        ("model-versions/delete-tag", "DELETE"): (pb.DeleteModelVersionTag, "deleting"),
        ("registered-models/set-tag", "POST"): (pb.SetRegisteredModelTag, "setting"),
        ("registered-models/delete-tag", "DELETE"): (pb.DeleteRegisteredModelTag, "deleting"),
    }
    if (route, method) not in classes:
        return None
    proto_class, verb = classes[(route, method)]
    message = _message(proto_class)
    if not message or not _is_trusted_tag(message.key):
        return None
    on_version = f" of version {message.version}" if route.startswith("model-versions") else ""
    return caller.needs_manage(
        RULE_TRUSTED_TAGS, f"{verb} the tag {message.key!r}{on_version}", message.name, _TAGS_WHY
    )


def _alias_rule(method: str, caller: _Caller):
    from mlflow.protos import model_registry_pb2 as pb

    message = _message(pb.SetRegisteredModelAlias if method == "POST" else pb.DeleteRegisteredModelAlias)
    if not message or message.alias.strip().lower() not in PROTECTED_ALIASES:
        return None
    target = f"the alias {message.alias!r}"
    refusal = caller.needs_manage(RULE_PRODUCTION_MANAGE, f"moving {target}", message.name)
    if refusal is None and method == "POST":  # the admin too: Production is only ever an accepted version
        refusal = _needs_acceptance(message.name, message.version, f"{target} cannot name it")
    return refusal


def _stage_rule(caller: _Caller):
    from mlflow.exceptions import MlflowException
    from mlflow.protos import model_registry_pb2 as pb
    from mlflow.server import handlers

    message = _message(pb.TransitionModelVersionStage)
    if not message:
        return None
    name, version, stage = message.name, message.version, message.stage
    if stage.strip().lower() == PROTECTED_STAGE:
        refusal = caller.needs_manage(RULE_PRODUCTION_MANAGE, f"moving version {version} to stage {stage!r}", name)
        return refusal or _needs_acceptance(name, version, f"it cannot move to stage {stage!r}")
    try:
        current = handlers._get_model_registry_store().get_model_version(name, version).current_stage
    except MlflowException:  # an unknown version: the handler answers 404
        return None
    if current.lower() != PROTECTED_STAGE:
        return None
    return caller.needs_manage(RULE_PRODUCTION_MANAGE, f"moving version {version} out of stage {current!r}", name)


def _artifact_exists(path: str) -> bool:
    """Whether ``path`` (relative to the proxy's destination) is already a file or folder there."""
    import posixpath

    from mlflow.server import handlers
    from mlflow.utils.uri import validate_path_is_safe

    path = handlers._get_workspace_scoped_repo_path_if_enabled(validate_path_is_safe(path))
    head, tail = posixpath.split(path.strip("/"))
    repo = handlers._get_artifact_repo_mlflow_artifacts()
    return any(posixpath.basename(info.path.rstrip("/")) == tail for info in repo.list_artifacts(head or None))


def _write_once(what: str, path: str, caller: _Caller):
    """409 when a non-admin writes over an existing artifact."""
    from mlflow.exceptions import MlflowException

    try:
        exists = _artifact_exists(path)
    except MlflowException:  # an unsafe path: the handler refuses it
        return None
    if not exists or caller.is_admin:
        return None
    return _refused(
        RULE_WRITE_ONCE,
        f"{what} {path!r} already exists and artifacts are write-once (a served version may read it); "
        f"log under a new path (a new run or model); user {caller.username!r} is not an admin",
        status=409,
    )


def _sealed_model(path: str, caller: _Caller):
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
    return _refused(
        RULE_WRITE_ONCE,
        f"logged model {model.model_id} is finalized (READY): its artifacts take no new file ({path!r}); "
        f"log a new model instead; user {caller.username!r} is not an admin",
        status=409,
    )


def _artifact_rule(path: str, method: str, caller: _Caller):
    """Artifacts are write-once: no overwrite (PUT, multipart) and no DELETE through the proxy but the admin's."""
    if match := _ARTIFACT_ROUTE.fullmatch(path):
        kind, artifact = match["kind"], match["path"]
        if kind == "artifacts" and method == "DELETE" and not caller.is_admin:
            return _refused(
                RULE_WRITE_ONCE,
                f"deleting the artifact {artifact!r} through the proxy is the admin's only (artifacts are "
                f"write-once: a served version may read it); user {caller.username!r} is not an admin",
            )
        if (kind, method) in (("artifacts", "PUT"), ("mpu/create", "POST"), ("mpu/complete", "POST")):
            return _write_once("the artifact", artifact, caller) or _sealed_model(artifact, caller)
    elif _UPLOAD_ROUTE.fullmatch(path) and method == "POST":
        return _upload_rule(caller)
    return None


def _upload_rule(caller: _Caller):
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


def project_rule(username: str):
    """The refusal (a Flask response) for a request that breaks one of the project's rules, else None."""
    from flask import request
    from mlflow.server import auth as basic

    caller = _Caller(username)
    path = basic._strip_static_prefix(request.path)
    if match := _API_ROUTE.fullmatch(path):
        return _registry_rule(match["route"], request.method, caller)
    return _artifact_rule(path, request.method, caller)


def authenticate_request():
    """MLflow's basic-auth login, then the project's rules (module docstring).

    Configured as the auth app's ``authorization_function``. MLflow calls it once per request in
    its ``before_request`` (or, for the artifact routes FastAPI serves, in a Flask request context
    built from the path, method and headers) and again from its permission checks, so the rules run
    once per request (``flask.g``) and the nested calls get MLflow's own answer.
    """
    from flask import g
    from mlflow.server import auth as basic

    authorization = basic.authenticate_request_basic_auth()
    if not hasattr(authorization, "username") or g.get("skyprophet_rules_checked"):
        return authorization
    g.skyprophet_rules_checked = True
    refusal = project_rule(authorization.username)
    return authorization if refusal is None else refusal
