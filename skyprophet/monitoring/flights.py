"""New flights as monitor and recalibrate read them: a schedule (CSV or Parquet) from a path or URI.

The file is fetched through ``skyprophet.storage`` (path, ``file://`` or ``gs://``); a missing,
empty or unreadable file, or one without the schedule's columns, is a ``BadFlightsError`` naming
what is wrong, and a step exits ``EXIT_BAD_INPUT`` on it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from pyfunc.schema import REQUIRED_COLUMNS, InvalidFlightsError, clean_flights
from skyprophet.storage import TEXT_CSV, DataSourceError, fetch

# The exit code of a step (monitor, recalibrate) whose new flights are unusable.
EXIT_BAD_INPUT = 4


class BadFlightsError(ValueError):
    """The new flights cannot be checked as given; the message says what is wrong."""


def read_flights(uri: str, workdir: Path) -> pd.DataFrame:
    """The new flights as given (CSV as text, or Parquet); refuses a missing, empty or unreadable file."""
    if not uri:
        raise BadFlightsError("no new flights given: pass -P data=<path, file:// or gs:// URI> (or --data)")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        local = Path(unquote(parsed.path) if parsed.scheme == "file" else uri)
        if not local.is_file():
            raise BadFlightsError(f"new flights not found at {uri}; pass an existing file")
    try:
        path = fetch(uri, workdir / (Path(parsed.path).name or "flights.csv"))
    except DataSourceError as err:
        raise BadFlightsError(f"cannot fetch new flights: {err}") from err
    if path.stat().st_size == 0:
        raise BadFlightsError(f"new flights file {uri} is empty; expected a header with {list(REQUIRED_COLUMNS)}")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, **TEXT_CSV)
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise BadFlightsError(f"cannot read new flights {uri} as CSV or Parquet: {err}") from err
    if frame.empty:
        raise BadFlightsError(f"new flights file {uri} has no flights (header only?)")
    return frame


def clean_new_flights(frame: pd.DataFrame, uri: str) -> pd.DataFrame:
    """The schedule's required columns, parsed and normalised; schema problems name the field."""
    try:
        return clean_flights(frame)
    except InvalidFlightsError as err:
        raise BadFlightsError(
            f"new flights {uri}: {err.message}; a schedule needs the columns {list(REQUIRED_COLUMNS)}"
        ) from err
