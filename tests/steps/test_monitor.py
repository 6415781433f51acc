"""monitor: adversarial validation against the Production model's training flights.

The whole step against a registered Production model on generated data, exit codes from real
processes. The library's own checks (real data, PSI, reading flights) are in ``tests/monitoring``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from pyfunc.fields import REQUIRED_COLUMNS, SCHEDULED_TIME
from skyprophet import config
from skyprophet.config import MODEL_NAME, PROJECT_ROOT
from skyprophet.mlops import registry
from skyprophet.monitoring.drift import UNSEEN
from skyprophet.monitoring.flights import EXIT_BAD_INPUT
from skyprophet.monitoring.reference import ReferenceDataError, load_reference, reference_input
from skyprophet.ops.processes import BIN, MLFLOW_RUN_STATE, process_env
from skyprophet.params import EtlParams, MonitorParams, RegisterParams, TrainParams
from skyprophet.storage import sha256_of
from steps import etl, monitor, register, train
from tests.factory import make_flights, write_flights

MONITOR = config.DEFAULTS["monitor"]
# What tells a summer apart from a January-March reference, without a month feature.
SEASON_FEATURES = {"high_season", "days_to_holiday", "days_since_holiday"}


def experiment_here(env: dict[str, str], folder: Path) -> None:
    """Create the test experiment with its artifacts in ``folder``, not in the checkout's mlruns/."""
    mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).create_experiment(
        env["MLFLOW_EXPERIMENT_NAME"], artifact_location=(folder / "artifacts").as_uri()
    )


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory):
    """A temporary store with ``flight-delay`` version 1 in Production, trained on generated flights."""
    root = tmp_path_factory.mktemp("monitor-store")
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "SKYPROPHET_DATASETS_DIR": str(root / "datasets"),
        "MLFLOW_EXPERIMENT_NAME": "skyprophet-test",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        for key in MLFLOW_RUN_STATE:
            patch.delenv(key, raising=False)
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        experiment_here(env, root)
        flights_csv = write_flights(root / "flights.csv")
        etl_result = etl.run(EtlParams(data_uri=str(flights_csv), sha256=sha256_of(flights_csv)))
        trained = train.run(TrainParams(processed_uri=etl_result.processed_uri, n_estimators=20, cv_folds=2))
        registered = register.run(
            RegisterParams(model_uri=trained.model_uri, holdout_uri=f"{etl_result.processed_uri}/holdout.parquet")
        )
        assert registered.gate_passed, "the first version passes the gate"
        registry.move_production(mlflow.MlflowClient(), MODEL_NAME, registered.version, "test set-up")
        # The version serves the refit on every flight (train + holdout): that is monitor's reference.
        processed = root / "datasets" / "processed"
        flights = pd.concat([pd.read_parquet(processed / f"{name}.parquet") for name in ("train", "holdout")])
        version = mlflow.MlflowClient().get_model_version(MODEL_NAME, registered.version)
        patch.delenv("MLFLOW_EXPERIMENT_ID")  # set_experiment exported it; subprocesses name the experiment
        yield {
            "env": env,
            "root": root,
            "train_days": set(flights[SCHEDULED_TIME].str[:10]),
            "train_run_id": version.run_id,
        }


def same_schedule(production) -> pd.DataFrame:
    """Fresh flights from the same generator on the reference's own days: only the required columns."""
    fresh = make_flights(seed=7)
    return fresh[fresh[SCHEDULED_TIME].str[:10].isin(production["train_days"])][list(REQUIRED_COLUMNS)]


def summer_with_a_new_airline() -> pd.DataFrame:
    """Months the model never saw, and a tenth of the flights by an airline it never saw (not flown yet)."""
    flights = make_flights(days=60, seed=7, start="2017-07-01")
    newcomer = np.random.default_rng(7).random(len(flights)) < 0.1
    flights.loc[newcomer, ["Emp-I", "OPERA"]] = ["ZZZ", "Zeta Air"]
    return flights.drop(columns=["Fecha-O"])  # a schedule: drift only (realized quality has its own tests)


def monitor_process(production, data: Path | str, report_dir: Path) -> subprocess.CompletedProcess:
    """``python -m steps.monitor`` as a scheduler calls it."""
    command = [sys.executable, "-m", "steps.monitor", "--data", str(data), "--report-dir", str(report_dir)]
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=process_env(production["env"]), capture_output=True, text=True, timeout=300
    )


def monitor_runs(production) -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient(production["env"]["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(production["env"]["MLFLOW_EXPERIMENT_NAME"])
    return client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`skyprophet.step` = 'monitor'",
        order_by=["attributes.start_time DESC"],
    )


def artifacts(production, run_id: str) -> set[str]:
    client = mlflow.MlflowClient(production["env"]["MLFLOW_TRACKING_URI"])
    return {a.path for a in client.list_artifacts(run_id, "report")}


@pytest.mark.slow
def test_same_schedule_exits_0_with_run_tags_and_report(production, tmp_path):
    data = tmp_path / "schedule.csv"
    same_schedule(production).to_csv(data, index=False)
    done = monitor_process(production, data, tmp_path / "report")
    assert done.returncode == 0, f"no drift exits 0: {done.stdout}\n{done.stderr[-3000:]}"
    assert done.stdout.startswith("no drift"), done.stdout

    run = monitor_runs(production)[0]
    assert run.info.status == "FINISHED", run.info
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["monitor.model_name"] == MODEL_NAME and tags["monitor.model_version"] == "1", tags
    assert tags["monitor.model_run_id"] == production["train_run_id"], "the reference is the version's train run"
    assert tags["monitor.drift"] == "none", tags
    assert abs(metrics["adversarial_roc_auc"] - 0.5) < 0.1, metrics["adversarial_roc_auc"]
    assert metrics["new_unseen_rows"] == 0 and metrics["new_rows"] == len(same_schedule(production))
    assert {"psi.hour", "importance.Emp-I_code"} <= metrics.keys(), sorted(metrics)
    contexts = {
        (i.dataset.name, {t.key: t.value for t in i.tags}["mlflow.data.context"]) for i in run.inputs.dataset_inputs
    }
    assert contexts == {("train", "reference"), ("monitored", "monitored")}, contexts

    assert artifacts(production, run.info.run_id) == {"report/report.md", "report/top_drift.png", "report/drift.json"}
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"{MODEL_NAME} version 1" in report and "no drift" in report and run.info.run_id in report, report
    assert (tmp_path / "report" / "top_drift.png").stat().st_size > 1000, "the plot was drawn"


@pytest.mark.slow
def test_new_season_and_airline_exit_3_naming_them(production, tmp_path):
    data = tmp_path / "summer.csv"
    summer_with_a_new_airline().to_csv(data, index=False)
    done = monitor_process(production, data, tmp_path / "report")
    assert done.returncode == monitor.EXIT_DRIFT, f"drift exits {monitor.EXIT_DRIFT}: {done.stderr[-3000:]}"
    assert done.stdout.startswith("DRIFT"), done.stdout

    run = monitor_runs(production)[0]
    assert run.info.status == "FINISHED", "drift is a verdict, not a failed run"
    assert run.data.tags["monitor.drift"] == "detected", run.data.tags
    assert run.data.metrics["adversarial_roc_auc"] >= MONITOR["auc_threshold"], run.data.metrics
    assert run.data.metrics["new_unseen_rows"] > 0, "flights of an unknown airline are counted, not refused"
    drift = json.loads((tmp_path / "report" / "drift.json").read_text())
    psi = {f["name"]: f for f in drift["features"]}
    assert psi["OPERA_code"]["bins"][0]["bin"] == UNSEEN, psi["OPERA_code"]["bins"][:2]
    assert SEASON_FEATURES & set(run.data.tags["monitor.top_psi_features"].split(",")), run.data.tags
    assert "**DRIFT**" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.slow
def test_mlflow_run_entry_point_takes_parameters_and_signals_drift(production, tmp_path):
    data = tmp_path / "summer.csv"
    summer_with_a_new_airline().to_csv(data, index=False)
    command = [str(BIN / "mlflow"), "run", ".", "-e", "monitor", "--env-manager", "local"]
    command += ["--experiment-name", production["env"]["MLFLOW_EXPERIMENT_NAME"]]
    command += ["-P", f"data={data}", "-P", f"report_dir={tmp_path / 'report'}", "-P", "auc_threshold=0.7"]
    done = subprocess.run(
        command, cwd=PROJECT_ROOT, env=process_env(production["env"]), capture_output=True, text=True, timeout=300
    )
    # `mlflow run` reports any non-zero exit of the step as its own 1 (docs/monitoring.md).
    assert done.returncode == 1, f"drift is non-zero through `mlflow run` too: {done.stderr[-3000:]}"
    assert "DRIFT: adversarial ROC AUC" in done.stdout, done.stdout[-2000:]
    run = monitor_runs(production)[0]
    assert run.data.tags["mlflow.project.entryPoint"] == "monitor", run.data.tags
    assert run.data.tags["monitor.drift"] == "detected", "the verdict is on the run whatever status MLflow gives it"
    assert run.data.params["auc_threshold"] == "0.7" and run.data.params["cv_folds"] == "5", run.data.params
    assert (tmp_path / "report" / "report.md").is_file()


@pytest.mark.slow
def test_schedule_without_a_required_column_exits_4(production, tmp_path):
    data = tmp_path / "no_airline.csv"
    same_schedule(production).drop(columns=["OPERA"]).to_csv(data, index=False)
    done = monitor_process(production, data, tmp_path / "report")
    assert done.returncode == EXIT_BAD_INPUT, f"bad input exits {EXIT_BAD_INPUT}: {done.stderr}"
    assert "Field 'OPERA': required column missing" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "report").exists(), "no report for input that could not be checked"


@pytest.mark.slow
def test_training_data_changed_since_training_is_refused(production, tmp_path):
    client = mlflow.MlflowClient(production["env"]["MLFLOW_TRACKING_URI"])
    source = json.loads(reference_input(client, production["train_run_id"]).dataset.source)["uri"]
    reference = Path(source.removeprefix("file://"))
    original = reference.read_bytes()
    try:
        pd.read_parquet(reference).iloc[:-1].to_parquet(reference, index=False)
        with pytest.raises(ReferenceDataError, match="changed since training"):
            load_reference(reference_input(client, production["train_run_id"]))
    finally:
        reference.write_bytes(original)


@pytest.mark.slow
def test_without_a_production_model_says_what_to_run(production):
    client = mlflow.MlflowClient(production["env"]["MLFLOW_TRACKING_URI"])
    with pytest.raises(registry.NoProductionVersionError, match=r"no Production version: run `mlflow run \. -e main`"):
        registry.require_production(client, "no-such-model")


def flown_april() -> pd.DataFrame:
    """April of the same generator, flown (``Fecha-O`` given): a month after the version's training flights."""
    return make_flights(days=30, seed=11, start="2017-04-01")


@pytest.mark.slow
def test_flown_flights_get_realized_quality_by_the_version_serving_then(production, tmp_path):
    flights = flown_april()
    data = tmp_path / "flown.csv"
    flights.to_csv(data, index=False)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in production["env"].items():
            patch.setenv(key, value)
        mlflow.set_tracking_uri(production["env"]["MLFLOW_TRACKING_URI"])
        result = monitor.run(
            MonitorParams(data=str(data), report_dir=str(tmp_path / "report"), cv_folds=2, max_rows=2000)
        )
        for key in MLFLOW_RUN_STATE:
            patch.delenv(key, raising=False)
    late = (pd.to_datetime(flights["Fecha-O"]) - pd.to_datetime(flights["Fecha-I"])).dt.total_seconds() / 60
    client = mlflow.MlflowClient(production["env"]["MLFLOW_TRACKING_URI"])
    run = client.get_run(result.run_id)
    metrics = run.data.metrics
    assert metrics["realized_flights"] == len(flights), "every flight known to the model is scored"
    assert metrics["realized_base_rate"] == pytest.approx(float((late > 15).mean())), "etl's label rule"
    assert metrics["realized_roc_auc"] > 0.65, "the generator's pattern holds in April"
    assert abs(metrics["realized_mean_predicted"] - metrics["realized_base_rate"]) < 0.05, metrics
    assert {"realized_pr_auc", "realized_ece"} <= metrics.keys()
    weeks = [m.step for m in client.get_metric_history(result.run_id, "realized_weekly_ece")]
    assert weeks == [201713, 201714, 201715, 201716, 201717], "ISO weeks of April 2017 as steps"
    assert run.data.tags["monitor.realized"] == "ok" and not result.degraded, run.data.tags
    assert run.data.tags["monitor.realized_versions"] == "1", "version 1 served all of April"
    assert artifacts(production, result.run_id) >= {"report/realized.png", "report/report.md"}
    tables = {a.path for a in client.list_artifacts(result.run_id, "realized")}
    assert tables == {"realized/by_airline.json", "realized/weekly.json"}, tables
    version = client.get_model_version(MODEL_NAME, "1")
    assert version.tags["realized.run_id"] == result.run_id and version.tags["realized.verdict"] == "ok"
    assert float(version.tags["realized.roc_auc"]) == pytest.approx(metrics["realized_roc_auc"], abs=1e-5)
    assert "### Realized quality" in version.description and "2017-04-01 to 2017-04-30" in version.description
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Realized quality (flown flights)" in report and "Alpha Air" in report, report[-1500:]


@pytest.mark.slow
def test_realized_quality_past_the_gate_exits_5(production, tmp_path):
    data = tmp_path / "flown.csv"
    flown_april().to_csv(data, index=False)
    command = [sys.executable, "-m", "steps.monitor", "--data", str(data), "--report-dir", str(tmp_path / "r")]
    command += ["--cv-folds", "2", "--max-rows", "2000", "--realized-ece-margin", "-1"]  # any ECE is too much
    done = subprocess.run(
        command, cwd=PROJECT_ROOT, env=process_env(production["env"]), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == monitor.EXIT_DEGRADED, f"{done.stdout}\n{done.stderr[-3000:]}"
    assert "REALIZED QUALITY DEGRADED" in done.stdout and "realized_ece_margin -1" in done.stdout, done.stdout
    assert monitor_runs(production)[0].data.tags["monitor.realized"] == "degraded"
