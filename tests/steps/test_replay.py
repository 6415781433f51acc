"""The season replay on generated flights: two months through the real pipeline, corrections and monitor.

April-July of the generator; June and July are replayed. July is later than any month before it
(0.6 more log-odds of delay), so the delay-rate correction has something to follow.
"""

from __future__ import annotations

import mlflow
import pytest

from skyprophet.config import MODEL_NAME
from skyprophet.ops.processes import MLFLOW_RUN_STATE, process_env
from skyprophet.params import ReplayParams
from steps import replay
from tests.factory import write_flights


@pytest.mark.slow
def test_replay_of_two_generated_months(tracking_store, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", process_env()["PATH"])  # `mlflow run` finds the venv's python
    data = write_flights(tmp_path / "flights.csv", days=122, flights_per_day=40, seed=5, start="2017-04-01")
    result = replay.run(
        ReplayParams(
            data_uri=str(data),
            months=2,
            n_estimators=20,
            correction_every=10,
            min_flights=50,
            tolerance=0.02,
            drift_cv_folds=2,
            drift_max_rows=2000,
            report_dir=str(tmp_path / "replay"),
        )
    )
    for key in MLFLOW_RUN_STATE:
        monkeypatch.delenv(key, raising=False)
    table = result.table.set_index("month")
    assert list(table.index) == ["2017-06", "2017-07"], table
    assert table.loc["2017-07", "base_rate"] > table.loc["2017-06", "base_rate"] + 0.05, "July is later"
    assert (table["roc_auc"] > 0.6).all(), table["roc_auc"]
    assert table["gate_decision"].str.contains("promoted").all(), table["gate_decision"]
    assert table.loc["2017-07", "corrections"] != "0", "July's higher delay rate is corrected"
    assert "drift" in table.loc["2017-07", "drift"]

    client = mlflow.MlflowClient()
    versions = client.search_model_versions("name = 'flight-delay-replay'")
    corrections = [v for v in versions if "skyprophet.intercept_shift" in v.tags]
    assert corrections and all(float(v.tags["skyprophet.intercept_shift"]) != 0 for v in corrections)
    july = [v for v in corrections if v.tags["skyprophet.calibrated_through"] >= "2017-07"]
    assert july and all(float(v.tags["skyprophet.intercept_shift"]) > 0 for v in july), "July's shifts go up"
    for version in july:  # through staging and promote's acceptance checks like any version
        assert version.tags["gate.decision"] == "promoted" and "acceptance.load" in version.tags, version.tags
    assert client.get_registered_model("flight-delay-replay"), "the replay's own model"
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_registered_model(MODEL_NAME)  # never flight-delay

    run = client.search_runs(
        [client.get_experiment_by_name(tracking_store["MLFLOW_EXPERIMENT_NAME"]).experiment_id],
        filter_string="tags.`skyprophet.step` = 'replay'",
    )[0]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "realized_ece")]
    assert steps == [201706, 201707], steps
    assert {"pooled_realized_ece", "pooled_realized_roc_auc", "replay_minutes"} <= run.data.metrics.keys()
    report = (tmp_path / "replay" / "replay.md").read_text()
    assert "| 2017-07 |" in report and "Pooled: ROC AUC" in report, report
