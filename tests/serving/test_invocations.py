"""Bad input to /invocations against a real `mlflow models serve` of the registered model.

Every bad request gets a 4xx whose JSON body names the field and the problem; the server keeps
serving (a good request after each bad one still gets 200). The table runs against the stage URI
(`models:/flight-delay/Production`); the alias URI (`@production`) is checked to behave the same.
"""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests

from pyfunc.fields import REQUIRED_COLUMNS
from pyfunc.schema import MAX_BATCH_ROWS, OPTIONAL_COLUMNS
from skyprophet.config import MODEL_NAME
from skyprophet.ops import acceptance
from skyprophet.ops.isolated_scoring import score_isolated
from skyprophet.ops.processes import ServedModel, process_env

pytestmark = [pytest.mark.slow]

GOOD = {
    "Fecha-I": "2017-07-14 19:30:00",
    "Vlo-I": "226",
    "Des-I": "ZZAA",
    "Emp-I": "AAA",
    "TIPOVUELO": "N",
    "OPERA": "Alpha Air",
    "SIGLADES": "Aurora",
}


def records(**changes) -> dict:
    return {"dataframe_records": [{**GOOD, **changes}]}


def without(column: str) -> dict:
    return {"dataframe_records": [{k: v for k, v in GOOD.items() if k != column}]}


def post(server: ServedModel, body: str, content_type: str = "application/json") -> requests.Response:
    return requests.post(
        f"{server.url}/invocations", data=body.encode(), headers={"Content-Type": content_type}, timeout=120
    )


def assert_still_serving(server: ServedModel) -> None:
    assert server.process.poll() is None, "the model server process must survive bad input"
    answer = post(server, json.dumps(records()))
    assert answer.status_code == 200, f"a good flight after bad input should still be scored: {answer.text[:300]}"


# (case, request body, words the message must contain: the field and the problem)
BAD_BODIES = [
    ("body not JSON", "this is not json", ["valid JSON"]),
    ("truncated JSON", '{"dataframe_records": [{"Fecha-I"', ["valid JSON"]),
    ("JSON without an input field", json.dumps({"flights": [GOOD]}), ["dataframe_records", "dataframe_split"]),
    ("JSON list, not an object", json.dumps([GOOD]), ["JSON dictionary"]),
    ("records not a list", json.dumps({"dataframe_records": GOOD}), ["list of records"]),
    (
        "split with mismatched columns",
        json.dumps({"dataframe_split": {"columns": ["Fecha-I", "Vlo-I"], "data": [["2017-07-14 19:30:00"]]}}),
        ["dataframe_split"],
    ),
    # The model has no MLflow input schema (pyfunc.schema.model_signature): its own checks answer.
    ("empty dataframe_records", json.dumps({"dataframe_records": []}), ["'input'", "batch is empty"]),
    ("empty inputs", json.dumps({"inputs": []}), ["'input'", "batch is empty"]),
    (
        "empty dataframe_split with columns",
        json.dumps({"dataframe_split": {"columns": list(REQUIRED_COLUMNS), "data": []}}),
        ["'input'", "batch is empty"],
    ),
    ("required column missing", json.dumps(without("SIGLADES")), ["'SIGLADES'", "required column missing"]),
    ("airline as a number", json.dumps(records(OPERA=5)), ["'OPERA'", "expected text, got int"]),
    ("destination as a list", json.dumps(records(**{"Des-I": ["ZZAA"]})), ["'Des-I'", "expected text, got list"]),
    ("flight type as a boolean", json.dumps(records(TIPOVUELO=True)), ["'TIPOVUELO'", "expected text, got bool"]),
    ("flight number as an object", json.dumps(records(**{"Vlo-I": {"n": 1}})), ["'Vlo-I'", "got dict"]),
    ("fractional flight number", json.dumps(records(**{"Vlo-I": 226.5})), ["'Vlo-I'", "whole flight number"]),
    (
        "infinite flight number",
        '{"dataframe_records": [' + json.dumps(GOOD)[:-1] + ', "Vlo-I": Infinity}]}',
        ["'Vlo-I'", "whole flight number"],
    ),
    (
        "duplicate column",
        json.dumps({"dataframe_split": {"columns": [*GOOD, "OPERA"], "data": [[*GOOD.values(), "Beta Lines"]]}}),
        ["column OPERA"],
    ),
    ("Fecha-I does not parse", json.dumps(records(**{"Fecha-I": "14/07/2017"})), ["'Fecha-I'", "YYYY-MM-DD"]),
    ("Fecha-I not a date", json.dumps(records(**{"Fecha-I": "2017-02-30 10:00:00"})), ["'Fecha-I'", "YYYY-MM-DD"]),
    ("Fecha-I as a number", json.dumps(records(**{"Fecha-I": 20170714})), ["'Fecha-I'", "YYYY-MM-DD"]),
    ("Fecha-I too early", json.dumps(records(**{"Fecha-I": "1899-07-14 19:30:00"})), ["'Fecha-I'", "year outside"]),
    ("Fecha-I too late", json.dumps(records(**{"Fecha-I": "2999-07-14 19:30:00"})), ["'Fecha-I'", "year outside"]),
    (
        "unknown airline",
        json.dumps(records(OPERA="Zeta Air")),
        ["'OPERA'", "never seen", "known values: ALPHA AIR, BETA LINES, GAMMA JET"],
    ),
    ("unknown destination", json.dumps(records(SIGLADES="Atlantis")), ["'SIGLADES'", "never seen", "known values"]),
    ("unknown destination code", json.dumps(records(**{"Des-I": "QQQQ"})), ["'Des-I'", "never seen", "ZZAA"]),
    ("unknown flight type", json.dumps(records(TIPOVUELO="X")), ["'TIPOVUELO'", "never seen", "known values: I, N"]),
    ("null airline", json.dumps(records(OPERA=None)), ["'OPERA'", "null or empty"]),
    ("null Fecha-I", json.dumps(records(**{"Fecha-I": None})), ["'Fecha-I'", "null or empty"]),
    ("NaN flight number", '{"dataframe_records": [' + json.dumps(GOOD)[:-1] + ', "Vlo-I": NaN}]}', ["'Vlo-I'", "null"]),
    ("empty string destination", json.dumps(records(SIGLADES="")), ["'SIGLADES'", "null or empty"]),
    ("blank airline code", json.dumps(records(**{"Emp-I": "   "})), ["'Emp-I'", "null or empty"]),
    # A true beside a 1 (equal and of one hash: a set or pd.factorize keeps only one of them) was flight 1.
    (
        "a true after a 1",
        json.dumps(
            {
                "dataframe_records": [
                    records(**{"Vlo-I": 1})["dataframe_records"][0],
                    records(**{"Vlo-I": True})["dataframe_records"][0],
                ]
            }
        ),
        ["'Vlo-I'", "got bool", "row 1"],
    ),
    (
        "a false after a 0, as inputs",
        json.dumps({"inputs": [{**GOOD, "Vlo-I": 0}, {**GOOD, "Vlo-I": False}]}),
        ["'Vlo-I'", "got bool"],
    ),
    # MLflow reads `inputs` through numpy: columns get one type ([226, true] -> [226, 1]), text loses trailing NULs.
    (
        "inputs as columns",
        json.dumps({"inputs": {k: [v, v] for k, v in GOOD.items()}}),
        ["'inputs'", "dataframe_split"],
    ),
    ("instances", json.dumps({"instances": [GOOD, GOOD]}), ["'inputs'", "dataframe_split"]),
    ("inputs a number", json.dumps({"inputs": 5}), ["'input'", "expected a table of flights"]),
    (
        "a NUL after the flight number, as inputs",
        json.dumps({"inputs": [{**GOOD, "Vlo-I": "226\u0000"}]}),
        ["'Vlo-I'", "letters and digits"],
    ),
    (
        "a NUL after the destination, one flight as inputs",
        json.dumps({"inputs": {**GOOD, "Des-I": "ZZAA\u0000"}}),
        ["'Des-I'", "never seen"],
    ),
    (
        "one bad flight in a batch",
        json.dumps({"dataframe_records": [GOOD, GOOD, {**GOOD, "OPERA": "Zeta Air"}]}),
        ["'OPERA'", "row 2"],
    ),
]


@pytest.mark.parametrize("case, body, words", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_request_is_a_4xx_naming_field_and_problem(server, case, body, words):
    answer = post(server, body)
    assert 400 <= answer.status_code < 500, f"{case}: expected a 4xx, got {answer.status_code}: {answer.text[:500]}"
    payload = answer.json()
    assert payload.get("error_code"), f"{case}: the JSON body carries an error code: {payload}"
    for word in words:
        assert word in payload["message"], f"{case}: message should contain {word!r}: {payload['message'][-600:]}"
    assert_still_serving(server)


def test_wrong_content_type_is_415(server):
    answer = post(server, json.dumps(records()), content_type="text/plain")
    assert answer.status_code == 415, answer.text[:300]
    assert "content types" in answer.text
    assert_still_serving(server)


@pytest.mark.parametrize(
    "variant",
    [
        {"OPERA": "  alpha   air\t"},  # whitespace: stripped and collapsed
        {"OPERA": "ALPHA AIR"},  # case
        {"OPERA": "Ａｌｐｈａ Ａｉｒ"},  # full-width letters: NFKC
        {"OPERA": "Alpha\u00a0Air"},  # no-break space: NFKC makes it a space
        {"SIGLADES": " aurora ", "Des-I": "zzaa", "Emp-I": " aaa", "TIPOVUELO": "n "},
        {"Vlo-I": 226},
        {"Vlo-I": "0226"},
        {"Vlo-I": 226.0},
    ],
    ids=["whitespace", "case", "fullwidth", "nbsp", "codes", "int-flight", "zero-padded", "float-flight"],
)
def test_variants_of_a_known_value_score_like_it(server, variant):
    reference = post(server, json.dumps(records()))
    answer = post(server, json.dumps(records(**variant)))
    assert answer.status_code == 200, f"{variant} is a known value under the normalisation rule: {answer.text[:400]}"
    assert answer.json() == reference.json(), f"{variant} should score exactly like the canonical spelling"


def test_extra_columns_are_ignored(server):
    extra = {"Fecha-O": "not even a date", "Ori-I": "ZZOO", "SIGLAORI": "Origen", "colour": "blue", "n": 7}
    reference = post(server, json.dumps(records()))
    answer = post(server, json.dumps(records(**extra)))
    assert answer.status_code == 200, f"unknown columns must be ignored, not refused: {answer.text[:400]}"
    assert answer.json() == reference.json(), "ignored columns must not change the prediction"


def test_batch_at_the_limit_is_answered_and_above_it_refused(server):
    row = list(GOOD.values())
    at_limit = json.dumps({"dataframe_split": {"columns": list(GOOD), "data": [row] * MAX_BATCH_ROWS}})
    answer = post(server, at_limit)
    assert answer.status_code == 200, f"{MAX_BATCH_ROWS} flights are within the limit: {answer.text[-300:]}"
    assert len(answer.json()["predictions"]) == MAX_BATCH_ROWS, "one prediction per flight"
    over = json.dumps({"dataframe_split": {"columns": list(GOOD), "data": [row] * (MAX_BATCH_ROWS + 1)}})
    answer = post(server, over)
    assert answer.status_code == 400, f"above the limit is a 400 (a pyfunc cannot answer 413): {answer.text[-300:]}"
    message = answer.json()["message"]
    assert f"{MAX_BATCH_ROWS + 1} flights exceed the limit of {MAX_BATCH_ROWS}" in message, message[-300:]
    assert_still_serving(server)


def test_alias_uri_serves_and_refuses_like_the_stage_uri(registered_model, serve_model, server):
    alias = serve_model(f"models:/{MODEL_NAME}@production", registered_model["env"])
    for body in (json.dumps(records()), json.dumps(records(OPERA="Zeta Air")), json.dumps({"dataframe_records": []})):
        by_alias, by_stage = post(alias, body), post(server, body)
        assert by_alias.status_code == by_stage.status_code, f"{body[:80]}: {by_alias.text[:300]}"
        if by_stage.status_code == 200:
            assert by_alias.json() == by_stage.json(), "the alias and the stage point at the same version"
        else:
            assert by_alias.json()["message"] == by_stage.json()["message"]


def test_unknown_categories_refused_by_default_scored_and_flagged_on_request(server):
    flights = [GOOD, {**GOOD, "Emp-I": "ZZZ"}, {**GOOD, "Vlo-I": 226}, {**GOOD, "Des-I": "NOWHERE", "SIGLADES": "Nada"}]
    refused = post(server, json.dumps({"dataframe_records": flights}))
    assert refused.status_code == 400 and "Field 'Emp-I': value never seen in training" in refused.json()["message"]
    for params in ({"unknown_categories": "refuse"}, {}):
        again = post(server, json.dumps({"dataframe_records": flights, "params": params}))
        assert again.status_code == 400, f"refuse is the default and the explicit choice alike: {again.text[:300]}"

    scored = post(server, json.dumps({"dataframe_records": flights, "params": {"unknown_categories": "score"}}))
    assert scored.status_code == 200, scored.text[:400]
    predictions = scored.json()["predictions"]
    assert [p["unknown_fields"] for p in predictions] == ["", "Emp-I", "", "Des-I,SIGLADES"]
    assert all(0.0 <= p["delay_probability"] <= 1.0 for p in predictions)
    known = post(server, json.dumps(records())).json()["predictions"][0]
    assert predictions[0]["delay_probability"] == known["delay_probability"], "known flights score as without params"
    assert set(known) == {"delay_probability", "delay"}, "without the parameter the output is unchanged"

    for bad in ("maybe", "SCORE"):
        answer = post(server, json.dumps({"dataframe_records": flights, "params": {"unknown_categories": bad}}))
        assert answer.status_code == 400, answer.text[:300]
        assert "unknown_categories" in answer.json()["message"] and "refuse, score" in answer.json()["message"]
    assert_still_serving(server)


def test_the_production_model_serves_with_pickle_loading_disabled(registered_model, serve_model, monkeypatch):
    """The pyfunc is logged from code (pyfunc/model.py) with the booster and spec as files: nothing to unpickle."""
    env = {**registered_model["env"], "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    server = serve_model(registered_model["model_uri"], env)
    answer = server.invoke(records())
    assert answer.status_code == 200, answer.text[:400]
    assert 0.0 <= answer.json()["predictions"][0]["delay_probability"] <= 1.0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=registered_model["model_uri"]))
    finally:
        mlflow.set_tracking_uri(previous)
    pickles = [p.name for p in local.rglob("*") if p.suffix in (".pkl", ".pickle")]
    assert not pickles, pickles
    assert (local / "model.py").is_file(), "the model's code is its own file (models-from-code)"


def test_a_holdout_scored_through_the_served_model_matches_the_isolated_scorer(
    server, registered_model, tmp_path, monkeypatch
):
    """promote's quality check scores the candidate's served copy: the same probabilities as a scorer of its own."""
    processed = Path(registered_model["env"]["SKYPROPHET_DATASETS_DIR"]) / "processed" / "holdout.parquet"
    flights = pd.read_parquet(processed)
    flights.loc[0, "Des-I"] = "Nowhere Island"  # a destination the model never saw: NaN both ways
    path = tmp_path / "holdout.parquet"
    flights.to_parquet(path, index=False)
    monkeypatch.setattr(acceptance, "SCORE_CHUNK_ROWS", max(2, len(flights) // 3))  # several requests
    columns = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in flights.columns]

    served = acceptance.score_flights(acceptance.Endpoint(server.url), flights[columns])
    isolated = score_isolated(registered_model["model_uri"], path, env=process_env(registered_model["env"]))

    assert len(served) == len(flights) and np.isnan(served[0]) and np.isnan(isolated[0])
    assert np.isfinite(served[1:]).mean() > 0.9, "the rest score"
    np.testing.assert_allclose(served, isolated, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_a_refused_batch_through_the_served_model_is_an_error_naming_the_status(server):
    flights = pd.DataFrame([{c: "" for c in REQUIRED_COLUMNS}])
    with pytest.raises(acceptance.ScoringError, match="HTTP 400"):
        acceptance.score_flights(acceptance.Endpoint(server.url), flights)
