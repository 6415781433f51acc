"""Plausible flights for load tests, drawn from a model's own vocabulary (no real rows).

Airline and flight number come together from the model's known flight keys, every category
from its training vocabulary, times uniformly over a year: every flight is one the model
accepts, in the raw file's column names, as strings (what JSON clients send).
"""

from __future__ import annotations

import json
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
