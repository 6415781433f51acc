"""The one module that talks to MLflow set-up: tracking URI, experiment, step runs, client."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import requests
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import get_registered_sources, register_dataset_source, resolve_dataset_source
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from skyprophet import storage
from skyprophet.config import EMBEDDED_STORE_URI, PROJECT_ROOT

EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
DEFAULT_EXPERIMENT = "skyprophet"
STEP_TAG = "skyprophet.step"
PROBE_TIMEOUT = 20  # seconds for the artifact proxy's test write (MLflow's own upload retries for minutes)
logger = logging.getLogger("skyprophet")


class TrackingUnavailableError(RuntimeError):
    """The tracking server does not answer; nothing was written."""


class MissingInputError(FileNotFoundError):
    """A step's input is not there; the message says which step to run first."""


def resolve_local(uri: str) -> Path:
    """A local path for ``uri``: downloaded when it is a ``runs:/``, ``models:/`` or remote URI."""
    if urlparse(uri).scheme in ("", "file") and not uri.startswith("file:"):
        return Path(uri)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))


def artifact_location(uri: str) -> str:
    """``runs:/<id>/<path>`` as the artifact store's own URI (what dataset lineage can record)."""
    if not uri.startswith("runs:/"):
        return uri
    run_id, _, path = uri[len("runs:/") :].partition("/")
    return f"{mlflow.MlflowClient().get_run(run_id).info.artifact_uri}/{path}"


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, or the embedded SQLite store in the checkout."""
    return os.environ.get("MLFLOW_TRACKING_URI") or EMBEDDED_STORE_URI


def check_tracking_reachable(uri: str) -> None:
    """Fail at once, naming the URI, when an HTTP tracking server does not answer."""
    if urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
    except requests.RequestException as err:
        raise TrackingUnavailableError(
            f"MLflow tracking server at {uri} does not answer ({err.__class__.__name__}); "
            "start it (make tracking-server) or set MLFLOW_TRACKING_URI"
        ) from err


class TrackingAccessError(RuntimeError):
    """The tracking server refused the login (401) or the action (403); the message says who and what is missing."""


HTTP_REASONS = {401: "Unauthorized", 403: "Forbidden"}


def identity() -> str:
    """Who the requests to the tracking server are sent as, for messages."""
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return "the token in MLFLOW_TRACKING_TOKEN"
    if user := os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return f"user {user!r} (MLFLOW_TRACKING_USERNAME)"
    return "no identity (neither MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD nor MLFLOW_TRACKING_TOKEN is set)"


def _login_refused(uri: str) -> TrackingAccessError:
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        what = "the token was not accepted: check MLFLOW_TRACKING_TOKEN"
    elif os.environ.get("MLFLOW_TRACKING_USERNAME"):
        what = "unknown user or wrong password: check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    else:
        what = "it needs a login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
    return TrackingAccessError(
        f"MLflow tracking server at {uri} refused the login of {identity()} (HTTP 401 Unauthorized): {what}"
    )


def _forbidden(uri: str, action: str, needs: str, detail: str = "") -> TrackingAccessError:
    said = f"; the server says: {detail}" if detail else ""
    return TrackingAccessError(
        f"MLflow tracking server at {uri} refused {action} to {identity()} (HTTP 403 Forbidden): it lacks {needs}; "
        f"an admin grants it (python -m skyprophet.ops.auth --create-roles, docs/operations.md: Authentication){said}"
    )


def check_login(uri: str, experiment: str) -> None:
    """Fail at once, saying who and what, when an HTTP tracking server refuses the login (401) or a read (403).

    Reads the experiment by name, as every step does first; a server without authentication answers
    200 or 404 and nothing is reported.
    """
    if urlparse(uri).scheme not in ("http", "https"):
        return
    answer = requests.get(
        f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": experiment},
        timeout=10,
        **_auth(),
    )
    if answer.status_code == 401:
        raise _login_refused(uri)
    if answer.status_code == 403:
        raise _forbidden(uri, f"reading experiment {experiment!r}", f"READ on experiment {experiment!r}", answer.text)


def refused_status(err: BaseException) -> int | None:
    """401 or 403 when ``err`` is MLflow's client reporting a refused request, else None."""
    if not isinstance(err, MlflowException):
        return None
    text = str(err)
    for status in HTTP_REASONS:
        if f"error code {status} " in text:
            return status
    if getattr(err, "error_code", "") == "PERMISSION_DENIED":
        return 403
    if getattr(err, "error_code", "") == "UNAUTHENTICATED":
        return 401
    return None


@contextlib.contextmanager
def refusals_explained(action: str, needs: str) -> Iterator[None]:
    """Turn MLflow's "failed with error code 403 != 200" into a message naming the identity and the grant it lacks."""
    try:
        yield
    except MlflowException as err:
        status = refused_status(err)
        if status is None:
            raise
        uri = tracking_uri()
        if status == 401:
            raise _login_refused(uri) from err
        detail = str(err).partition("Response body: ")[2].strip().strip("'")
        raise _forbidden(uri, action, needs, detail) from err


def _auth() -> dict:
    """The credentials MLflow's own client sends (``MLFLOW_TRACKING_TOKEN`` or username/password)."""
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"headers": {"Authorization": f"Bearer {token}"}}
    if user := os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return {"auth": (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))}
    return {}


def _check_artifact_proxy_writable(location: str, uri: str, experiment: str = "") -> None:
    """PUT then DELETE a small file through the server's artifact proxy, once, without retries.

    MLflow's own client retries a failing upload for about four minutes; this probe answers in
    a second. The server's answer to a bucket it cannot write is a bare HTTP 500, so the message
    lists the likely causes and points at the server's log.
    """
    parsed = urlparse(location)
    base = f"http://{parsed.netloc}" if parsed.netloc else uri.rstrip("/")
    path = "/".join(p for p in (parsed.path.strip("/"), storage.PROBE_DIR, uuid.uuid4().hex) if p)
    url = f"{base}/api/2.0/mlflow-artifacts/artifacts/{path}"
    try:
        answer = requests.put(url, data=b"", timeout=PROBE_TIMEOUT, **_auth())
    except requests.Timeout as err:
        raise storage.ArtifactStoreError(
            f"artifact store {location}: the tracking server at {uri} did not finish a test write to its artifact "
            f"destination within {PROBE_TIMEOUT} s: the bucket may be unreachable from the server; "
            "the server's log has the cause"
        ) from err
    except requests.RequestException as err:
        raise storage.ArtifactStoreError(
            f"artifact store {location}: the tracking server at {uri} did not take a test write "
            f"({err.__class__.__name__}); check that it runs (make tracking-server)"
        ) from err
    if answer.status_code in HTTP_REASONS:
        if answer.status_code == 401:
            raise _login_refused(uri)
        named = f"experiment {experiment!r}" if experiment else "the experiment"
        raise _forbidden(uri, f"a test write to {location} (artifacts of {named})", f"EDIT on {named}", answer.text)
    if answer.status_code != 200:
        raise storage.ArtifactStoreError(
            f"artifact store {location}: the tracking server at {uri} cannot write to its artifact destination "
            f"(HTTP {answer.status_code} on a test write): check that the bucket of its --artifacts-destination "
            "exists and that the server's service account may write to it (roles/storage.objectUser); "
            "the server's log has the cause"
        )
    with contextlib.suppress(requests.RequestException):
        requests.delete(url, timeout=PROBE_TIMEOUT, **_auth())


def check_artifact_store_writable(location: str, uri: str, experiment: str = "") -> None:
    """Fail before any work when the artifact location is a bucket or proxy that cannot be written.

    ``gs://…`` is probed with the Google client (direct artifact access); ``mlflow-artifacts:/…``
    through the tracking server at ``uri`` (proxied access, as ``make tracking-server`` runs it).
    Local folders are created on demand and not probed.
    """
    scheme = urlparse(location).scheme
    if scheme == "gs":
        storage.check_gs_writable(location)
    elif scheme == "mlflow-artifacts" and (urlparse(location).netloc or urlparse(uri).scheme in ("http", "https")):
        _check_artifact_proxy_writable(location, uri, experiment)


class ProxiedArtifactSource(DatasetSource):
    """Dataset lineage for ``mlflow-artifacts:/…`` files (artifacts proxied by a tracking server).

    MLflow resolves ``gs://``, ``s3://`` and local sources but not this scheme, which is what a
    run's artifact URI is under ``mlflow server --serve-artifacts``.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri

    @staticmethod
    def _get_source_type() -> str:
        return "mlflow_artifacts"

    def load(self, dst_path: str | None = None) -> str:
        """Download the file through the tracking server; returns the local path."""
        return mlflow.artifacts.download_artifacts(artifact_uri=self.uri, dst_path=dst_path)

    @staticmethod
    def _can_resolve(raw_source: object) -> bool:
        return isinstance(raw_source, str) and urlparse(raw_source).scheme == "mlflow-artifacts"

    @classmethod
    def _resolve(cls, raw_source: object) -> ProxiedArtifactSource:
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, str]:
        """``{"uri": …}``, like MLflow's own artifact sources."""
        return {"uri": self.uri}

    @classmethod
    def from_dict(cls, source_dict: dict) -> ProxiedArtifactSource:
        """Inverse of ``to_dict``."""
        return cls(source_dict["uri"])


def dataset_source(uri: str) -> DatasetSource:
    """The lineage source of a dataset at ``uri`` (a path, ``file://``, ``gs://`` or ``mlflow-artifacts:/`` URI).

    A local one is named outright: MLflow registers two local sources (for the schemes "" and
    "file"), so resolving a path warns that it "can be interpreted in multiple ways" and picks the
    last, the one ``mlflow.data.sources`` names.
    """
    if urlparse(uri).scheme in ("", "file"):
        return mlflow.data.sources.LocalArtifactDatasetSource(uri)
    return resolve_dataset_source(uri)


def log_input(dataset: mlflow.data.Dataset, context: str) -> None:
    """``mlflow.log_input`` without MLflow's hint on integer columns, which is about model signatures.

    The hint warns that an integer model input cannot be missing at inference; a logged dataset's
    schema is lineage, never enforced, and its integer column is the 0/1 target. Casting the target
    would change the datasets' digests, which evaluate and monitor compare with what runs logged.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column", category=UserWarning)
        mlflow.log_input(dataset, context=context)


def configure() -> MlflowClient:
    """Point MLflow at the tracking store (checked first) and return a client for it."""
    uri = tracking_uri()
    check_tracking_reachable(uri)
    mlflow.set_tracking_uri(uri)
    if ProxiedArtifactSource not in get_registered_sources():
        register_dataset_source(ProxiedArtifactSource)
    return MlflowClient(uri)


@contextlib.contextmanager
def step_run(step: str) -> Iterator[mlflow.ActiveRun]:
    """The MLflow run a step works in: the one ``mlflow run`` started, or a new one.

    The tracking server and the artifact store are checked first, so a step whose results could
    not be stored fails before it does any work.
    """
    client = configure()
    uri = tracking_uri()
    name = os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT)
    check_login(uri, name)
    if run_id := os.environ.get("MLFLOW_RUN_ID"):
        experiment = client.get_experiment(client.get_run(run_id).info.experiment_id)
    else:
        with refusals_explained(f"creating experiment {name!r}", "the right to create experiments"):
            if client.get_experiment_by_name(name) is None and urlparse(uri).scheme == "sqlite":
                # The embedded store keeps artifacts in the checkout, wherever the step is started from.
                client.create_experiment(name, artifact_location=(PROJECT_ROOT / "mlruns").as_uri())
            experiment = mlflow.set_experiment(name)
    check_artifact_store_writable(experiment.artifact_location, uri, experiment.name)
    refused = refusals_explained(
        f"starting a {step} run in experiment {experiment.name!r}", f"EDIT on experiment {experiment.name!r}"
    )
    with refused, mlflow.start_run() as run:
        mlflow.set_tag(STEP_TAG, step)
        logger.info("%s: run %s in experiment %s", step, run.info.run_id, run.info.experiment_id)
        yield run


def log_params(params: dict) -> None:
    """Log the step's parameters; ``mlflow run`` may have logged them already as given.

    A value the step resolved differently (``""`` to a default path, ``5`` to ``5.0``) goes to a
    ``resolved.<name>`` tag, since MLflow refuses to change a logged parameter.
    """
    run = mlflow.active_run()
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data.params
    mlflow.log_params({k: v for k, v in params.items() if k not in logged})
    mlflow.set_tags({f"resolved.{k}": v for k, v in params.items() if k in logged and logged[k] != str(v)})


def log_step_params(params: object, only: tuple[str, ...] = (), **resolved: object) -> None:
    """Log a step's parameters object (``skyprophet.params``), with the values the step resolved.

    ``resolved`` replaces fields by what the step made of them (``""`` -> the default path);
    ``only`` keeps those fields (in declaration order) where a step logs part of its parameters.
    """
    values = dataclasses.asdict(dataclasses.replace(params, **resolved))
    log_params({k: v for k, v in values.items() if not only or k in only})


def setup_logging() -> None:
    """One-line log records for the step CLIs."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
