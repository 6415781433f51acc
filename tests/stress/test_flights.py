"""The load tests' flights: every one is a flight the model accepts, none is a real row."""

import dataclasses

from bench.flights import REQUEST_COLUMNS, sample_flights
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
