"""The load tests' flights and the bench's request forms: accepted by the model, built here from generated rows."""

import dataclasses
import json

import pytest

from bench.flights import (
    FORMS,
    OPTIONAL_REQUEST_COLUMNS,
    REQUEST_COLUMNS,
    REQUIRED_REQUEST_COLUMNS,
    form_bodies,
    load_spec,
    sample_flights,
    scorable_rows,
)
from pyfunc.features import fit_feature_spec
from pyfunc.schema import clean_flights, validate_request
from tests.factory import make_flights


def test_sampled_flights_are_all_accepted_and_varied():
    spec = fit_feature_spec(clean_flights(make_flights(days=30)))
    flights = sample_flights({"features": dataclasses.asdict(spec)}, 2000, seed=4)
    assert list(flights.columns) == list(REQUEST_COLUMNS)
    assert all(isinstance(v, str) for v in flights.iloc[0]), "JSON clients send text"
    clean, _ = validate_request(flights, spec.vocabulary)
    assert len(clean["Fecha-I"]) == 2000
    assert flights["Fecha-I"].nunique() > 1500, "times spread over the year, not one repeated flight"
    keys = set(spec.flight_keys)
    assert (flights["Emp-I"] + "|" + flights["Vlo-I"]).isin(keys).all(), "airline and flight number come as a pair"


def test_request_bodies_are_in_the_forms_clients_send():
    raw = make_flights(days=30).astype(str)  # as the raw file reads: every value text
    for form in FORMS:
        if form.flights > 10_000:
            continue
        body = json.loads(form_bodies(raw, form, 2, seed=3)[0])
        assert list(body) == [form.orient]
        if form.orient == "dataframe_split":
            columns, data = body[form.orient]["columns"], body[form.orient]["data"]
            records = [dict(zip(columns, row, strict=True)) for row in data]
        else:
            records = body[form.orient]
        assert len(records) == form.flights
        sent = set(records[0])
        assert sent == set(REQUEST_COLUMNS if form.optional else REQUIRED_REQUEST_COLUMNS), form.name
        assert set(OPTIONAL_REQUEST_COLUMNS) & sent == (set(OPTIONAL_REQUEST_COLUMNS) if form.optional else set())
        numbers = {type(r["Vlo-I"]) for r in records}
        assert numbers == ({int} if form.numbers else {str}), f"{form.name}: Vlo-I sent as {numbers}"
        originals = set(raw["Fecha-I"])
        assert all(r["Fecha-I"] in originals for r in records), "rows as they stand, not generated values"


def test_bodies_of_one_form_are_different_flights():
    raw = make_flights(days=30).astype(str)
    bodies = form_bodies(raw, FORMS[0], 50, seed=1)
    assert len(set(bodies)) > 40


@pytest.mark.slow
def test_every_request_form_scores_on_a_real_model_server(registered_model, serve_model, tmp_path):
    import mlflow

    mlflow.set_tracking_uri(registered_model["env"]["MLFLOW_TRACKING_URI"])
    local = mlflow.artifacts.download_artifacts(registered_model["model_uri"], dst_path=str(tmp_path / "model"))
    rows = scorable_rows(make_flights().astype(str), load_spec(local))
    assert len(rows) > 3000, "the generated flights are ones the model knows"
    server = serve_model(registered_model["model_uri"], registered_model["env"])
    for form in FORMS:
        if form.flights > 10_000:
            continue
        answer = server.invoke(form_bodies(rows, form, 1, seed=5)[0])
        assert answer.status_code == 200, f"{form.name}: {answer.text[:300]}"
        assert len(answer.json()["predictions"]) == form.flights, form.name
