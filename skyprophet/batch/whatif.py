"""What-if: a few flights of a schedule, changed, scored beside the originals with their factors.

``parse_flights`` reads ``<flight number>@<YYYY-MM-DD>[ HH:MM]`` items, ``read_flights`` the schedule
file, ``select`` the departures they name (at most ``MAX_WHATIF_FLIGHTS``), ``operator_of`` the
``OPERA`` name that flies an airline code most, ``changed`` applies the new departure time, day or
airline; ``compare`` scores both versions through the model's public ``predict`` with ``explain``
and keeps the ``MOVED_FACTORS`` factors that moved most; ``as_text`` prints the table. Bad input
raises ``WhatIfInputError`` naming the parameter. The whatif step runs them in one MLflow run.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from pyfunc.explain import FACTOR_VALUES_COLUMN, FACTORS
from pyfunc.features import FEATURE_NAMES
from pyfunc.fields import FLIGHT_NUMBER
from pyfunc.normalise import normalise_category, normalise_flight_number
from pyfunc.schema import EXPLAIN_PARAM, SCHEDULED_TIME, UNKNOWN_FIELDS
from pyfunc.times import TIME_FORMAT, parse_times
from skyprophet.batch.contract import FLIGHT_COLUMNS, ScoreInputError
from skyprophet.batch.sources import file_columns, local_path, read_batches

# At most this many flights per what-if (each one is explained twice).
MAX_WHATIF_FLIGHTS = 20
# Factors listed per flight: the ones whose contribution changed most.
MOVED_FACTORS = 3
PARAMS = {"unknown_categories": "score", EXPLAIN_PARAM: True}
AIRLINE, OPERATOR = "Emp-I", "OPERA"
_FLIGHT = re.compile(r"^\s*([^@]+?)\s*@\s*(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}:\d{2}))?\s*$")
_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Factor name -> the features whose contributions it adds up (pyfunc.explain's grouping).
FACTOR_FEATURES = {f.name: [FEATURE_NAMES[c] for c in f.columns] for f in FACTORS}


class WhatIfInputError(ValueError):
    """A parameter cannot be used as given; the message names it."""


# ------------------------------------------------------------------ the flights and the change


def parse_flights(text: str) -> list[tuple[str, str, str]]:
    """``"92@2017-12-29, 200@2017-09-15 12:00"`` -> [(flight number, day, HH:MM or "")]."""
    wanted = []
    for item in [p for p in text.split(",") if p.strip()]:
        match = _FLIGHT.match(item)
        if not match:
            raise WhatIfInputError(
                f"flights: {item.strip()!r} is not <flight number>@<YYYY-MM-DD> or <flight number>@<YYYY-MM-DD HH:MM>"
            )
        number = normalise_flight_number(pd.Series([match.group(1)])).iloc[0]
        wanted.append((number, match.group(2), match.group(3) or ""))
    if not wanted:
        raise WhatIfInputError("flights: none given; pass e.g. flights=92@2017-12-29")
    return wanted


def read_flights(data: str) -> pd.DataFrame:
    """Every flight column of ``data`` (one local CSV or Parquet file) as text, chunk by chunk."""
    if not data:
        raise WhatIfInputError("data: no schedule given; pass data=<CSV or Parquet file>")
    path = local_path(data)
    if not path.is_file():
        raise WhatIfInputError(f"data: {data}: no such file")
    try:
        kind, columns, _ = file_columns(str(path), data)
    except ScoreInputError as err:
        raise WhatIfInputError(f"data: {err}") from err
    tables = [table.to_pandas() for table in read_batches(str(path), data, kind, columns, 100_000)]
    return pd.concat(tables, ignore_index=True)


def select(schedule: pd.DataFrame, wanted: list[tuple[str, str, str]]) -> pd.DataFrame:
    """The rows each wanted flight names: every departure of that number that day (or at that minute)."""
    numbers = normalise_flight_number(schedule[FLIGHT_NUMBER]).to_numpy(dtype=object)
    times = schedule[SCHEDULED_TIME].astype(str).str.strip()
    picked = []
    for number, day, minute in wanted:
        stamp = f"{day} {minute}" if minute else day
        rows = np.flatnonzero((numbers == number) & times.str.startswith(stamp).to_numpy())
        if not len(rows):
            raise WhatIfInputError(f"flights: no flight {number} on {stamp} in the schedule")
        picked.extend(rows.tolist())
    picked = list(dict.fromkeys(picked))
    if len(picked) > MAX_WHATIF_FLIGHTS:
        raise WhatIfInputError(
            f"flights: {len(picked)} departures match; at most {MAX_WHATIF_FLIGHTS} (MAX_WHATIF_FLIGHTS) per what-if"
        )
    return schedule.iloc[picked].reset_index(drop=True)


def operator_of(schedule: pd.DataFrame, airline: str) -> str:
    """The ``OPERA`` name that flies ``airline`` most often in ``schedule`` ("" when it never does)."""
    if OPERATOR not in schedule.columns:
        return ""
    codes = normalise_category(schedule[AIRLINE])
    names = schedule.loc[(codes == normalise_category(pd.Series([airline])).iloc[0]).to_numpy(), OPERATOR]
    return names.value_counts().index[0] if len(names) else ""


def changed(
    flights: pd.DataFrame, departure: str = "", date: str = "", airline: str = "", operator: str = ""
) -> pd.DataFrame:
    """The same flights with the change applied (scheduled time rewritten in the schema's format)."""
    if departure and not _TIME_OF_DAY.match(departure):
        raise WhatIfInputError(f"departure: {departure!r} is not a time of day HH:MM (00:00 to 23:59)")
    if date and not (_DAY.match(date) and not np.isnat(parse_times([f"{date} 00:00:00"])[0])):
        raise WhatIfInputError(f"date: {date!r} is not a day YYYY-MM-DD")
    if airline and not operator:
        raise WhatIfInputError(
            f"operator: airline {airline!r} is not flown in the schedule; give operator=<OPERA name>"
        )
    times = pd.Series(parse_times(flights[SCHEDULED_TIME].tolist()))
    if date:
        times = pd.Timestamp(date) + (times - times.dt.normalize())
    if departure:
        hours, minutes = map(int, departure.split(":"))
        times = times.dt.normalize() + pd.Timedelta(hours=hours, minutes=minutes)
    result = flights.copy()
    result[SCHEDULED_TIME] = times.dt.strftime(TIME_FORMAT).to_numpy()
    if airline:
        result[AIRLINE] = airline
        result[OPERATOR] = operator
    return result


# ------------------------------------------------------------------ side by side


def factor_contributions(values: str) -> tuple[dict[str, float], dict[str, str]]:
    """(factor -> contribution in the margin's unit, factor -> its words where among the top three) of one flight."""
    parsed = json.loads(values)
    per_feature = parsed["contributions"]
    sums = {name: float(sum(per_feature[f] for f in features)) for name, features in FACTOR_FEATURES.items()}
    return sums, {item["factor"]: item["text"] for item in parsed["top"]}


def compare(model, before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """One row per flight: both probabilities and the ``MOVED_FACTORS`` factors whose contribution moved most."""
    columns = [c for c in FLIGHT_COLUMNS if c in before.columns]
    scored = [model.predict(frame[columns].reset_index(drop=True), params=PARAMS) for frame in (before, after)]
    unit = json.loads(scored[0][FACTOR_VALUES_COLUMN].iloc[0])["unit"]
    rows = []
    for i in range(len(before)):
        was, words_was = factor_contributions(scored[0][FACTOR_VALUES_COLUMN].iloc[i])
        now, words_now = factor_contributions(scored[1][FACTOR_VALUES_COLUMN].iloc[i])
        moved = sorted(FACTOR_FEATURES, key=lambda name: -abs(now[name] - was[name]))[:MOVED_FACTORS]
        factors = [
            {
                "factor": name,
                "before": round(was[name], 3),
                "after": round(now[name], 3),
                "change": round(now[name] - was[name], 3),
                "words_before": words_was.get(name, ""),
                "words_after": words_now.get(name, ""),
            }
            for name in moved
            if abs(now[name] - was[name]) > 1e-9
        ]
        p_was, p_now = float(scored[0]["delay_probability"].iloc[i]), float(scored[1]["delay_probability"].iloc[i])
        rows.append(
            {
                "flight": str(before[FLIGHT_NUMBER].iloc[i]),
                "departure_before": str(before[SCHEDULED_TIME].iloc[i]).strip(),
                "departure_after": str(after[SCHEDULED_TIME].iloc[i]),
                "airline_before": str(before[AIRLINE].iloc[i]),
                "airline_after": str(after[AIRLINE].iloc[i]),
                "probability_before": round(p_was, 4),
                "probability_after": round(p_now, 4),
                "change_points": round(100 * (p_now - p_was), 1),
                "unseen_after": str(scored[1][UNKNOWN_FIELDS].iloc[i]),
                "unit": unit,
                "moved_factors": json.dumps(factors, ensure_ascii=False),
            }
        )
    return pd.DataFrame(rows)


def as_text(table: pd.DataFrame) -> str:
    """The side-by-side table as a person reads it in a terminal."""
    lines = []
    for row in table.to_dict("records"):
        lines.append(
            f"flight {row['flight']}  {row['departure_before']} {row['airline_before']}"
            f"  ->  {row['departure_after']} {row['airline_after']}"
            + (f"  (unseen: {row['unseen_after']})" if row["unseen_after"] else "")
        )
        lines.append(
            f"  delay probability {row['probability_before']:.3f} -> {row['probability_after']:.3f}"
            f" ({row['change_points']:+.1f} points)"
        )
        lines.append(f"  factors that moved most (contribution in {row['unit']}):")
        for factor in json.loads(row["moved_factors"]):
            words = "; ".join(
                f"{when}: {factor[key]}"
                for when, key in (("was", "words_before"), ("now", "words_after"))
                if factor[key]
            )
            lines.append(
                f"    {factor['factor']:<26} {factor['before']:+7.2f} -> {factor['after']:+7.2f}"
                f" ({factor['change']:+.2f})" + (f"  {words}" if words else "")
            )
    return "\n".join(lines)
