"""tracking-server: ``mlflow server`` on PostgreSQL + a ``gs://`` bucket, or on the embedded default.

Reads the variables ``mlflow server`` itself reads: ``MLFLOW_BACKEND_STORE_URI`` (default: the
SQLite file ``mlflow.db`` in the checkout) and ``MLFLOW_ARTIFACTS_DESTINATION`` (default:
``mlartifacts/`` in the checkout). Artifacts are proxied (``--serve-artifacts``): runs and model
servers only talk to this server, so only the server needs credentials for the bucket.
Before starting it checks what would otherwise fail later and slowly: the database answers
(MLflow retries a dead one for minutes), the bucket takes a test write, and ``mlflow db upgrade``
brings the schema to this MLflow's version. Then it becomes ``mlflow server`` (exec).

Authentication: ``--auth basic`` (``make tracking-server AUTH=basic``, or ``MLFLOW_AUTH=basic``)
runs MLflow's basic-auth app with the configuration of ``skyprophet.ops.auth`` (admin password, auth
database, default permission, all from the environment); it refuses to start without
``MLFLOW_AUTH_ADMIN_PASSWORD``. Without it the server is open to anyone who reaches it, and says so.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from skyprophet import config, storage
from skyprophet.config import EMBEDDED_STORE_URI, PROJECT_ROOT
from skyprophet.ops import auth

logger = logging.getLogger("skyprophet.tracking_server")
BACKEND_ENV = "MLFLOW_BACKEND_STORE_URI"
ARTIFACTS_ENV = "MLFLOW_ARTIFACTS_DESTINATION"
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the pinned driver is psycopg2(-binary).
POSTGRES_SCHEMES = ("postgresql", "postgres")
DB_CONNECT_TIMEOUT = 5


class TrackingServerError(RuntimeError):
    """The server's database or bucket is not usable; the message says which and what to do."""


def backend_store_uri() -> str:
    """``$MLFLOW_BACKEND_STORE_URI`` with an explicit psycopg2 driver, or the embedded SQLite file."""
    uri = os.environ.get(BACKEND_ENV) or EMBEDDED_STORE_URI
    scheme, sep, rest = uri.partition("://")
    return f"postgresql+psycopg2://{rest}" if sep and scheme in POSTGRES_SCHEMES else uri


def artifacts_destination() -> str:
    """``$MLFLOW_ARTIFACTS_DESTINATION`` (e.g. ``gs://bucket/mlflow``), or ``mlartifacts/`` in the checkout."""
    return os.environ.get(ARTIFACTS_ENV) or str(PROJECT_ROOT / "mlartifacts")


def redact(uri: str) -> str:
    """The URI with any password replaced by ``***`` (for logs and error messages)."""
    parsed = urlparse(uri)
    if parsed.password is None:
        return uri
    return parsed._replace(netloc=parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)).geturl()


def check_database(uri: str, variable: str = BACKEND_ENV) -> None:
    """Connect once with a short timeout; MLflow's own start-up retries a dead database for minutes."""
    if not uri.startswith("postgresql"):
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": DB_CONNECT_TIMEOUT})
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
        raise TrackingServerError(
            f"{'auth database' if variable != BACKEND_ENV else 'backend store'} {redact(uri)} does not answer "
            f"({reason}); start PostgreSQL or fix {variable} (the password can come from PGPASSWORD instead of the URI)"
        ) from err
    finally:
        engine.dispose()


def mlflow_executable() -> str:
    """The ``mlflow`` next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "mlflow"
    return str(beside) if beside.exists() else shutil.which("mlflow") or "mlflow"


def prepare(backend: str, destination: str) -> None:
    """Database answers, bucket writable, schema upgraded; raises ``TrackingServerError`` otherwise."""
    check_database(backend)
    if destination.startswith("gs://"):
        try:
            storage.check_gs_writable(destination)
        except storage.ArtifactStoreError as err:
            raise TrackingServerError(str(err)) from err
    logger.info("mlflow db upgrade %s", redact(backend))
    done = subprocess.run([mlflow_executable(), "db", "upgrade", backend], capture_output=True, text=True)
    if done.returncode != 0:
        raise TrackingServerError(f"mlflow db upgrade {redact(backend)} failed:\n{done.stderr[-2000:]}")


def server_command(
    backend: str, destination: str, host: str, port: int, workers: int, extra: list[str], mode: str = "none"
) -> list[str]:
    """``mlflow server`` with proxied artifacts (``--serve-artifacts``) to ``destination``; basic-auth if asked."""
    return [
        mlflow_executable(),
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        destination,
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        *(["--app-name", "basic-auth"] if mode == "basic" else []),
        *extra,
    ]


def main() -> None:
    """CLI: ``python -m skyprophet.ops.tracking_server [--host H] [--port P] [--workers N] [-- mlflow server args]``."""
    args, extra = config.argument_parser("tracking_server", __doc__).parse_known_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # MLflow 3's job runner (GenAI evaluation jobs, a dozen huey workers) is unused here.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    backend, destination = backend_store_uri(), artifacts_destination()
    try:
        mode = auth.auth_mode(args.auth or None)
        if mode == "basic":
            os.environ.update(auth.server_environment())  # refuses without MLFLOW_AUTH_ADMIN_PASSWORD
            logger.info(
                "authentication: MLflow basic-auth, users in %s, default permission %s; moving production needs "
                "MANAGE on the registered model",
                redact(auth.auth_database_uri()),
                os.environ.get(auth.DEFAULT_PERMISSION_ENV, "READ").upper(),
            )
            check_database(auth.auth_database_uri(), auth.DATABASE_ENV)
        else:
            logger.warning(
                "authentication: none. Anyone who reaches %s:%d may read, register and promote models; for local "
                "use only (AUTH=basic, or MLFLOW_AUTH=basic, requires logins)",
                args.host,
                args.port,
            )
        prepare(backend, destination)
    except (TrackingServerError, auth.AuthConfigError) as err:
        sys.exit(f"tracking-server: {err}")
    command = server_command(
        backend, destination, args.host, args.port, args.workers, [a for a in extra if a != "--"], mode
    )
    logger.info("mlflow server on %s:%d: store %s, artifacts %s", args.host, args.port, redact(backend), destination)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
