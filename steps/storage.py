"""Bring a file from a local path, ``file://`` or ``gs://`` URI to a local path, checking its sha256."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse


class DataSourceError(RuntimeError):
    """The raw data cannot be read or is not the file it should be."""


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


def _download_gs(uri: str, destination: Path) -> None:
    from google.api_core.exceptions import GoogleAPIError
    from google.cloud import storage

    bucket, name = split_gs_uri(uri)
    try:
        storage.Client().bucket(bucket).blob(name).download_to_filename(str(destination))
    except GoogleAPIError as err:
        raise DataSourceError(f"cannot download {uri}: {err}") from err


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
