"""The project's rules on registry requests: protected models, trusted tags, and who may move Production.

``registry_rule`` is what ``auth_rules.project_rule`` asks for an ``/api/2.0/mlflow/…`` route
(rules ``protected-model``, ``trusted-tags``, ``production-needs-manage`` and
``production-needs-acceptance``; see ``auth_rules``). Request parameters are read with MLflow's
own request parser for the route, so a rule sees what the handler will act on.
"""

from __future__ import annotations

from skyprophet.mlops.digest import PASSED as VERDICT_PASSED
from skyprophet.mlops.digest import VERDICT_TAG
from skyprophet.ops.auth_caller import (
    PROTECTED_ALIASES,
    PROTECTED_STAGE,
    RULE_PRODUCTION_ACCEPTED,
    RULE_PRODUCTION_MANAGE,
    RULE_TRUSTED_TAGS,
    TRUSTED_TAG_PREFIXES,
    Caller,
    bad_request,
    is_protected,
    is_trusted_tag,
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
    return bad_request(
        RULE_PRODUCTION_ACCEPTED,
        f"version {version} of {name!r} has not passed the acceptance checks ({VERDICT_TAG} {state}), "
        f"so {move}: run `make promote VERSION={version}`",
    )


def registry_rule(route: str, method: str, caller: Caller):
    """The refusal for a registry request that breaks a rule, else None."""
    from mlflow.protos import model_registry_pb2 as pb

    if (route, method) == ("registered-models/create", "POST"):
        message = _message(pb.CreateRegisteredModel)
        # register_model creates the model first and takes "already exists" as success: let MLflow say so.
        if message and is_protected(message.name) and not _model_exists(message.name):
            return caller.needs_admin(f"creating registered model {message.name!r}", message.name)
    elif (route, method) == ("registered-models/rename", "POST"):
        message = _message(pb.RenameRegisteredModel)
        if message and (is_protected(message.name) or is_protected(message.new_name)):
            protected = message.name if is_protected(message.name) else message.new_name
            what = f"renaming registered model {message.name!r} to {message.new_name!r}"
            return caller.needs_admin(what, protected)
    elif (route, method) == ("registered-models/delete", "DELETE"):
        message = _message(pb.DeleteRegisteredModel)
        if message and is_protected(message.name):
            return caller.needs_admin(f"deleting registered model {message.name!r}", message.name)
    elif (route, method) == ("model-versions/delete", "DELETE"):
        message = _message(pb.DeleteModelVersion)
        if message and is_protected(message.name):
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
        trusted = sorted(tag.key for tag in message.tags if is_trusted_tag(tag.key)) if message else []
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


def _tag_rule(route: str, method: str, caller: Caller):
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
    if not message or not is_trusted_tag(message.key):
        return None
    on_version = f" of version {message.version}" if route.startswith("model-versions") else ""
    return caller.needs_manage(
        RULE_TRUSTED_TAGS, f"{verb} the tag {message.key!r}{on_version}", message.name, _TAGS_WHY
    )


def _alias_rule(method: str, caller: Caller):
    from mlflow.protos import model_registry_pb2 as pb

    message = _message(pb.SetRegisteredModelAlias if method == "POST" else pb.DeleteRegisteredModelAlias)
    if not message or message.alias.strip().lower() not in PROTECTED_ALIASES:
        return None
    target = f"the alias {message.alias!r}"
    refusal = caller.needs_manage(RULE_PRODUCTION_MANAGE, f"moving {target}", message.name)
    if refusal is None and method == "POST":  # the admin too: Production is only ever an accepted version
        refusal = _needs_acceptance(message.name, message.version, f"{target} cannot name it")
    return refusal


def _stage_rule(caller: Caller):
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
