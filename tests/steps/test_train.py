"""train: its recipe choices (what the booster is fitted to, whose holidays it sees, unknown keys) and its calibration.

Centred isotonic calibration is calibrated like isotonic but keeps the booster's ranking.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, roc_auc_score

from pyfunc.fields import SCHEDULED_TIME
from pyfunc.schema import OPERATED_TIME, TARGET, clean_flights
from skyprophet import config
from skyprophet.params import TrainParams
from skyprophet.science import fit, raw_flights, recipe
from skyprophet.science.fit import centred_isotonic
from skyprophet.science.metrics import expected_calibration_error
from steps import main, train
from tests.factory import make_flights

HYPER = recipe.Recipe(n_estimators=60)


def _flights_late_by(minutes: list[int]) -> pd.DataFrame:
    scheduled = pd.Timestamp("2017-05-01 10:00")
    return pd.DataFrame(
        {
            SCHEDULED_TIME: [scheduled.strftime("%Y-%m-%d %H:%M:%S")] * len(minutes),
            OPERATED_TIME: [(scheduled + pd.Timedelta(minutes=m)).strftime("%Y-%m-%d %H:%M:%S") for m in minutes],
            TARGET: [int(m > 15) for m in minutes],
        }
    )


def test_minutes_late_label_is_clipped_at_zero_and_twice_the_delay_line():
    flights = _flights_late_by([-12, 0, 14, 16, 30, 240])
    assert fit.fitting_label(flights, "minutes_late").tolist() == [0, 0, 14, 16, 30, 30]
    assert fit.fitting_label(flights, "delayed").tolist() == [0, 0, 0, 1, 1, 1]
    assert fit.MINUTES_LATE_CAP == 30


def test_minutes_late_label_refuses_flights_without_an_operated_time():
    flights = _flights_late_by([5, 20])
    flights.loc[1, OPERATED_TIME] = "not a time"
    with pytest.raises(ValueError, match="1 training flights have no parsable Fecha-O"):
        fit.fitting_label(flights, "minutes_late")


def test_an_unknown_objective_is_refused_before_any_run_starts(tracking_store):
    with pytest.raises(ValueError, match="objective must be one of minutes_late, delayed, got 'hinge'"):
        train.run(TrainParams(processed_uri="/nowhere", objective="hinge"))
    assert mlflow.search_runs(search_all_experiments=True).empty, "no run may be left behind"


@pytest.mark.parametrize(
    ("objective", "xgboost_objective"), [("minutes_late", "reg:squarederror"), ("delayed", "binary:logistic")]
)
def test_each_objective_fits_its_loss_and_gives_calibrated_probabilities(objective, xgboost_objective):
    flights = make_flights(days=120, seed=3)
    flights[TARGET] = raw_flights.delay_target(flights)
    fitted, cv_metrics = fit.fit_model(flights, HYPER.replace(objective=objective))
    config = json.loads(fitted.booster.save_config())
    assert config["learner"]["objective"]["name"] == xgboost_objective
    unseen = make_flights(days=30, seed=11, start="2017-03-01")
    probability = fitted.predict_clean(clean_flights(unseen))
    target = raw_flights.delay_target(unseen).to_numpy()
    assert np.all((probability >= 0) & (probability <= 1))
    assert roc_auc_score(target, probability) > 0.65, "the generator's pattern is learnable either way"
    assert abs(probability.mean() - target.mean()) < 0.05, "calibration maps either score to P(delay)"
    assert cv_metrics["roc_auc"] > 0.65


def test_evaluate_refits_a_version_with_its_own_recipe(tracking_store):
    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_params(recipe.Recipe(objective="delayed", country="AR", n_estimators=300).params())
    hyper = recipe.recipe_of(client.get_run(run.info.run_id))
    assert (hyper.objective, hyper.country) == ("delayed", "AR")
    assert hyper.n_estimators == 300 and isinstance(hyper.n_estimators, int)
    assert hyper.max_depth == recipe.Recipe().max_depth and isinstance(hyper.max_depth, int)


def test_a_version_trained_before_objective_and_country_existed_is_refitted_as_it_was(tracking_store):
    before = {k: v for k, v in recipe.Recipe().params().items() if k not in ("objective", "country")}
    with mlflow.start_run() as run:
        mlflow.log_params(before)
    hyper = recipe.recipe_of(mlflow.MlflowClient().get_run(run.info.run_id))
    assert (hyper.objective, hyper.country) == ("delayed", "none"), "then: logistic loss, no holidays"


def test_main_refuses_an_unknown_recipe_before_etl_runs(tracking_store):
    with pytest.raises(ValueError, match="objective must be one of"):
        main.run({}, {"objective": "hinge"}, {})
    with pytest.raises(ValueError, match="not an ISO code"):
        main.run({}, {"country": "Chile"}, {})
    assert mlflow.search_runs(search_all_experiments=True).empty, "no etl (or any) run may be left behind"


def test_an_unknown_country_is_refused_before_any_run_starts(tracking_store):
    with pytest.raises(ValueError, match="country 'Narnia' is not an ISO code"):
        train.run(TrainParams(processed_uri="/nowhere", country="Narnia"))
    assert mlflow.search_runs(search_all_experiments=True).empty, "no run may be left behind"


def test_a_misspelt_recipe_key_is_refused_naming_it_before_any_run(tracking_store):
    with pytest.raises(ValueError, match=r"not a recipe parameter: n_estimator \(the parameters: country, "):
        main.run({}, {"n_estimator": 5}, {})  # a TrainParams refuses it as it is built
    with pytest.raises(ValueError, match="not a recipe parameter: max_dept"):
        recipe.Recipe().replace(max_dept=3)
    assert mlflow.search_runs(search_all_experiments=True).empty, "nothing was logged"
    assert recipe.Recipe.of({"max_depth": 3}).max_depth == 3
    assert recipe.Recipe().max_depth == config.DEFAULTS["train"]["max_depth"], "defaults from config"


def _overconfident_scores(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores that rank well but are badly calibrated (true rate = score squared)."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.0, 1.0, rows)
    return scores, (rng.uniform(0.0, 1.0, rows) < scores**2).astype(int)


def test_centred_isotonic_calibrates_unseen_scores():
    scores, target = _overconfident_scores(20_000, seed=0)
    x, y = centred_isotonic(scores, target)
    new_scores, new_target = _overconfident_scores(20_000, seed=1)
    calibrated = np.interp(new_scores, x, y)
    assert expected_calibration_error(new_target, new_scores) > 0.1
    assert expected_calibration_error(new_target, calibrated) < 0.02


def test_centred_isotonic_is_strictly_increasing_and_keeps_the_ranking():
    scores, target = _overconfident_scores(20_000, seed=0)
    x, y = centred_isotonic(scores, target)
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)
    new_scores, new_target = _overconfident_scores(5_000, seed=1)
    inside = (new_scores > x[0]) & (new_scores < x[-1])
    calibrated = np.interp(new_scores[inside], x, y)
    assert np.array_equal(np.argsort(calibrated, kind="stable"), np.argsort(new_scores[inside], kind="stable"))
    # Plain isotonic ties whole ranges of scores, which costs precision-recall ranking.
    isotonic = IsotonicRegression(out_of_bounds="clip").fit(scores, target).predict(new_scores)
    assert len(np.unique(isotonic)) < len(np.unique(calibrated)) / 10
    assert average_precision_score(new_target, np.interp(new_scores, x, y)) > average_precision_score(
        new_target, isotonic
    )
