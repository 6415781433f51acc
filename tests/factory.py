"""Synthetic flights in the raw file's schema, made by the project's own code (never real rows).

The delays follow a known pattern (some airlines, evenings and busy months are later), so a
model trained on them has something to learn and tests can check it learned it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

RAW_COLUMNS = [
    "Fecha-I",
    "Vlo-I",
    "Ori-I",
    "Des-I",
    "Emp-I",
    "Fecha-O",
    "Vlo-O",
    "Ori-O",
    "Des-O",
    "Emp-O",
    "DIA",
    "MES",
    "AÑO",
    "DIANOM",
    "TIPOVUELO",
    "OPERA",
    "SIGLAORI",
    "SIGLADES",
]
WEEKDAYS = ["Lunes", "Martes", "Miercoles", "Jueves", "Viernes", "Sabado", "Domingo"]
# code, name, extra log-odds of delay
AIRLINES = [("AAA", "Alpha Air", 0.9), ("BBB", "Beta Lines", 0.0), ("CCC", "Gamma Jet", -0.8)]
# code, city, flight type
DESTINATIONS = [
    ("ZZAA", "Aurora", "N"),
    ("ZZBB", "Borealis", "N"),
    ("ZZCC", "Cumulus", "I"),
    ("ZZDD", "Dunes", "I"),
]
ORIGIN = ("ZZOO", "Origen")


def make_flights(days: int = 90, flights_per_day: int = 40, seed: int = 0, start: str = "2017-01-01") -> pd.DataFrame:
    """A raw flights table with ``days * flights_per_day`` rows and a learnable delay pattern."""
    rng = np.random.default_rng(seed)
    n = days * flights_per_day
    day = pd.Timestamp(start) + pd.to_timedelta(np.repeat(np.arange(days), flights_per_day), unit="D")
    minute = rng.integers(5 * 60, 23 * 60, n) // 5 * 5
    scheduled = day + pd.to_timedelta(minute, unit="m")
    airline = rng.integers(0, len(AIRLINES), n)
    destination = rng.integers(0, len(DESTINATIONS), n)
    log_odds = -1.6 + np.array([a[2] for a in AIRLINES])[airline] + 1.2 * (minute >= 18 * 60)
    log_odds += 0.6 * np.isin(scheduled.month, [7, 12])
    delayed = rng.random(n) < 1 / (1 + np.exp(-log_odds))
    late = np.where(delayed, rng.integers(16, 120, n), rng.integers(-10, 15, n))
    operated = scheduled + pd.to_timedelta(late, unit="m")
    flight_number = (100 * (airline + 1) + 10 * destination + minute // 120).astype(str)
    codes = [AIRLINES[a][0] for a in airline]
    dest_codes = [DESTINATIONS[d][0] for d in destination]
    frame = pd.DataFrame(
        {
            "Fecha-I": scheduled.strftime("%Y-%m-%d %H:%M:%S"),
            "Vlo-I": flight_number,
            "Ori-I": ORIGIN[0],
            "Des-I": dest_codes,
            "Emp-I": codes,
            "Fecha-O": operated.strftime("%Y-%m-%d %H:%M:%S"),
            "Vlo-O": flight_number,
            "Ori-O": ORIGIN[0],
            "Des-O": dest_codes,
            "Emp-O": codes,
            "DIA": operated.day.astype(str),
            "MES": operated.month.astype(str),
            "AÑO": operated.year.astype(str),
            "DIANOM": [WEEKDAYS[w] for w in operated.weekday],
            "TIPOVUELO": [DESTINATIONS[d][2] for d in destination],
            "OPERA": [AIRLINES[a][1] for a in airline],
            "SIGLAORI": ORIGIN[1],
            "SIGLADES": [DESTINATIONS[d][1] for d in destination],
        }
    )
    return frame[RAW_COLUMNS]


def write_flights(path: Path, **kwargs) -> Path:
    """Write ``make_flights(**kwargs)`` as a raw CSV (UTF-8, LF) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    make_flights(**kwargs).to_csv(path, index=False, lineterminator="\n")
    return path
