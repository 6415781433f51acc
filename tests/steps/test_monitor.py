"""monitor: adversarial validation against the Production model's training flights.

Real data: the core check on halves, seasons and a re-weighted airline (no registry, fast).
Generated data: the whole step against a registered Production model, exit codes from real processes.
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

from pyfunc.features import fit_feature_spec
from pyfunc.schema import REQUIRED_COLUMNS, SCHEDULED_TIME, clean_flights
from skyprophet import config
from skyprophet.config import MODEL_NAME, PROJECT_ROOT
from skyprophet.mlops import registry
from skyprophet.monitoring.drift import UNSEEN, DriftReport, categorical_psi, detect_drift, numeric_psi
from skyprophet.monitoring.flights import EXIT_BAD_INPUT, BadFlightsError, clean_new_flights, read_flights
from skyprophet.monitoring.reference import ReferenceDataError, load_reference, reference_input
from skyprophet.ops.processes import BIN, MLFLOW_RUN_STATE, process_env
from skyprophet.storage import sha256_of
from steps import etl, monitor, promote, register, train
from tests.factory import make_flights, write_flights

# Real-data checks with the step's own defaults (every flight, 5 folds).
MONITOR = config.DEFAULTS["monitor"]
# Where in the year a flight is: any of them alone splits January-June from July-December.
AIRLINE_FEATURES = {"OPERA_code", "Emp-I_code"}


# ---------------------------------------------------------------- real data: the core check


# What tells a summer apart from a January-March reference, without a month feature.
SEASON_FEATURES = {"high_season", "days_to_holiday", "days_since_holiday"}


@pytest.fixture(scope="module")
def real_flights(real_data: Path) -> pd.DataFrame:
    """The SCL flights etl would keep, cleaned as the model sees them."""
    raw = etl.read_raw(str(real_data))
    return clean_flights(raw[etl.reject_reasons(raw) == ""])


def check(reference: pd.DataFrame, new: pd.DataFrame) -> DriftReport:
    report = detect_drift(
        reference, new, fit_feature_spec(reference), MONITOR["cv_folds"], MONITOR["seed"], MONITOR["max_rows"]
    )
    print(  # the closing note of the issue quotes these
        f"\nAUC {report.roc_auc:.4f} folds {np.round(report.fold_roc_auc, 4).tolist()} "
        f"top importance {[(n, round(report.feature(n).importance, 3)) for n in report.top(3)]} "
        f"top PSI {[(n, round(report.feature(n).psi, 3)) for n in report.top(3, by='psi')]}"
    )
    return report


@pytest.mark.real_data
@pytest.mark.slow
def test_random_halves_are_not_drift(real_flights):
    half = np.random.default_rng(0).random(len(real_flights)) < 0.5
    report = check(real_flights[half], real_flights[~half])
    assert abs(report.roc_auc - 0.5) < 0.03, f"halves of one file look alike, got AUC {report.roc_auc:.4f}"
    assert report.roc_auc < MONITOR["auc_threshold"]
    assert max(f.psi for f in report.features) < 0.1, "no feature moves between random halves"


@pytest.mark.real_data
@pytest.mark.slow
def test_first_half_year_against_second_is_drift_led_by_the_new_seasons_schedule(real_flights):
    """No month feature: what tells the halves apart is the schedule itself (other flights, other times)."""
    first_half = real_flights[SCHEDULED_TIME].dt.month <= 6
    report = check(real_flights[first_half], real_flights[~first_half])
    assert report.roc_auc >= MONITOR["auc_threshold"], (
        f"January-June vs July-December must alert, AUC {report.roc_auc:.4f}"
    )
    assert report.top(1)[0] == "flight_key_code", f"the flights scheduled separate the halves, top {report.top(3)}"
    assert report.top(1, by="psi")[0] == "flight_key_code", f"flight keys move most, PSI top {report.top(3, by='psi')}"


@pytest.mark.real_data
@pytest.mark.slow
def test_tripled_airline_share_is_drift_naming_the_airline(real_flights):
    reference = real_flights[np.random.default_rng(1).random(len(real_flights)) < 0.5].reset_index(drop=True)
    sky = reference["OPERA"] == "SKY AIRLINE"
    n_sky = int(round(3 * sky.mean() * len(reference)))
    new = pd.concat(
        [
            reference[sky].sample(n_sky, replace=True, random_state=2),
            reference[~sky].sample(len(reference) - n_sky, replace=True, random_state=3),
        ]
    )
    assert (new["OPERA"] == "SKY AIRLINE").mean() == pytest.approx(3 * sky.mean(), abs=1e-3)
    report = check(reference, new)
    assert report.roc_auc >= MONITOR["auc_threshold"], f"a tripled airline share must alert, AUC {report.roc_auc:.4f}"
    named = AIRLINE_FEATURES & (set(report.top(3)) | set(report.top(3, by="psi")))
    assert named, f"the airline columns lead: importance {report.top(3)}, PSI {report.top(3, by='psi')}"
    for column in AIRLINE_FEATURES:
        top_bin = report.feature(column).bins[0]
        assert top_bin["bin"] in ("SKY AIRLINE", "SKU"), f"{column}: the moved category is Sky, got {top_bin}"
        assert top_bin["new"] == pytest.approx(3 * top_bin["reference"], rel=0.05), top_bin


# ---------------------------------------------------------------- generated data: the whole step


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
        etl_result = etl.run(data_uri=str(flights_csv), sha256=sha256_of(flights_csv))
        trained = train.run(processed_uri=etl_result.processed_uri, n_estimators=20, cv_folds=2)
        registered = register.run(
            model_uri=trained.model_uri, holdout_uri=f"{etl_result.processed_uri}/holdout.parquet"
        )
        assert registered.gate_passed, "the first version passes the gate"
        promote.move_production(mlflow.MlflowClient(), MODEL_NAME, registered.version, "test set-up")
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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        (",".join(REQUIRED_COLUMNS) + "\n", "has no flights"),
        (",".join(REQUIRED_COLUMNS) + "\n2017-01-01 10:00:00,226,ZZAA,AAA,N,Alpha Air,\n", "Field 'SIGLADES'"),
        (",".join(REQUIRED_COLUMNS) + "\n01/02/2017 10:00,226,ZZAA,AAA,N,Alpha Air,Aurora\n", "Field 'Fecha-I'"),
        (None, "not found"),
    ],
    ids=["empty-file", "header-only", "null-value", "bad-time", "missing-file"],
)
def test_unusable_new_flights_fail_with_a_clear_error(tmp_path, content, message):
    data = tmp_path / "new.csv"
    if content is not None:
        data.write_text(content)
    with pytest.raises(BadFlightsError, match=message):
        clean_new_flights(read_flights(str(data), tmp_path / "work"), str(data))


def test_no_data_uri_says_how_to_pass_one(tmp_path):
    with pytest.raises(BadFlightsError, match="pass -P data="):
        read_flights("", tmp_path)


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
        result = monitor.run(data=str(data), report_dir=str(tmp_path / "report"), cv_folds=2, max_rows=2000)
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


def test_psi_is_zero_for_equal_shares_and_names_the_moved_category():
    same = np.array([0, 0, 1, 2] * 50, dtype=np.float32)
    psi, _ = categorical_psi(same, same.copy(), ["A", "B", "C"], UNSEEN)
    assert psi == pytest.approx(0.0, abs=1e-12), "identical shares have PSI 0"
    moved = np.array([0, 1, 1, 3] * 50, dtype=np.float32)
    psi, bins = categorical_psi(same, moved, ["A", "B", "C"], UNSEEN)
    assert psi > 1.0 and bins[0]["bin"] == UNSEEN, bins
    numbers = np.arange(1000, dtype=np.float32)
    psi, bins = numeric_psi(numbers, numbers + 500)
    assert psi > 1.0 and bins[0]["bin"].startswith(">"), "values above the reference's top decile dominate"
    assert numeric_psi(numbers, numbers[::-1].copy())[0] == pytest.approx(0.0, abs=1e-12)


def test_exclude_features_must_name_model_features():
    flights = clean_flights(make_flights(days=5))
    with pytest.raises(ValueError, match="not model features"):
        detect_drift(flights, flights, fit_feature_spec(flights), exclude_features=("MES",))
    report = detect_drift(flights, flights, fit_feature_spec(flights), cv_folds=2, exclude_features=("hour", "weekday"))
    assert {"hour", "weekday"}.isdisjoint(f.name for f in report.features), report.top(20)


@pytest.mark.integration
def test_new_flights_come_from_gs(gcs_emulator, monkeypatch, tmp_path):
    for key, value in gcs_emulator.env.items():
        monkeypatch.setenv(key, value)
    bucket = gcs_emulator.client().create_bucket("monitor-schedules")
    schedule = make_flights(days=3, seed=5)[list(REQUIRED_COLUMNS)]
    bucket.blob("2018/01.csv").upload_from_string(schedule.to_csv(index=False), content_type="text/csv")
    raw = read_flights("gs://monitor-schedules/2018/01.csv", tmp_path)
    assert len(clean_new_flights(raw, "gs://…")) == len(schedule), "every scheduled flight read from GCS"
    with pytest.raises(BadFlightsError, match="cannot fetch new flights"):
        read_flights("gs://monitor-schedules/2018/02.csv", tmp_path)


def test_other_days_of_the_same_months_do_not_alert():
    """Odd against even days of the same months: the model has no date feature that tells them apart."""
    flights = clean_flights(make_flights(days=120, seed=4))
    days = flights[SCHEDULED_TIME].dt.day
    reference, new = flights[days % 2 == 0], flights[days % 2 == 1]
    report = detect_drift(reference, new, fit_feature_spec(reference), cv_folds=3)
    assert report.roc_auc < 0.6, report.top(3)
