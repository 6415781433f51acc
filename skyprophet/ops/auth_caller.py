"""What every project rule of the tracking server shares: the rules' names, the caller, the refusals.

``auth_rules`` (the server's ``authorization_function``) hands each request to
``auth_registry_rules`` or ``auth_artifact_rules``; both ask this module who is calling (admin?
MANAGE on the model?) and answer a broken rule with a refusal that starts with the rule's name.
"""

from __future__ import annotations

import os

from skyprophet.config import MODEL_NAME

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


def protected_models() -> frozenset[str]:
    """Registered model names only the admin may create, rename, delete or delete versions of (case-folded)."""
    raw = os.environ.get(PROTECTED_MODELS_ENV, "").strip() or MODEL_NAME
    return frozenset(name.strip().casefold() for name in raw.split(",") if name.strip())


def is_protected(name: str) -> bool:
    """Whether ``name`` is one of ``protected_models()`` (case and surrounding spaces aside)."""
    return name.strip().casefold() in protected_models()


def is_trusted_tag(key: str) -> bool:
    """Whether a tag key is one promotion, rollback and readers trust (``TRUSTED_TAG_PREFIXES``)."""
    return key.strip().lower().startswith(TRUSTED_TAG_PREFIXES)


def refused(rule: str, message: str, status: int = 403):
    """A plain-text refusal naming the rule (MLflow's own refusals are plain text too)."""
    from flask import make_response

    prefix = {403: "Permission denied", 409: "Conflict"}.get(status, "Refused")
    response = make_response(f"{prefix} [{rule}]: {message}")
    response.status_code = status
    response.mimetype = "text/plain"
    return response


def bad_request(rule: str, message: str):
    """A 400 in MLflow's JSON error shape, so clients and the UI show the message itself."""
    from flask import jsonify

    response = jsonify({"error_code": "INVALID_PARAMETER_VALUE", "message": f"[{rule}] {message}"})
    response.status_code = 400
    return response


class Caller:
    """The authenticated user of this request; admin flag and permissions looked up once, when needed."""

    def __init__(self, username: str) -> None:
        self.username = username
        self._admin: bool | None = None

    @property
    def is_admin(self) -> bool:
        """Whether the caller is an admin (looked up on first use)."""
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
        return refused(
            rule,
            f"{what} of registered model {name!r} needs MANAGE on it (the promoter's grant){why}; "
            f"user {self.username!r} has {permission.name}",
        )

    def needs_admin(self, what: str, name: str):
        """None for an admin, else the protected-model refusal."""
        if self.is_admin:
            return None
        listed = ", ".join(sorted(protected_models()))
        return refused(
            RULE_PROTECTED_MODEL,
            f"{what} is the admin's only: {name!r} is a protected model ({PROTECTED_MODELS_ENV}: {listed}); "
            f"user {self.username!r} is not an admin",
        )
