"""Behavioural tests of the served model (Made-With-ML style): invariance, direction, minimum function.

The model is trained once per module on generated flights and loaded back as the pyfunc, so
every check goes through what serving runs. Directional expectations are computed from the
training flights inside the test, never hard-coded.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from pyfunc.fields import REQUIRED_COLUMNS, SCHEDULED_TIME
from pyfunc.schema import OPERATED_COLUMNS, TARGET
from skyprophet.science import fit, raw_flights, recipe
from tests.factory import make_flights

HYPER = recipe.Recipe(n_estimators=80)


def with_target(flights: pd.DataFrame) -> pd.DataFrame:
    """Generated flights labelled the way etl labels them."""
    return flights.assign(**{TARGET: raw_flights.delay_target(flights)})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(pyfunc, training flights, unseen flights of the same generator)."""
    store = tmp_path_factory.mktemp("store")
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.set_experiment("behavioral")  # not an experiment id cached by an earlier test's store
    flights = with_target(make_flights(days=120, seed=3))
    fitted, _ = fit.fit_model(flights, HYPER)
    with mlflow.start_run():
        info = fit.log_pyfunc(fitted, flights[list(REQUIRED_COLUMNS)].head(5))
    unseen = with_target(make_flights(days=30, seed=11, start="2017-03-01"))
    return mlflow.pyfunc.load_model(info.model_uri), flights, unseen


def probabilities(model, flights: pd.DataFrame) -> np.ndarray:
    return model.predict(flights)["delay_probability"].to_numpy()


# --- invariance: how a value is written does not change the prediction ---------------------------

FLIGHT_NUMBER_FORMS = [
    pytest.param(lambda v: v, id="as-is"),
    pytest.param(lambda v: f"0{v}", id="leading-zero"),
    pytest.param(lambda v: f"  {v} ", id="surrounding-spaces"),
    pytest.param(lambda v: f"{v}.0", id="trailing-.0"),
    pytest.param(lambda v: f"00{v}.00", id="zeros-both-sides"),
]


@pytest.mark.parametrize("form", FLIGHT_NUMBER_FORMS)
def test_flight_number_formatting_does_not_change_prediction(trained, form):
    model, _, unseen = trained
    flights = unseen.head(200)
    reformatted = flights.assign(**{"Vlo-I": flights["Vlo-I"].map(form)})
    np.testing.assert_allclose(
        probabilities(model, reformatted), probabilities(model, flights), err_msg="Vlo-I is one flight however written"
    )


CATEGORY_FORMS = [
    pytest.param(str.lower, id="lower-case"),
    pytest.param(str.title, id="title-case"),
    pytest.param(lambda v: f"  {v}\t", id="surrounding-whitespace"),
    pytest.param(lambda v: v.replace(" ", "   "), id="inner-whitespace"),
]


@pytest.mark.parametrize("column", ["OPERA", "SIGLADES", "Des-I", "Emp-I", "TIPOVUELO"])
@pytest.mark.parametrize("form", CATEGORY_FORMS)
def test_category_case_and_spaces_do_not_change_prediction(trained, column, form):
    model, _, unseen = trained
    flights = unseen.head(200)
    reformatted = flights.assign(**{column: flights[column].map(form)})
    np.testing.assert_allclose(
        probabilities(model, reformatted),
        probabilities(model, flights),
        err_msg=f"{column}: case and spacing are normalised away",
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_column_order_does_not_change_prediction(trained, seed):
    model, _, unseen = trained
    flights = unseen.head(200)
    shuffled = flights[list(np.random.default_rng(seed).permutation(flights.columns))]
    np.testing.assert_allclose(probabilities(model, shuffled), probabilities(model, flights))


def test_operated_columns_do_not_change_prediction(trained):
    model, _, unseen = trained
    flights = unseen.head(200)
    present = [c for c in OPERATED_COLUMNS if c in flights.columns]
    scrambled = flights.assign(**{c: flights[c].sample(frac=1, random_state=0).to_numpy() for c in present})
    np.testing.assert_allclose(
        probabilities(model, scrambled), probabilities(model, flights), err_msg="what happened is never an input"
    )
    np.testing.assert_allclose(probabilities(model, flights.drop(columns=present)), probabilities(model, flights))


# --- directional: what the training data clearly shows, the model shows too ------------------------


def extremes(train_flights: pd.DataFrame, key: pd.Series) -> tuple[object, object, float]:
    """The groups of ``key`` with the highest and lowest training delay rate, and the gap."""
    rates = train_flights[TARGET].groupby(key).mean()
    return rates.idxmax(), rates.idxmin(), float(rates.max() - rates.min())


DIRECTIONS = [
    pytest.param(lambda f: f["OPERA"], id="airline"),
    pytest.param(lambda f: pd.to_datetime(f[SCHEDULED_TIME]).dt.hour >= 18, id="evening-vs-day"),
    pytest.param(lambda f: f["Emp-I"], id="airline-code"),
]


@pytest.mark.parametrize("grouping", DIRECTIONS)
def test_group_with_higher_training_delay_rate_gets_higher_predictions(trained, grouping):
    model, flights, unseen = trained
    worst, best, gap = extremes(flights, grouping(flights))
    if gap < 0.05:
        pytest.skip(f"training data shows no clear difference (gap {gap:.3f}); nothing to check")
    p = probabilities(model, unseen)
    group = grouping(unseen)
    high, low = p[(group == worst).to_numpy()].mean(), p[(group == best).to_numpy()].mean()
    assert high > low, f"{worst!r} (training rate higher by {gap:.3f}) predicted {high:.3f} <= {best!r} {low:.3f}"


def test_same_flight_moved_to_the_latest_airline_gets_higher_predictions(trained):
    model, flights, unseen = trained
    worst, best, gap = extremes(flights, flights["OPERA"])
    assert gap > 0.05, f"the generator makes airlines differ; training gap {gap:.3f}"
    codes = flights.drop_duplicates("OPERA").set_index("OPERA")["Emp-I"]
    sample = unseen.head(300)
    as_worst = sample.assign(OPERA=worst, **{"Emp-I": codes[worst]})
    as_best = sample.assign(OPERA=best, **{"Emp-I": codes[best]})
    high, low = probabilities(model, as_worst).mean(), probabilities(model, as_best).mean()
    assert high > low, f"the same flights under {worst!r}: mean {high:.3f}, under {best!r}: mean {low:.3f}"


# --- minimum functionality -------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 2, 17, 500])
def test_one_probability_in_unit_interval_per_flight(trained, rows):
    model, _, unseen = trained
    output = model.predict(unseen.head(rows))
    assert len(output) == rows, "one output per input flight"
    assert output["delay_probability"].between(0, 1).all()
    assert set(output["delay"].unique()) <= {0, 1}


def test_records_and_dataframe_give_the_same_answer(trained):
    model, _, unseen = trained
    records = pd.DataFrame(json.loads(unseen.head(50).astype(str).to_json(orient="records")))
    np.testing.assert_allclose(probabilities(model, records), probabilities(model, unseen.head(50)))


def test_training_is_deterministic_for_a_fixed_seed(trained):
    _, flights, unseen = trained
    small = flights.head(1500)
    hyper = HYPER.replace(n_estimators=30)
    first, _ = fit.fit_model(small, hyper)
    second, _ = fit.fit_model(small, hyper)
    from pyfunc.schema import clean_flights

    clean = clean_flights(unseen.head(300))
    np.testing.assert_array_equal(first.predict_clean(clean), second.predict_clean(clean))
    assert first.spec.threshold == second.spec.threshold
