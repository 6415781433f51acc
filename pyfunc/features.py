"""Feature engineering from what is known when a flight is scheduled, shared by training and serving.

``fit_feature_spec`` learns everything data-dependent (category vocabularies, flight keys, how
busy the schedule typically is, the origin's country) from the training flights only;
``build_features`` turns validated flights into the numeric matrix the booster reads. Both run
unchanged on any airport's file of this schema.

Each feature is declared once in ``FEATURES``: its name, its kind for XGBoost, how it is
computed and, for ``explain``, how a flight's value reads in plain words (``describe``) and which
planner-visible factor it belongs to (``factor``). Adding a feature is one entry there; without a
``describe`` its explanation falls back to ``<name> <value>``. No feature names a particular date
of the training year (no day of month, day of year, nor month): the model scores schedules that
have not flown yet, and such features only let it memorise the training year's weather, or, for
the month, meet a value it never saw (July, when trained on January to June). The backtest says
so (docs/model.md).

This module holds the spec, the ``FEATURES`` table and ``build_features``; the table's parts are
``calendar_days`` (a time's fields, holidays, days off), ``coded_spec`` (the spec as lookup
tables), ``feature_values`` (what features read and how each is computed) and ``feature_words``
(a value in words).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from pyfunc.coded_spec import CodedSpec
from pyfunc.feature_values import (
    Inputs,
    category_code,
    density,
    end_of_long_weekend,
    eve_of_long_weekend,
    flight_key,
    flight_key_code,
    high_season,
    holiday_distance,
    off_run,
)
from pyfunc.feature_words import (
    Describe,
    describe_airline,
    describe_day_density,
    describe_departure,
    describe_destination,
    describe_flight,
    describe_flight_type,
    describe_holiday,
    describe_hour_density,
    describe_long_weekend,
    describe_season,
    describe_weekday,
)
from pyfunc.fields import CATEGORY_COLUMNS, SCHEDULED_TIME
from pyfunc.schema import ORIGIN

# Flight keys (airline + flight number) seen fewer times than this share one "rare" code.
MIN_FLIGHT_KEY_COUNT = 5
# ICAO location prefixes -> ISO country (PyPI ``holidays``); two letters are tried before one.
ICAO_COUNTRIES = {
    "SC": "CL", "SA": "AR", "SB": "BR", "SD": "BR", "SN": "BR", "SS": "BR", "SW": "BR", "SP": "PE",
    "SK": "CO", "SE": "EC", "SG": "PY", "SL": "BO", "SU": "UY", "SV": "VE", "MM": "MX", "MP": "PA",
    "MR": "CR", "MD": "DO", "LE": "ES", "LF": "FR", "LI": "IT", "LP": "PT", "ED": "DE", "ET": "DE",
    "EG": "GB", "EH": "NL", "EB": "BE", "LS": "CH", "NZ": "NZ", "K": "US", "C": "CA", "Y": "AU",
}  # fmt: skip
# The ``country`` setting: "auto" infers it from the training flights' origin, "none" switches holidays off.
COUNTRY_INFER, COUNTRY_NONE = "auto", "none"
# Rows of the feature matrix filled at a time (17 float32 features: about 1 MB, cache-sized).
WRITE_BLOCK_ROWS = 16_384
# Specs saved before the date features were dropped carry this key (their day-of-year choice).
LEGACY_CALENDAR_KEY = "calendar"


@dataclass
class FeatureSpec:
    """What feature engineering learned from the training flights (JSON-serialisable)."""

    vocabulary: dict[str, list[str]]
    flight_keys: list[str]
    flights_per_weekday_hour: list[list[float]]
    flights_per_weekday: list[float]
    country: str | None = None  # ISO code whose public holidays the features use; None: no holidays

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        """Inverse of ``to_dict``; a spec saved before holidays existed has none."""
        data = {k: v for k, v in data.items() if k != LEGACY_CALENDAR_KEY}
        return cls(**data)


def infer_country(origins: Sequence[str] | None) -> str | None:
    """The origin airports' country from their ICAO codes, when they all agree; else None."""
    if origins is None or len(origins) == 0:
        return None
    countries = set()
    for code in set(origins):
        code = str(code).strip().upper()
        countries.add(ICAO_COUNTRIES.get(code[:2]) or ICAO_COUNTRIES.get(code[:1]))
    return countries.pop() if len(countries) == 1 and None not in countries else None


def resolve_country(setting: str, origins: Sequence[str] | None) -> str | None:
    """The holidays' country: inferred (``"auto"``), none (``"none"``), or an ISO code the package knows."""
    if setting in (COUNTRY_INFER, ""):  # "" was the setting's first spelling of "auto"
        return infer_country(origins)
    if setting.lower() == COUNTRY_NONE:
        return None
    import holidays

    code = setting.upper()
    if code not in holidays.list_supported_countries():
        raise ValueError(f"country {setting!r} is not an ISO code the holidays package knows (e.g. CL, US, AR)")
    return code


def fit_feature_spec(
    flights: pd.DataFrame, origins: Sequence[str] | None = None, country: str = COUNTRY_INFER
) -> FeatureSpec:
    """Learn vocabularies, schedule density and the holidays' country from validated training flights."""
    vocabulary = {c: sorted(pd.unique(np.asarray(flights[c], dtype=object)).tolist()) for c in CATEGORY_COLUMNS}
    key_counts = pd.Series(flight_key(flights)).value_counts()
    flight_keys = sorted(key_counts[key_counts >= MIN_FLIGHT_KEY_COUNT].index.tolist())
    times = pd.Series(flights[SCHEDULED_TIME])
    per_day_hour = (
        pd.DataFrame({"date": times.dt.date, "weekday": times.dt.weekday, "hour": times.dt.hour})
        .groupby(["date", "weekday", "hour"])
        .size()
    )
    days = pd.DataFrame({"date": times.dt.date, "weekday": times.dt.weekday}).drop_duplicates()
    days_per_weekday = days.groupby("weekday").size().reindex(range(7), fill_value=0)
    # Mean departures per (weekday, hour) over the training days of that weekday.
    totals = per_day_hour.groupby(level=["weekday", "hour"]).sum()
    grid = totals.unstack("hour").reindex(index=range(7), columns=range(24)).fillna(0.0)
    per_weekday_hour = grid.div(days_per_weekday.replace(0, np.nan), axis=0).fillna(0.0)
    per_weekday = per_weekday_hour.sum(axis=1)
    return FeatureSpec(
        vocabulary=vocabulary,
        flight_keys=flight_keys,
        flights_per_weekday_hour=per_weekday_hour.round(4).values.tolist(),
        flights_per_weekday=per_weekday.round(4).tolist(),
        country=resolve_country(country, origins),
    )


@dataclass(frozen=True)
class Feature:
    """One model input: name, XGBoost kind ("q" quantity, "c" categorical code), computation, words.

    ``factor`` groups features that state one fact a planner sees (the departure time is both
    ``hour`` and ``minute_of_day``): explanations add their contributions and use the first
    member's ``describe``. By default a feature is its own factor.
    """

    name: str
    kind: str
    compute: Callable[[Inputs], np.ndarray]
    describe: Describe | None = None
    factor: str = ""

    @property
    def factor_name(self) -> str:
        """The factor this feature's contribution is added to in explanations."""
        return self.factor or self.name


FEATURES: tuple[Feature, ...] = (
    Feature("hour", "q", lambda x: x.calendar["hour"], describe_departure, "departure"),
    Feature("minute_of_day", "q", lambda x: x.calendar["minute_of_day"], describe_departure, "departure"),
    Feature("weekday", "q", lambda x: x.calendar["weekday"], describe_weekday),
    Feature("high_season", "q", high_season, describe_season),
    Feature("days_to_holiday", "q", lambda x: holiday_distance(x, 1), describe_holiday, "holiday"),
    Feature("days_since_holiday", "q", lambda x: holiday_distance(x, -1), describe_holiday, "holiday"),
    Feature("days_off_in_a_row", "q", off_run, describe_long_weekend, "long weekend"),
    Feature("eve_of_long_weekend", "q", eve_of_long_weekend, describe_long_weekend, "long weekend"),
    Feature("end_of_long_weekend", "q", end_of_long_weekend, describe_long_weekend, "long weekend"),
    Feature("typical_flights_in_hour", "q", density, describe_hour_density),
    Feature("typical_flights_in_day", "q", lambda x: x.tables.per_weekday[x.calendar["weekday"]], describe_day_density),
    # Low-cardinality codes are categorical splits; destinations and flight keys (hundreds at a busy
    # airport) are split on as ordered numbers: XGBoost's partition search over their categories
    # costs about 7x the training time for the same AUC (measured on SCL 2017).
    Feature("Emp-I_code", "c", category_code("Emp-I"), describe_airline, "airline"),
    Feature(
        "Des-I_code",
        "q",
        category_code("Des-I"),
        describe_destination,
        "destination",
    ),
    Feature(
        "TIPOVUELO_code",
        "c",
        category_code("TIPOVUELO"),
        describe_flight_type,
    ),
    Feature("OPERA_code", "c", category_code("OPERA"), describe_airline, "airline"),
    Feature(
        "SIGLADES_code",
        "q",
        category_code("SIGLADES"),
        describe_destination,
        "destination",
    ),
    Feature("flight_key_code", "q", flight_key_code, describe_flight, "flight"),
)
FEATURE_NAMES = tuple(f.name for f in FEATURES)
FEATURE_TYPES = tuple(f.kind for f in FEATURES)


def build_features(flights: Mapping, spec: FeatureSpec, tables: CodedSpec | None = None) -> np.ndarray:
    """Feature matrix (rows = flights, columns = FEATURE_NAMES) from validated flights.

    ``flights`` is a DataFrame or ``schema.clean_columns``' dict of numpy columns (same values).
    Serving passes the ``tables`` it built at load time; without them they are built here.
    """
    inputs = Inputs(flights, spec, tables if tables is not None else CodedSpec.of(spec))
    # Each feature written into one float32 matrix: column_stack made a float64 one, then a copy
    # (200,000 flights: 670 ms against 300 ms on the shared machine). Written a block of rows at a
    # time, so the rows being filled stay in the CPU cache while every feature is written into
    # them (1,000,000 flights: 37 ms against 130 ms column by column).
    columns = [feature.compute(inputs) for feature in FEATURES]
    matrix = np.empty((len(inputs.calendar["day"]), len(FEATURES)), dtype=np.float32)
    for start in range(0, len(matrix), WRITE_BLOCK_ROWS):
        block = matrix[start : start + WRITE_BLOCK_ROWS]
        for column, values in enumerate(columns):
            block[:, column] = values[start : start + WRITE_BLOCK_ROWS]
    return matrix


def origins_of(frame: pd.DataFrame) -> list[str] | None:
    """The raw flights' origin codes (``Ori-I``), if the file has them: what the country is inferred from."""
    return frame[ORIGIN].dropna().astype(str).tolist() if ORIGIN in frame.columns else None
