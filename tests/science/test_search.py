"""search: evaluate's month-ahead hyper-parameter search."""

from __future__ import annotations

from pyfunc.schema import TARGET
from skyprophet.science import raw_flights, recipe
from skyprophet.science.search import search
from tests.factory import make_flights


def test_search_never_fits_a_recipe_twice_for_a_parameter_its_objective_ignores(tracking_store):
    flights = make_flights(days=60, seed=2)
    flights[TARGET] = raw_flights.delay_target(flights)
    hyper = recipe.Recipe(n_estimators=20, cv_folds=2)
    results = search(flights, hyper, trials=12, seed=0)
    recipes = results.drop(columns="month_ahead_roc_auc").astype(str)
    assert not recipes.duplicated().any()
    minutes = results[results["objective"] == "minutes_late"]
    assert len(minutes) and minutes["scale_pos_weight"].isna().all(), "shown as unused, not as a value"
    assert results.loc[results["objective"] == "delayed", "scale_pos_weight"].notna().all()
