"""Realized quality and the delay-rate correction: known answers on generated numbers and flights.

Fast: no model server, no ``mlflow run``; the registry lookups use a temporary SQLite store.
"""

from __future__ import annotations

import dataclasses

import mlflow
import numpy as np
import pandas as pd
import pytest

from pyfunc.model import ModelSpec
from skyprophet.mlops.registry import PROMOTED_AT_TAG
from skyprophet.mlops.tags import CALIBRATED_THROUGH_TAG, TRAINED_THROUGH_TAG
from skyprophet.monitoring import realized
from skyprophet.science import raw_flights
from skyprophet.science.fit import fit_model
from skyprophet.science.recipe import Recipe
from tests.factory import make_flights


def labelled(flights: pd.DataFrame) -> pd.DataFrame:
    """Generated flights with etl's 0/1 delay label, as train reads them."""
    return flights.assign(delay=raw_flights.delay_target(flights))


def test_realized_figures_on_a_known_answer():
    y = np.array([0] * 80 + [1] * 20)
    calibrated = realized.figures(y, np.full(100, 0.2))
    assert calibrated["base_rate"] == pytest.approx(0.2) and calibrated["mean_predicted"] == pytest.approx(0.2)
    assert calibrated["ece"] == pytest.approx(0.0) and calibrated["roc_auc"] == pytest.approx(0.5)
    off = realized.figures(y, np.full(100, 0.5))
    assert off["ece"] == pytest.approx(0.3), "every flight predicted 0.5 against a rate of 0.2"
    ranked = realized.figures(y, np.r_[np.full(80, 0.1), np.full(20, 0.6)])
    assert ranked["roc_auc"] == pytest.approx(1.0) and ranked["pr_auc"] == pytest.approx(1.0)
    assert ranked["ece"] == pytest.approx(0.8 * 0.1 + 0.2 * 0.4)
    assert np.isnan(realized.figures(np.zeros(5, int), np.full(5, 0.1))["roc_auc"]), "one class: no AUC"


def test_flown_outcomes_use_etl_label_rule_and_skip_unflown():
    raw = make_flights(days=3, flights_per_day=10)
    raw.loc[0, "Fecha-O"] = ""  # not flown yet
    outcomes = realized.flown_outcomes(raw)
    assert len(outcomes) == len(raw) - 1 and 0 not in set(outcomes["row"])
    late = (pd.to_datetime(raw["Fecha-O"], errors="coerce") - pd.to_datetime(raw["Fecha-I"])).dt.total_seconds() / 60
    assert outcomes["y"].tolist() == (late[1:] > 15).astype(int).tolist()
    assert not realized.has_flown(raw.drop(columns=["Fecha-O"]))
    with pytest.raises(realized.NotFlownError, match="nothing flown"):
        realized.flown_outcomes(raw.assign(**{"Fecha-O": ""}))


def test_version_lookup_by_date_follows_the_data_clock():
    periods = realized.ServingPeriods(
        [pd.Timestamp("2017-06-30 23:00"), pd.Timestamp("2017-07-10 22:00"), pd.Timestamp("2017-07-31 23:50")],
        ["3", "5", "6"],
        current="6",
    )
    times = pd.to_datetime(
        ["2017-05-01 00:00", "2017-07-01 08:00", "2017-07-10 21:59", "2017-07-11 06:00", "2017-08-02 00:00"]
    )
    assert periods.at(times).tolist() == ["6", "3", "3", "5", "6"], "older than every version: current Production"
    assert realized.ServingPeriods([], [], "2").at(times).tolist() == ["2"] * 5


def test_serving_periods_from_the_registry(tracking_store):
    client = mlflow.MlflowClient()
    name = "flight-delay-lookup"
    client.create_registered_model(name)
    stamps = {
        "1": {TRAINED_THROUGH_TAG: "2017-06-30 23:55:00", PROMOTED_AT_TAG: "x"},
        "2": {TRAINED_THROUGH_TAG: "2017-06-30 23:55:00", CALIBRATED_THROUGH_TAG: "2017-07-07 23:00:00"},
        "3": {TRAINED_THROUGH_TAG: "2017-06-30 23:55:00", CALIBRATED_THROUGH_TAG: "2017-07-14 23:00:00"},
    }
    stamps["2"][PROMOTED_AT_TAG] = "x"
    for number, tags in stamps.items():
        client.create_model_version(name, f"file:///nowhere/{number}", tags=tags)
    with pytest.raises(FileNotFoundError, match="no Production version"):
        realized.serving_periods(client, name)
    client.set_registered_model_alias(name, "production", "3")
    periods = realized.serving_periods(client, name)
    assert periods.versions == ["1", "2", "3"] and periods.current == "3"
    times = pd.to_datetime(["2017-07-01 00:00", "2017-07-08 00:00", "2017-07-20 00:00", "2017-01-01 00:00"])
    assert periods.at(times).tolist() == ["1", "2", "3", "3"]


def test_intercept_shift_is_stored_applied_and_absent_in_older_specs(tmp_path):
    spec = ModelSpec(None, [0.0, 1.0], [0.0, 1.0], 0.5)  # features are not needed to calibrate
    raw = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    assert spec.calibrate(raw).tolist() == raw.tolist(), "no shift: the isotonic curve alone"
    up = dataclasses.replace(spec, intercept_shift=1.0).calibrate(raw)
    assert up[2] == pytest.approx(1 / (1 + np.exp(-1.0))) and (up[1:4] > raw[1:4]).all()
    assert 0 < up[0] < 1e-5 and up[-1] < 1, "0 and 1 stay finite, kept away from the ends"
    assert np.all(np.diff(up) > 0), "the ranking survives"


def test_older_spec_json_loads_with_no_shift(tmp_path):
    spec, _ = fit_model(labelled(make_flights(days=30, flights_per_day=20)), Recipe.of(n_estimators=5, cv_folds=2))
    path = tmp_path / "spec.json"
    spec.spec.save(str(path))
    data = pd.read_json(path, typ="series").to_dict()
    assert data["intercept_shift"] == 0.0
    del data["intercept_shift"]
    pd.Series(data).to_json(path)
    assert ModelSpec.load(str(path)).intercept_shift == 0.0
