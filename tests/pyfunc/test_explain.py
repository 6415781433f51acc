"""Explanations in process: factors cover every feature once, the numbers mean what the docs say."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from pyfunc.coded_spec import CodedSpec
from pyfunc.explain import FACTOR_VALUES_COLUMN, FACTORS, TOP_FACTORS_COLUMN, factors_of, feature_matrix
from pyfunc.feature_values import Inputs
from pyfunc.features import FEATURE_NAMES, FEATURES, Feature, build_features, fit_feature_spec
from pyfunc.fields import REQUIRED_COLUMNS, InvalidFlightsError
from pyfunc.schema import clean_flights
from skyprophet.science import fit, raw_flights, recipe
from tests.factory import make_flights


def test_every_feature_is_in_exactly_one_factor():
    columns = sorted(c for f in FACTORS for c in f.columns)
    assert columns == list(range(len(FEATURE_NAMES))), "each feature column belongs to one factor"
    assert [f.name for f in FACTORS][:1] == ["departure"], "factors in declaration order"


def test_a_feature_declared_without_words_reads_as_name_and_value():
    flights = clean_flights(make_flights(days=1, flights_per_day=3))
    spec = fit_feature_spec(flights)
    inputs = Inputs(flights, spec, CodedSpec.of(spec))
    new = Feature("minutes_after_six", "q", lambda x: x.calendar["minute_of_day"] - 360)
    (factor,) = factors_of((new,))
    expected = [f"minutes_after_six {m - 360}" for m in inputs.calendar["minute_of_day"][[0, 2]]]
    assert factor.describe(inputs, np.array([0, 2])) == expected, "generic fallback: '<name> <value>'"
    assert all(f.describe is not None for f in FEATURES), "the declared features each say their value in words"


@pytest.fixture(scope="module", params=["minutes_late", "delayed"])
def loaded(request, tmp_path_factory):
    """A tiny model of each objective, logged and loaded back as the pyfunc; and its booster."""
    store = tmp_path_factory.mktemp("store")
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.set_experiment("explain")
    flights = make_flights(days=60, seed=4)
    flights["delay"] = raw_flights.delay_target(flights)
    hyper = recipe.Recipe(n_estimators=30, cv_folds=3, objective=request.param)
    fitted, _ = fit.fit_model(flights, hyper)
    with mlflow.start_run():
        info = fit.log_pyfunc(fitted, flights[list(REQUIRED_COLUMNS)].head(5))
    records = pd.DataFrame(json.loads(flights[list(REQUIRED_COLUMNS)].head(800).to_json(orient="records")))
    return fitted, mlflow.pyfunc.load_model(info.model_uri), records


def test_contributions_sum_to_the_margin_the_calibration_maps(loaded):
    fitted, model, records = loaded
    output = model.predict(records, params={"explain": True})
    values = [json.loads(v) for v in output[FACTOR_VALUES_COLUMN]]
    features = build_features(clean_flights(records), fitted.spec.features)
    margin = fitted.booster.predict(feature_matrix(features), output_margin=True)
    total = np.array([sum(v["contributions"].values()) + v["bias"] for v in values])
    np.testing.assert_allclose(total, margin, atol=1e-4, err_msg="contributions + bias == the booster's margin")
    np.testing.assert_allclose([v["margin"] for v in values], margin, atol=1e-5)
    explainer = model.unwrap_python_model().explainer
    np.testing.assert_allclose(
        explainer.probability_of_margin(margin.astype(np.float64)),
        output["delay_probability"],
        atol=1e-6,
        err_msg="the probability is the calibration of the margin's score",
    )
    for v in values[:200]:
        for top in v["top"]:
            without = explainer.probability_of_margin(np.array([v["margin"] - top["contribution"]]))[0]
            assert top["probability_without"] == pytest.approx(without, abs=1e-5), top


def test_explain_false_and_absent_give_the_same_columns_and_values(loaded):
    _, model, records = loaded
    plain, off, on = (model.predict(records, params=p) for p in (None, {"explain": False}, {"explain": True}))
    assert list(plain.columns) == ["delay_probability", "delay"]
    pd.testing.assert_frame_equal(plain, off)
    pd.testing.assert_frame_equal(plain, on[["delay_probability", "delay"]])
    assert list(on.columns) == ["delay_probability", "delay", TOP_FACTORS_COLUMN, FACTOR_VALUES_COLUMN]
    assert on[TOP_FACTORS_COLUMN].str.count(r"\([+0-]\)").eq(3).all(), on[TOP_FACTORS_COLUMN].head()


@pytest.mark.parametrize("value", ["yes", "true", 1, None])
def test_the_python_model_refuses_a_non_boolean_explain_naming_it(loaded, value):
    _, model, records = loaded
    with pytest.raises(InvalidFlightsError, match="'explain'") as error:
        model.unwrap_python_model().predict(None, records.head(1), params={"explain": value})
    assert error.value.field == "explain"
