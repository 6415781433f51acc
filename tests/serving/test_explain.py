"""The model parameter ``explain`` over HTTP on a real `mlflow models serve` of the registered model.

With ``"params": {"explain": true}`` each flight gains ``top_factors`` (three factors in words)
and ``factor_values`` (JSON: margin, bias, contributions); without it the answer is unchanged.
Directions are computed from the model's training flights, never hard-coded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from pyfunc.explain import FACTOR_VALUES_COLUMN, FACTORS, TOP_FACTORS, TOP_FACTORS_COLUMN
from pyfunc.features import FEATURE_NAMES
from pyfunc.fields import REQUIRED_COLUMNS, SCHEDULED_TIME
from pyfunc.schema import TARGET
from skyprophet.ops.processes import ServedModel
from skyprophet.science import raw_flights
from tests.factory import make_flights

pytestmark = [pytest.mark.slow]

# The sum identity holds to float32 rounding plus factor_values' 6 decimals (16 numbers).
SUM_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def training_flights(registered_model) -> pd.DataFrame:
    """The flights the registered model was trained on (etl's train part), labelled."""
    path = Path(registered_model["env"]["SKYPROPHET_DATASETS_DIR"]) / "processed" / "train.parquet"
    assert path.is_file(), f"the registered model's etl should have written {path}"
    return pd.read_parquet(path)


def unseen_flights(n_days: int, seed: int = 21) -> pd.DataFrame:
    """Generated flights of the same airlines and destinations the model has not trained on."""
    return make_flights(days=n_days, seed=seed, start="2017-01-15")[list(REQUIRED_COLUMNS)]


def invoke(server: ServedModel, flights: pd.DataFrame, params: dict | None = None) -> requests.Response:
    body = {"dataframe_split": json.loads(flights.to_json(orient="split", index=False))}
    if params is not None:
        body["params"] = params
    return requests.post(f"{server.url}/invocations", json=body, timeout=300)


def predictions(server: ServedModel, flights: pd.DataFrame, params: dict | None = None) -> list[dict]:
    answer = invoke(server, flights, params)
    assert answer.status_code == 200, f"expected 200, got {answer.status_code}: {answer.text[:500]}"
    return answer.json()["predictions"]


def test_explain_adds_three_factors_in_words_and_their_numbers_for_every_flight(server):
    flights = unseen_flights(10)
    rows = predictions(server, flights, {"explain": True})
    assert len(rows) == len(flights), "one prediction per flight"
    names = {f.name for f in FACTORS}
    for i, row in enumerate(rows):
        assert set(row) == {"delay_probability", "delay", TOP_FACTORS_COLUMN, FACTOR_VALUES_COLUMN}, row
        said = row[TOP_FACTORS_COLUMN].split(", ")
        values = json.loads(row[FACTOR_VALUES_COLUMN])
        assert len(values["top"]) == TOP_FACTORS, f"flight {i}: {TOP_FACTORS} factors: {values['top']}"
        assert len({t["factor"] for t in values["top"]}) == TOP_FACTORS, f"flight {i}: three different factors"
        assert {t["factor"] for t in values["top"]} <= names, values["top"]
        for text, top in zip(said, values["top"], strict=False):
            sign = "(+)" if top["contribution"] > 0 else "(-)" if top["contribution"] < 0 else "(0)"
            assert text == f"{top['text']} {sign}", f"flight {i}: the words match the numbers: {text!r} {top}"
        magnitudes = [abs(t["contribution"]) for t in values["top"]]
        assert magnitudes == sorted(magnitudes, reverse=True), f"flight {i}: largest first: {magnitudes}"
        assert values["probability"] == pytest.approx(row["delay_probability"], abs=1e-6)
    first = rows[0][TOP_FACTORS_COLUMN]
    assert any(word in first for word in ("departure", "airline", "destination", "flight", "on a", "in ")), first


def test_contributions_plus_bias_equal_the_raw_margin_on_thousands_of_flights(server):
    flights = unseen_flights(100, seed=5)  # 4,000 flights
    rows = predictions(server, flights, {"explain": True})
    values = [json.loads(row[FACTOR_VALUES_COLUMN]) for row in rows]
    assert all(list(v["contributions"]) == list(FEATURE_NAMES) for v in values), "one contribution per feature"
    total = np.array([sum(v["contributions"].values()) + v["bias"] for v in values])
    margin = np.array([v["margin"] for v in values])
    worst = float(np.max(np.abs(total - margin)))
    assert worst < SUM_TOLERANCE, f"contributions + bias must equal the raw margin for every flight (worst {worst})"
    # Each top factor's number is the sum of its features' contributions.
    members = {f.name: [FEATURE_NAMES[c] for c in f.columns] for f in FACTORS}
    for v in values[:500]:
        for top in v["top"]:
            expected = sum(v["contributions"][name] for name in members[top["factor"]])
            assert top["contribution"] == pytest.approx(expected, abs=SUM_TOLERANCE), top


def delay_rate(flights: pd.DataFrame, rows: pd.Series) -> float:
    return float(flights.loc[rows, TARGET].mean())


def scheduled(flights: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(flights[SCHEDULED_TIME])


def at_hour(flights: pd.DataFrame, hour: int) -> pd.DataFrame:
    times = scheduled(flights).dt.normalize() + pd.Timedelta(hours=hour)
    return flights.assign(**{SCHEDULED_TIME: times.dt.strftime("%Y-%m-%d %H:%M:%S")})


def with_airline(flights: pd.DataFrame, code: str, name: str) -> pd.DataFrame:
    return flights.assign(**{"Emp-I": code, "OPERA": name})


# (case, what changes, the factor it moves, the training flights it is compared between)
DIRECTIONS = [
    (
        "departure morning -> evening",
        lambda f: at_hour(f, 8),
        lambda f: at_hour(f, 20),
        "departure",
        lambda t: scheduled(t).dt.hour.between(6, 11),
        lambda t: scheduled(t).dt.hour.between(18, 22),
    ),
    (
        "airline Gamma Jet -> Alpha Air",
        lambda f: with_airline(f, "CCC", "Gamma Jet"),
        lambda f: with_airline(f, "AAA", "Alpha Air"),
        "airline",
        lambda t: t["Emp-I"] == "CCC",
        lambda t: t["Emp-I"] == "AAA",
    ),
]


@pytest.mark.parametrize(
    "case, before, after, factor, before_rows, after_rows", DIRECTIONS, ids=[d[0] for d in DIRECTIONS]
)
def test_a_flight_changed_in_one_feature_moves_its_contribution_the_way_the_data_does(
    server, training_flights, case, before, after, factor, before_rows, after_rows
):
    labelled = training_flights.assign(**{TARGET: raw_flights.delay_target(training_flights)})
    expected = np.sign(delay_rate(labelled, after_rows(labelled)) - delay_rate(labelled, before_rows(labelled)))
    assert expected != 0, f"{case}: the training flights must show a difference to test against"
    flights = unseen_flights(5).head(200)
    members = [FEATURE_NAMES[c] for f in FACTORS if f.name == factor for c in f.columns]

    def factor_contribution(frame: pd.DataFrame) -> np.ndarray:
        rows = predictions(server, frame, {"explain": True})
        values = [json.loads(row[FACTOR_VALUES_COLUMN])["contributions"] for row in rows]
        return np.array([sum(v[m] for m in members) for v in values])

    change = factor_contribution(after(flights)) - factor_contribution(before(flights))
    moved = np.mean(np.sign(change) == expected)
    assert np.sign(change.mean()) == expected, f"{case}: the {factor} contribution moves as the data does"
    assert moved >= 0.9, f"{case}: {moved:.0%} of flights moved the data's way (mean change {change.mean():+.3f})"


@pytest.mark.parametrize("value", ["yes", "maybe", 2, [True], {"on": True}])
def test_an_invalid_explain_value_is_a_400_naming_the_parameter(server, value):
    answer = invoke(server, unseen_flights(1).head(1), {"explain": value})
    assert answer.status_code == 400, f"explain={value!r}: expected 400, got {answer.status_code}: {answer.text[:400]}"
    message = answer.json()["message"]
    assert "explain" in message, f"explain={value!r}: the message names the parameter: {message[:400]}"
    assert invoke(server, unseen_flights(1).head(1)).status_code == 200, "still serving after a bad parameter"


def test_without_explain_the_answer_is_unchanged(server):
    flights = unseen_flights(5)
    plain = predictions(server, flights)
    off = predictions(server, flights, {"explain": False})
    explained = predictions(server, flights, {"explain": True})
    assert all(set(row) == {"delay_probability", "delay"} for row in plain), plain[0]
    assert off == plain, "explain=false is the default"
    assert [{k: row[k] for k in ("delay_probability", "delay")} for row in explained] == plain, (
        "explain adds columns and changes no prediction"
    )
