"""The pyfunc on raw records: same features as training, calibrated outputs, named errors."""

import gc
import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from pyfunc import model as model_module
from pyfunc.features import FEATURE_NAMES, build_features
from pyfunc.fields import REQUIRED_COLUMNS, InvalidFlightsError
from pyfunc.schema import clean_flights, validate_request
from skyprophet.science import fit, raw_flights, recipe
from tests.factory import make_flights

HYPER = recipe.Recipe(n_estimators=60)


@pytest.fixture(scope="module")
def fitted_and_loaded(tmp_path_factory):
    """Fit on generated flights, log the pyfunc to a temporary store, load it back."""
    store = tmp_path_factory.mktemp("store")
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.set_experiment("pyfunc-model")  # not the experiment id an earlier test left active
    flights = make_flights(days=90)
    flights["delay"] = raw_flights.delay_target(flights)
    fitted, _ = fit.fit_model(flights, HYPER)
    with mlflow.start_run():
        info = fit.log_pyfunc(fitted, flights[list(REQUIRED_COLUMNS)].head(5))
    return fitted, mlflow.pyfunc.load_model(info.model_uri), flights


def test_features_are_the_same_in_training_and_serving(fitted_and_loaded):
    fitted, _, flights = fitted_and_loaded
    training = build_features(clean_flights(flights), fitted.spec.features)
    records = json.loads(flights[list(REQUIRED_COLUMNS)].to_json(orient="records"))
    served = build_features(
        validate_request(pd.DataFrame(records), fitted.spec.features.vocabulary)[0], fitted.spec.features
    )
    assert training.shape == (len(flights), len(FEATURE_NAMES))
    np.testing.assert_array_equal(training, served)


def test_pyfunc_scores_raw_records_like_training(fitted_and_loaded):
    fitted, model, flights = fitted_and_loaded
    records = pd.DataFrame(json.loads(flights.head(300).to_json(orient="records")))
    output = model.predict(records)
    assert list(output.columns) == ["delay_probability", "delay"]
    assert len(output) == 300, "one output per flight"
    assert output["delay_probability"].between(0, 1).all()
    np.testing.assert_allclose(output["delay_probability"], fitted.predict_clean(clean_flights(flights.head(300))))
    threshold = fitted.spec.threshold
    assert (output["delay"] == (output["delay_probability"] >= threshold).astype(int)).all()


def test_large_batches_score_on_all_threads_with_the_same_outputs(fitted_and_loaded, monkeypatch):
    _, model, flights = fitted_and_loaded
    monkeypatch.setattr(model_module, "BATCH_ROWS", 100)
    python_model = model.unwrap_python_model()
    python_model.batch_booster.set_param({"nthread": 2})
    records = pd.DataFrame(json.loads(flights.head(1_000).to_json(orient="records")))
    together = model.predict(records)  # one 1,000-flight batch: the multi-threaded booster
    apart = pd.concat([model.predict(records.iloc[i : i + 50]) for i in range(0, 1_000, 50)], ignore_index=True)
    pd.testing.assert_frame_equal(together, apart, check_exact=True)
    threads = [
        json.loads(b.save_config())["learner"]["generic_param"]["nthread"]
        for b in (python_model.booster, python_model.batch_booster)
    ]
    assert threads == ["1", "2"], "single flights on one thread, batches on two"


def test_pyfunc_learned_the_generated_pattern(fitted_and_loaded):
    _, model, flights = fitted_and_loaded
    p = model.predict(flights)["delay_probability"].to_numpy()
    alpha, gamma = flights["OPERA"] == "Alpha Air", flights["OPERA"] == "Gamma Jet"
    assert p[alpha].mean() > p[gamma].mean() + 0.1, "Alpha Air is generated later than Gamma Jet"


@pytest.mark.parametrize(
    "change, field",
    [({"OPERA": "Nowhere Air"}, "OPERA"), ({"Des-I": "QQQQ"}, "Des-I"), ({"TIPOVUELO": "Z"}, "TIPOVUELO")],
)
def test_unknown_category_names_column_and_value(fitted_and_loaded, change, field):
    _, model, flights = fitted_and_loaded
    bad = flights.head(3).assign(**change)
    with pytest.raises(InvalidFlightsError) as caught:
        model.predict(bad)
    assert caught.value.field == field
    assert next(iter(change.values())).upper() in caught.value.message, "the message shows the bad value"


def test_missing_required_column_names_it(fitted_and_loaded):
    _, model, flights = fitted_and_loaded
    with pytest.raises(mlflow.exceptions.MlflowException, match="SIGLADES"):
        model.predict(flights.head(3).drop(columns=["SIGLADES"]))


def test_serving_marker_is_the_one_mlflow_models_serve_sets():
    from mlflow.pyfunc import scoring_server

    assert scoring_server._SERVER_MODEL_PATH == model_module.SERVING_MODEL_PATH_ENV


@pytest.mark.parametrize(
    ("environment", "frozen"),
    [
        ({}, False),  # a notebook or batch job loading the model: collector left alone
        ({model_module.SERVING_MODEL_PATH_ENV: "/m"}, True),  # a `mlflow models serve` worker
        ({model_module.SERVING_MODEL_PATH_ENV: "/m", model_module.GC_FREEZE_ENV: "0"}, False),
        ({model_module.GC_FREEZE_ENV: "1"}, True),
    ],
)
def test_loaded_objects_are_frozen_only_in_a_model_server(monkeypatch, environment, frozen):
    for name in (model_module.SERVING_MODEL_PATH_ENV, model_module.GC_FREEZE_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    gc.unfreeze()
    try:
        assert model_module.freeze_loaded_objects() is frozen
        assert (gc.get_freeze_count() > 0) is frozen
    finally:
        gc.unfreeze()


def test_the_direct_xgboost_call_and_the_output_frame_give_what_the_library_calls_give(fitted_and_loaded):
    fitted, model, flights = fitted_and_loaded
    features = build_features(clean_flights(flights), fitted.spec.features)
    for rows in (slice(0, 1), slice(0, 7), slice(None)):
        chunk = np.ascontiguousarray(features[rows])
        np.testing.assert_array_equal(
            model_module.predict_values(fitted.booster, chunk), fitted.booster.inplace_predict(chunk)
        )
        probability = fitted.spec.calibrate(fitted.booster.inplace_predict(chunk))
        columns = {"delay_probability": probability, "delay": (probability >= 0.5).astype(np.int64)}
        pd.testing.assert_frame_equal(model_module.output_frame(columns), pd.DataFrame(columns), check_exact=True)
        columns["unknown_fields"] = ["Emp-I"] * len(probability)
        pd.testing.assert_frame_equal(model_module.output_frame(columns), pd.DataFrame(columns), check_exact=True)
    np.testing.assert_array_equal(  # a float64 or strided matrix goes through inplace_predict itself
        model_module.predict_values(fitted.booster, features[:5, :].astype(np.float64)),
        fitted.booster.inplace_predict(features[:5, :]),
    )
