"""Who may train, promote and read: MLflow's basic-auth app, its configuration and the project's roles.

``make tracking-server AUTH=basic`` (or ``MLFLOW_AUTH=basic``) runs ``mlflow server --app-name
basic-auth``. Its configuration comes from the environment only, never from a file in the repository:

- ``MLFLOW_AUTH_ADMIN_USERNAME`` (default ``admin``) and ``MLFLOW_AUTH_ADMIN_PASSWORD`` (required):
  the admin MLflow creates on first start against an empty auth database;
- ``MLFLOW_AUTH_DATABASE_URI``: users and permissions (``postgresql://…`` in production; default the
  SQLite file ``mlflow-auth.db`` in the checkout);
- ``MLFLOW_AUTH_DEFAULT_PERMISSION`` (default ``READ``): what an authenticated user may do where
  nothing was granted;
- ``MLFLOW_FLASK_SERVER_SECRET_KEY``: the UI's CSRF key (a random one per start when unset).

From them ``write_config`` writes the ini MLflow reads (``MLFLOW_AUTH_CONFIG_PATH``) into a new
temporary file; the admin password stays in the environment, where MLflow reads it.

The project's rules inside the server are in ``skyprophet.ops.auth_rules`` (``AUTHORIZATION_FUNCTION``).

``python -m skyprophet.ops.auth --create-roles`` (as the admin) creates the identities from the environment:
``SKYPROPHET_PIPELINE_USERNAME``/``_PASSWORD`` (EDIT on the experiment and the registered model:
runs, versions, ``gate.*`` tags, the ``staging`` alias), ``SKYPROPHET_PROMOTER_USERNAME``/``_PASSWORD``
(MANAGE on the registered model, EDIT on the experiment for its promote and rollback runs), and optionally
``SKYPROPHET_READER_USERNAME``/``_PASSWORD`` (no grant: the
default READ). It creates the experiment and the registered model itself, so that neither the
pipeline nor anybody else becomes their owner (MLflow gives the creator MANAGE).
"""

from __future__ import annotations

import configparser
import logging
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from skyprophet.config import PROJECT_ROOT

logger = logging.getLogger("skyprophet.auth")

AUTH_ENV = "MLFLOW_AUTH"
ADMIN_USERNAME_ENV = "MLFLOW_AUTH_ADMIN_USERNAME"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
DATABASE_ENV = "MLFLOW_AUTH_DATABASE_URI"
DEFAULT_PERMISSION_ENV = "MLFLOW_AUTH_DEFAULT_PERMISSION"
CONFIG_PATH_ENV = "MLFLOW_AUTH_CONFIG_PATH"
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"
DEFAULT_ADMIN = "admin"
EMBEDDED_AUTH_DATABASE = f"sqlite:///{PROJECT_ROOT / 'mlflow-auth.db'}"
AUTH_CHOICES = ("none", "basic")
AUTHORIZATION_FUNCTION = "skyprophet.ops.auth_rules:authenticate_request"

ROLE_ENV = {
    "pipeline": ("SKYPROPHET_PIPELINE_USERNAME", "SKYPROPHET_PIPELINE_PASSWORD"),
    "promoter": ("SKYPROPHET_PROMOTER_USERNAME", "SKYPROPHET_PROMOTER_PASSWORD"),
    "reader": ("SKYPROPHET_READER_USERNAME", "SKYPROPHET_READER_PASSWORD"),
}


class AuthConfigError(RuntimeError):
    """The authenticated server cannot start as configured; the message names the variable to set."""


def auth_mode(value: str | None = None) -> str:
    """``none`` or ``basic``, from the argument or ``$MLFLOW_AUTH`` (default ``none``)."""
    mode = (value if value is not None else os.environ.get(AUTH_ENV, "")).strip().lower() or "none"
    if mode not in AUTH_CHOICES:
        raise AuthConfigError(f"{AUTH_ENV}={mode!r}: choose one of {', '.join(AUTH_CHOICES)}")
    return mode


def auth_database_uri() -> str:
    """``$MLFLOW_AUTH_DATABASE_URI`` (psycopg2 driver made explicit), or ``mlflow-auth.db`` in the checkout."""
    uri = os.environ.get(DATABASE_ENV) or EMBEDDED_AUTH_DATABASE
    scheme, sep, rest = uri.partition("://")
    return f"postgresql+psycopg2://{rest}" if sep and scheme in ("postgresql", "postgres") else uri


def write_config(directory: str | None = None) -> Path:
    """The ini MLflow's auth app reads, written from the environment into a new temporary file.

    Raises ``AuthConfigError`` when ``MLFLOW_AUTH_ADMIN_PASSWORD`` is not set: MLflow would refuse
    to create its admin anyway, with a message about its own config file. The password is not
    written to the file; MLflow reads it from the environment.
    """
    if not os.environ.get(ADMIN_PASSWORD_ENV):
        raise AuthConfigError(
            f"authentication is on ({AUTH_ENV}=basic) but {ADMIN_PASSWORD_ENV} is not set: set it to the "
            f"admin's password (and {ADMIN_USERNAME_ENV}, default {DEFAULT_ADMIN!r}); on GCP from Secret Manager"
        )
    default_permission = os.environ.get(DEFAULT_PERMISSION_ENV, "READ").upper()
    if default_permission not in ("READ", "NO_PERMISSIONS", "USE", "EDIT", "MANAGE"):
        raise AuthConfigError(f"{DEFAULT_PERMISSION_ENV}={default_permission!r} is not an MLflow permission")
    config = configparser.ConfigParser()
    config["mlflow"] = {
        "default_permission": default_permission,
        "database_uri": auth_database_uri(),
        "admin_username": os.environ.get(ADMIN_USERNAME_ENV) or DEFAULT_ADMIN,
        "authorization_function": AUTHORIZATION_FUNCTION,
    }
    handle, name = tempfile.mkstemp(prefix="skyprophet-basic-auth-", suffix=".ini", dir=directory)
    with os.fdopen(handle, "w") as file:  # mkstemp: readable by this user only
        config.write(file)
    return Path(name)


def server_environment(directory: str | None = None) -> dict[str, str]:
    """What ``mlflow server --app-name basic-auth`` needs in its environment (config path, secret key)."""
    env = {CONFIG_PATH_ENV: str(write_config(directory))}
    if not os.environ.get(SECRET_KEY_ENV):
        logger.warning("%s not set: a random key for this start (set it when servers share a store)", SECRET_KEY_ENV)
        env[SECRET_KEY_ENV] = secrets.token_hex(32)
    # The server imports this module (authorization_function) from the checkout.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


# --- set-up: users and grants, as the admin ---


@dataclass(frozen=True)
class Identity:
    """A role's user name and password, read from the environment."""

    role: str
    username: str
    password: str


def identities(required: tuple[str, ...] = ("pipeline", "promoter")) -> list[Identity]:
    """The roles' identities from ``SKYPROPHET_<ROLE>_USERNAME`` / ``_PASSWORD``; required ones must be set."""
    found, missing = [], []
    for role, (user_env, password_env) in ROLE_ENV.items():
        username, password = os.environ.get(user_env), os.environ.get(password_env)
        if username and password:
            found.append(Identity(role, username, password))
        elif role in required or username or password:
            missing.append(f"{user_env} and {password_env}")
    if missing:
        raise AuthConfigError(f"set {'; '.join(missing)}")
    return found


def create_roles(tracking_uri: str, experiment: str, model_name: str) -> dict[str, str]:
    """Users, the experiment, the registered model and the grants; returns role -> user name.

    Runs as the admin (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` of an admin, or the admin
    variables of the server). Idempotent: existing users keep their password (it is updated to the
    environment's), existing grants are updated.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    if not os.environ.get("MLFLOW_TRACKING_USERNAME") and not os.environ.get("MLFLOW_TRACKING_TOKEN"):
        os.environ["MLFLOW_TRACKING_USERNAME"] = os.environ.get(ADMIN_USERNAME_ENV) or DEFAULT_ADMIN
        os.environ["MLFLOW_TRACKING_PASSWORD"] = os.environ.get(ADMIN_PASSWORD_ENV, "")
    people = identities()
    admin = get_app_client("basic-auth", tracking_uri=tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    for person in people:
        try:
            admin.create_user(person.username, person.password)
            logger.info("user %s (%s) created", person.username, person.role)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            admin.update_user_password(person.username, person.password)
            logger.info("user %s (%s) exists; password set from the environment", person.username, person.role)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    try:
        client.create_registered_model(model_name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    grants = {
        "pipeline": [("experiment", experiment_id, "EDIT"), ("registered_model", model_name, "EDIT")],
        # EDIT on the experiment: promote and rollback record their own runs there.
        "promoter": [("experiment", experiment_id, "EDIT"), ("registered_model", model_name, "MANAGE")],
        "reader": [],
    }
    for person in people:
        for resource_type, resource_id, permission in grants[person.role]:
            admin.grant_user_permission(person.username, resource_type, resource_id, permission)
            logger.info("%s %s: %s on %s %s", person.role, person.username, permission, resource_type, resource_id)
    return {person.role: person.username for person in people}


def main() -> None:
    """CLI: ``python -m skyprophet.ops.auth --create-roles [--experiment NAME] [--model-name NAME]``."""
    from skyprophet import config
    from skyprophet.mlops import tracking

    parser = config.argument_parser("auth", __doc__)
    args = parser.parse_args()
    experiment = args.experiment or os.environ.get(tracking.EXPERIMENT_ENV, tracking.DEFAULT_EXPERIMENT)
    tracking.setup_logging()
    if not args.create_roles:
        parser.print_help()
        return
    uri = tracking.tracking_uri()
    if not uri.startswith(("http://", "https://")):
        sys.exit(f"auth: MLFLOW_TRACKING_URI={uri} is not a server; point it at `make tracking-server AUTH=basic`")
    try:
        roles = create_roles(uri, experiment, args.model_name)
    except AuthConfigError as err:
        sys.exit(f"auth: {err}")
    logger.info("roles on %s: %s", uri, roles)


if __name__ == "__main__":
    main()
