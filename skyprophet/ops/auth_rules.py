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

This module is the entry point and the dispatch by route; the rules are in
``auth_registry_rules`` (the first four) and ``auth_artifact_rules`` (write-once), and what they
share (the rules' names, the caller's admin flag and permissions, the refusals) in ``auth_caller``.
"""

from __future__ import annotations

import logging
import re

from skyprophet.ops.auth_artifact_rules import artifact_rule
from skyprophet.ops.auth_caller import Caller
from skyprophet.ops.auth_registry_rules import registry_rule

logger = logging.getLogger("skyprophet.auth")

# Matched against the whole path (after a --static-prefix), never a tail: an artifact's path is the caller's.
_API_ROUTE = re.compile(r"/(?:ajax-)?api/\d+\.\d+/mlflow/(?P<route>[a-z-]+/[a-z-]+)/?")


def project_rule(username: str):
    """The refusal (a Flask response) for a request that breaks one of the project's rules, else None."""
    from flask import request
    from mlflow.server import auth as basic

    caller = Caller(username)
    path = basic._strip_static_prefix(request.path)
    if match := _API_ROUTE.fullmatch(path):
        return registry_rule(match["route"], request.method, caller)
    return artifact_rule(path, request.method, caller)


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
