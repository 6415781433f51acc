"""Bring a file from a local path, ``file://`` or ``gs://`` URI to a local path, checking its sha256.

Also the GCS preflight: a ``gs://`` artifact location is probed with a write and a delete, so a
missing or read-only bucket fails before a step does any work. The Google client finds its
credentials itself (Application Default Credentials; ``STORAGE_EMULATOR_HOST`` for an emulator).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

logger = logging.getLogger("skyprophet.storage")
PROBE_DIR = ".skyprophet-preflight"
GCS_TIMEOUT = 30  # seconds per GCS request in the preflight, and for pyarrow's retries
# A flights CSV read as text, every cell as written ("NA" is an airport code, not a missing value):
# the contract (pyfunc.schema) parses and refuses values itself.
TEXT_CSV = {"dtype": str, "keep_default_na": False, "na_values": [], "encoding": "utf-8"}


class DataSourceError(RuntimeError):
    """The raw data cannot be read or is not the file it should be."""


class ArtifactStoreError(RuntimeError):
    """The artifact store (a bucket, or the tracking server's artifact proxy) cannot be written."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def split_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def gcs_client():
    """A ``google.cloud.storage.Client``: Application Default Credentials, else anonymous (as MLflow does)."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        return storage.Client()
    except DefaultCredentialsError:
        return storage.Client.create_anonymous_client()


def gcs_filesystem():
    """The pyarrow GCS file system, found as ``gcs_client`` finds its credentials.

    ``STORAGE_EMULATOR_HOST`` points it at an emulator (anonymous); otherwise Application Default
    Credentials, else anonymous (looked up once per process). A request is retried for at most
    ``GCS_TIMEOUT`` seconds, so an unreachable store fails the step instead of hanging it.
    """
    return _gcs_filesystem(os.environ.get("STORAGE_EMULATOR_HOST") or "")


@functools.cache
def _gcs_filesystem(emulator: str):
    from datetime import timedelta

    from pyarrow import fs

    retry = timedelta(seconds=GCS_TIMEOUT)
    if emulator:
        parsed = urlparse(emulator if "://" in emulator else f"http://{emulator}")
        return fs.GcsFileSystem(
            anonymous=True, endpoint_override=parsed.netloc, scheme=parsed.scheme, retry_time_limit=retry
        )
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default()
        anonymous = False
    except DefaultCredentialsError:
        anonymous = True
    return fs.GcsFileSystem(anonymous=anonymous, retry_time_limit=retry)


def _where() -> str:
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    return f"the GCS emulator at {emulator}" if emulator else "Google Cloud Storage"


def _download_gs(uri: str, destination: Path) -> None:
    import requests
    from google.api_core.exceptions import GoogleAPIError

    bucket, name = split_gs_uri(uri)
    try:
        gcs_client().bucket(bucket).blob(name).download_to_filename(str(destination))
    except (GoogleAPIError, requests.RequestException) as err:
        destination.unlink(missing_ok=True)
        raise DataSourceError(f"cannot download {uri} from {_where()}: {err}") from err


def check_gs_writable(uri: str) -> None:
    """Write and delete a small object under ``uri``; raise ``ArtifactStoreError`` saying what to fix."""
    import requests
    from google.api_core.exceptions import Forbidden, GoogleAPIError, NotFound, Unauthorized

    bucket, prefix = split_gs_uri(uri)
    name = "/".join(p for p in (prefix.rstrip("/"), PROBE_DIR, uuid.uuid4().hex) if p)
    blob = gcs_client().bucket(bucket).blob(name)
    try:
        blob.upload_from_string(b"", timeout=GCS_TIMEOUT, retry=None)
    except NotFound as err:
        raise ArtifactStoreError(
            f"artifact store {uri}: bucket gs://{bucket} does not exist in {_where()}; "
            f"create it (gcloud storage buckets create gs://{bucket}) or point the artifact location elsewhere"
        ) from err
    except (Forbidden, Unauthorized) as err:
        raise ArtifactStoreError(
            f"artifact store {uri}: the credentials in use may not write to gs://{bucket} ({err.code}); "
            "grant their service account roles/storage.objectUser on the bucket"
        ) from err
    except (GoogleAPIError, requests.RequestException) as err:
        raise ArtifactStoreError(
            f"artifact store {uri}: test write to gs://{bucket} failed on {_where()} ({err.__class__.__name__}: {err})"
        ) from err
    try:
        blob.delete(timeout=GCS_TIMEOUT, retry=None)
    except (GoogleAPIError, requests.RequestException) as err:
        logger.warning("preflight object gs://%s/%s written but not deleted: %s", bucket, name, err)


def fetch(uri: str, destination: Path, expected_sha256: str = "") -> Path:
    """Copy ``uri`` to ``destination`` (atomically) and check its sha256 when one is given."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    scheme = urlparse(uri).scheme
    if scheme == "gs":
        _download_gs(uri, partial)
    elif scheme in ("", "file"):
        source = Path(unquote(urlparse(uri).path) if scheme == "file" else uri)
        if not source.is_file():
            raise DataSourceError(f"raw data not found at {uri}; set data_uri or SKYPROPHET_DATA_URI")
        shutil.copyfile(source, partial)
    else:
        raise DataSourceError(f"unsupported data URI scheme {scheme!r} in {uri}; use a path, file:// or gs://")
    actual = sha256_of(partial)
    if expected_sha256 and actual != expected_sha256.lower():
        partial.unlink()
        raise DataSourceError(f"sha256 of {uri} is {actual}, expected {expected_sha256}")
    partial.replace(destination)
    return destination
