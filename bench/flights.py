"""Plausible flights for load tests, drawn from a model's own vocabulary (no real rows).

Airline and flight number come together from the model's known flight keys, every category
from its training vocabulary, times uniformly over a year: every flight is one the model
accepts, in the raw file's column names, as strings (what JSON clients send).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REQUEST_COLUMNS = ("Fecha-I", "Vlo-I", "Ori-I", "Des-I", "Emp-I", "TIPOVUELO", "OPERA", "SIGLAORI", "SIGLADES")


def load_spec(model_dir: str | Path) -> dict:
    """The ``spec.json`` a downloaded ``flight-delay`` model version carries."""
    return json.loads((Path(model_dir) / "artifacts" / "spec.json").read_text(encoding="utf-8"))


def sample_flights(spec: dict, n: int, seed: int = 0, year: int = 2017) -> pd.DataFrame:
    """``n`` flights the model accepts, with string columns as a JSON client sends them."""
    rng = np.random.default_rng(seed)
    vocabulary = spec["features"]["vocabulary"]
    keys = spec["features"]["flight_keys"] or [f"{vocabulary['Emp-I'][0]}|100"]
    pairs = [key.split("|", 1) for key in keys]
    airline_known = set(vocabulary["Emp-I"])
    pairs = [p for p in pairs if p[0] in airline_known] or [[vocabulary["Emp-I"][0], "100"]]
    chosen = rng.integers(0, len(pairs), n)
    start = pd.Timestamp(f"{year}-01-01")
    minutes = rng.integers(0, 365 * 24 * 12, n) * 5
    times = (start + pd.to_timedelta(minutes, unit="m")).strftime("%Y-%m-%d %H:%M:%S")

    def pick(column: str) -> list[str]:
        values = vocabulary[column]
        return [values[i] for i in rng.integers(0, len(values), n)]

    frame = pd.DataFrame(
        {
            "Fecha-I": list(times),
            "Vlo-I": [pairs[i][1] for i in chosen],
            "Ori-I": "SCEL",
            "Des-I": pick("Des-I"),
            "Emp-I": [pairs[i][0] for i in chosen],
            "TIPOVUELO": pick("TIPOVUELO"),
            "OPERA": pick("OPERA"),
            "SIGLAORI": "Santiago",
            "SIGLADES": pick("SIGLADES"),
        }
    )
    return frame[list(REQUEST_COLUMNS)].astype(object)


# --- request bodies in the forms clients send ------------------------------------------------

REQUIRED_REQUEST_COLUMNS = REQUEST_COLUMNS[:2] + REQUEST_COLUMNS[3:7] + REQUEST_COLUMNS[8:]
OPTIONAL_REQUEST_COLUMNS = ("Ori-I", "SIGLAORI")


@dataclass(frozen=True)
class Form:
    """One way a client sends flights to ``/invocations``.

    ``numbers``: ``Vlo-I`` as a JSON number wherever the file's value is digits only (as a CSV
    reader or a database hands it over), else as text; ``optional``: ``Ori-I`` and ``SIGLAORI``
    sent too; ``orient``: ``dataframe_records`` or ``dataframe_split``.
    """

    name: str
    flights: int
    numbers: bool = True
    optional: bool = True
    orient: str = "dataframe_records"
    load: bool = True  # under wrk at N connections; False: timed one request at a time

    @property
    def label(self) -> str:
        number = "Vlo-I number" if self.numbers else "Vlo-I text"
        columns = "optional columns" if self.optional else "required columns only"
        return f"{self.flights:,} flight{'s' if self.flights > 1 else ''}, {number}, {columns}, {self.orient}"


FORMS = (
    Form("raw", 1),  # a flight as it stands in the raw file
    Form("text", 1, numbers=False),
    Form("required", 1, optional=False),
    Form("split", 1, orient="dataframe_split"),
    Form("batch-100", 100),
    Form("batch-10k", 10_000, orient="dataframe_split"),
    Form("batch-10k-text", 10_000, numbers=False, orient="dataframe_split", load=False),
    Form("batch-100k", 100_000, orient="dataframe_split", load=False),
)


def read_raw_flights(data_uri: str | Path) -> pd.DataFrame:
    """The raw flights file as text, exactly as it stands (nothing parsed, nothing defaulted)."""
    return pd.read_csv(data_uri, dtype=str, keep_default_na=False)


def scorable_rows(raw: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """The raw rows the model can score (what ``/invocations`` answers with 200), as they stand."""
    from pyfunc.schema import clean_flights, scorable

    return raw[scorable(clean_flights(raw), spec["features"]["vocabulary"])].reset_index(drop=True)


def sample_rows(rows: pd.DataFrame, n: int, seed: int, digits_only: bool = False) -> pd.DataFrame:
    """``n`` rows drawn without replacement (with, when there are fewer); flight numbers all digits if asked."""
    if digits_only:
        rows = rows[rows["Vlo-I"].str.fullmatch(r"\d+")]
    picked = np.random.default_rng(seed).choice(len(rows), n, replace=n > len(rows))
    return rows.iloc[picked].reset_index(drop=True)


def request_body(rows: pd.DataFrame, form: Form) -> str:
    """The JSON body a client sends for ``rows`` (raw-file rows as text) in ``form``."""
    columns = list(REQUEST_COLUMNS if form.optional else REQUIRED_REQUEST_COLUMNS)
    frame = rows[columns].astype(object)
    if form.numbers:
        frame["Vlo-I"] = [int(v) if v.isdigit() else v for v in frame["Vlo-I"]]
    if form.orient == "dataframe_split":
        payload = {"columns": columns, "data": frame.to_numpy().tolist()}
    else:
        payload = frame.to_dict(orient="records")
    return json.dumps({form.orient: payload}, ensure_ascii=False, default=int)


def form_bodies(rows: pd.DataFrame, form: Form, count: int, seed: int) -> list[str]:
    """``count`` bodies of ``form``, each of ``form.flights`` rows sampled from ``rows``."""
    single = form.flights == 1 and form.numbers  # a single flight of the number form is a number
    return [request_body(sample_rows(rows, form.flights, seed + i, digits_only=single), form) for i in range(count)]
