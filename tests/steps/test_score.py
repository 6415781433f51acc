"""score: whole schedules through the registered model, on pandas and on a real local[2] Spark.

Every test scores generated flights (tests/factory.py) with unseen categories and bad rows mixed
in; the model is the session's registered ``flight-delay`` (trained by ``mlflow run . -e main``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingress.run import group_members
from pyfunc.fields import REQUIRED_COLUMNS
from pyfunc.schema import OPTIONAL_COLUMNS, UNKNOWN_FIELDS
from skyprophet.batch import pandas_engine, sinks, sources
from skyprophet.batch.contract import MODEL_PARAMS, ScoreInputError, TooManyRejectsError
from skyprophet.batch.sinks import rejects_uri
from skyprophet.config import MODEL_NAME, PROJECT_ROOT
from skyprophet.ops.processes import process_env
from skyprophet.params import ScoreParams
from steps import score
from tests.factory import make_flights

FLIGHT_COLUMNS = [*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS]
# Row -> (column, value) of flights the model never saw, and of rows that are not flights.
UNSEEN = {3: ("Emp-I", "ZZZ"), 40: ("Des-I", "ZZXX"), 41: ("Emp-I", " qqq "), 300: ("TIPOVUELO", "X")}
BAD = {
    7: ("Fecha-I", "not a time", "unparsable_Fecha-I"),
    8: ("Fecha-I", "2017-02-30 10:00:00", "unparsable_Fecha-I"),
    150: ("Vlo-I", "", "missing_Vlo-I"),
    151: ("Fecha-I", "1999-06-01 10:00:00", "out_of_range_Fecha-I"),
    640: ("Des-I", "   ", "missing_Des-I"),
}
EXPECTED_REJECTS = {"unparsable_Fecha-I": 2, "missing_Vlo-I": 1, "out_of_range_Fecha-I": 1, "missing_Des-I": 1}
ROWS = 800


def schedule_frame() -> pd.DataFrame:
    """800 generated flights (all raw columns, as text) with the unseen values and bad rows above."""
    frame = make_flights(days=20, flights_per_day=40, seed=7, start="2017-03-01")
    for row, (column, value) in UNSEEN.items():
        frame.loc[row, column] = value
    for row, (column, value, _) in BAD.items():
        frame.loc[row, column] = value
    return frame


@pytest.fixture
def schedule(tmp_path: Path) -> Path:
    path = tmp_path / "schedule.csv"
    schedule_frame().to_csv(path, index=False, lineterminator="\n")
    return path


def score_command(data: str, output: str, **options: object) -> list[str]:
    command = [sys.executable, "-m", "steps.score", "--data", data, "--output", output]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    return command


def run_score(env: dict[str, str], data: str, output: str, **options: object) -> subprocess.CompletedProcess:
    """``python -m steps.score`` as a real process; fails the test with its log when it fails."""
    done = subprocess.run(
        score_command(data, output, **options),
        cwd=PROJECT_ROOT,
        env=process_env(env),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"score failed ({done.returncode}):\n{done.stderr[-5000:]}"
    return done


def sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(FLIGHT_COLUMNS, kind="stable").reset_index(drop=True)


def assert_scored_schedule(output: Path, model_uri: str) -> pd.DataFrame:
    """The checks every engine must pass on ``schedule_frame``'s scores."""
    scored = pd.read_parquet(output)
    rejects = pd.read_parquet(rejects_uri(str(output)))
    expected = schedule_frame()
    valid = ~expected.index.isin(list(BAD))
    assert list(scored.columns) == [*FLIGHT_COLUMNS, "delay_probability", "delay", UNKNOWN_FIELDS]
    assert len(scored) == ROWS - len(BAD) and len(rejects) == len(BAD)
    assert rejects["reject_reason"].value_counts().to_dict() == EXPECTED_REJECTS
    assert set(rejects["Fecha-I"]) >= {"not a time", "1999-06-01 10:00:00"}
    assert rejects["reject_detail"].str.len().gt(0).all()
    # Flags exactly on the flights with a value the model never saw, naming the field.
    by_time = sort_rows(scored)
    want = sort_rows(expected.loc[valid, FLIGHT_COLUMNS].assign(_unseen=expected.index[valid].isin(list(UNSEEN))))
    pd.testing.assert_frame_equal(by_time[FLIGHT_COLUMNS], want[FLIGHT_COLUMNS])
    assert (by_time[UNKNOWN_FIELDS] != "").tolist() == want["_unseen"].tolist()
    for row, (column, value) in UNSEEN.items():
        fields = scored.loc[scored[column] == value, UNKNOWN_FIELDS].tolist()
        assert fields == [column], f"row {row}: {fields}"
    # The model's own predict on the valid flights gives the same probabilities.
    model = mlflow.pyfunc.load_model(model_uri)
    own = model.predict(expected.loc[valid, FLIGHT_COLUMNS].reset_index(drop=True), params=MODEL_PARAMS)
    own = sort_rows(pd.concat([expected.loc[valid, FLIGHT_COLUMNS].reset_index(drop=True), own], axis=1))
    np.testing.assert_allclose(by_time["delay_probability"], own["delay_probability"], rtol=0, atol=1e-12)
    assert by_time["delay"].tolist() == own["delay"].tolist()
    return scored


# ------------------------------------------------------------------ pandas engine


@pytest.mark.slow
def test_pandas_engine_scores_flags_and_rejects(model_env, registered_model, schedule, tmp_path):
    output = tmp_path / "out" / "scores.parquet"
    output.parent.mkdir()
    done = run_score(registered_model["env"], str(schedule), str(output), chunk_rows=128)
    assert_scored_schedule(output, registered_model["model_uri"])
    assert sorted(p.name for p in output.parent.iterdir()) == [
        "scores.parquet",
        "scores.rejects.parquet",
        "scores.report.html",
    ]
    assert "rejected" in done.stderr


@pytest.mark.slow
def test_run_logs_lineage_counts_and_summary(model_env, registered_model, schedule, tmp_path):
    result = score.run(ScoreParams(data=schedule.as_uri(), output=str(tmp_path / "scores.parquet"), chunk_rows=300))
    assert (result.rows, result.scored, result.flagged) == (ROWS, ROWS - len(BAD), len(UNSEEN))
    assert result.rejected == EXPECTED_REJECTS
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["skyprophet.step"] == "score"
    assert run.data.tags["skyprophet.model_name"] == MODEL_NAME
    assert run.data.tags["skyprophet.model_version"] == registered_model["version"]
    assert run.data.tags["skyprophet.model_uri"] == f"models:/{MODEL_NAME}/{registered_model['version']}"
    metrics = run.data.metrics
    assert metrics["rows"] == ROWS and metrics["scored_rows"] == ROWS - len(BAD)
    assert metrics["flagged_rows"] == len(UNSEEN) and metrics["rejected_rows"] == len(BAD)
    assert metrics["rejected_unparsable_Fecha-I"] == 2
    (dataset_input,) = run.inputs.dataset_inputs
    # MLflow keeps one dataset per (name, digest) in an experiment: the same bytes scored from
    # another folder earlier in the session show that first source; the run's own is its param.
    assert json.loads(dataset_input.dataset.source)["uri"].endswith("/schedule.csv")
    assert run.data.params["data"] == schedule.as_uri()
    assert dataset_input.dataset.digest == hashlib.sha256(schedule.read_bytes()).hexdigest()[:32]
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "scoring"
    summary = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="summary"))
    by_airline = pd.read_csv(summary / "by_airline.csv")
    by_day = pd.read_csv(summary / "by_day.csv")
    assert by_airline["flights"].sum() == by_day["flights"].sum() == ROWS - len(BAD)
    assert {"AAA", "BBB", "CCC", "ZZZ", "QQQ"} == set(by_airline["airline"])  # " qqq " as the model sees it
    assert len(by_day) == 20 and by_day["mean_delay_probability"].between(0, 1).all()
    scored = pd.read_parquet(result.output)
    mean_aaa = scored.loc[scored["Emp-I"] == "AAA", "delay_probability"].mean()
    assert by_airline.set_index("airline").loc["AAA", "mean_delay_probability"] == pytest.approx(mean_aaa, abs=1e-6)
    assert json.loads((summary / "counts.json").read_text())["rejected_by_reason"] == EXPECTED_REJECTS


@pytest.mark.slow
def test_parquet_folder_in_matches_csv_in(model_env, schedule, tmp_path):
    folder = tmp_path / "schedules"
    folder.mkdir()
    frame = pd.read_csv(schedule, dtype=str, keep_default_na=False)
    frame.iloc[:500].to_parquet(folder / "a.parquet", index=False)
    frame.iloc[500:].to_csv(folder / "b.csv", index=False)
    from_csv = score.run(ScoreParams(data=str(schedule), output=str(tmp_path / "csv.parquet"), chunk_rows=200))
    from_folder = score.run(ScoreParams(data=str(folder), output=str(tmp_path / "folder.parquet"), chunk_rows=200))
    pd.testing.assert_frame_equal(pd.read_parquet(from_csv.output), pd.read_parquet(from_folder.output))
    assert from_folder.rejected == EXPECTED_REJECTS


@pytest.mark.slow
def test_streamed_batches_give_the_output_of_one_batch(model_env, schedule, tmp_path):
    """97 flights a batch (9 batches through the worker processes) = all 800 in one call, in input order."""
    data = tmp_path / "schedule.parquet"  # Parquet: its row count is known, so one batch is scored in process
    pd.read_csv(schedule, dtype=str, keep_default_na=False).to_parquet(data, index=False, row_group_size=300)
    whole = score.run(ScoreParams(data=str(data), output=str(tmp_path / "whole.parquet"), chunk_rows=ROWS))
    streamed = score.run(ScoreParams(data=str(data), output=str(tmp_path / "streamed.parquet"), chunk_rows=97))
    pd.testing.assert_frame_equal(pd.read_parquet(streamed.output), pd.read_parquet(whole.output))
    pd.testing.assert_frame_equal(pd.read_parquet(streamed.rejects), pd.read_parquet(whole.rejects))
    assert (streamed.rows, streamed.scored, streamed.flagged) == (whole.rows, whole.scored, whole.flagged)
    assert streamed.rejected == whole.rejected == EXPECTED_REJECTS
    expected = schedule_frame().drop(index=list(BAD)).reset_index(drop=True)
    assert pd.read_parquet(streamed.output)["Fecha-I"].tolist() == expected["Fecha-I"].tolist()
    for name in ("by_airline", "by_day"):
        tables = [
            pd.read_csv(mlflow.artifacts.download_artifacts(run_id=r.run_id, artifact_path=f"summary/{name}.csv"))
            for r in (whole, streamed)
        ]
        pd.testing.assert_frame_equal(*tables)
    client = mlflow.MlflowClient()
    metrics = client.get_run(streamed.run_id).data.metrics
    assert {f"seconds_{stage}" for stage in pandas_engine.STAGES} <= set(metrics)
    assert metrics["score_workers"] == pandas_engine.score_workers(ROWS, 97)  # one per core (2 here)
    assert client.get_run(whole.run_id).data.metrics["score_workers"] == 0  # one batch: scored in process


@pytest.mark.slow
def test_too_many_rejects_fails_keeping_rejects_and_no_output(model_env, schedule, tmp_path):
    output = tmp_path / "scores.parquet"
    with pytest.raises(TooManyRejectsError, match=r"5 of 800 rows .*limit 0\.1%"):
        score.run(ScoreParams(data=str(schedule), output=str(output), max_reject_fraction=0.001))
    assert not output.exists()
    assert len(pd.read_parquet(tmp_path / "scores.rejects.parquet")) == len(BAD)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schedule.csv", "scores.rejects.parquet"]
    run = mlflow.search_runs(order_by=["start_time DESC"], max_results=1).iloc[0]
    assert run["status"] == "FAILED" and run["metrics.rejected_rows"] == len(BAD)


@pytest.mark.slow
def test_an_output_in_the_schedule_folder_is_not_read_back_as_flights(model_env, schedule, tmp_path):
    folder = tmp_path / "season"
    folder.mkdir()
    (folder / "schedule.csv").write_bytes(schedule.read_bytes())
    output = folder / "scores.parquet"
    for overwrite in (False, True, True):
        result = score.run(ScoreParams(data=str(folder), output=str(output), overwrite=overwrite))
        assert (result.rows, result.rejected_rows) == (ROWS, len(BAD)), "the earlier output set read as flights"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["schedule.csv", "scores.parquet", "scores.rejects.parquet", "scores.report.html"], names


@pytest.mark.slow
def test_too_many_rejects_over_an_earlier_output_leaves_only_this_runs_rejects(model_env, schedule, tmp_path):
    output = tmp_path / "scores.parquet"
    score.run(ScoreParams(data=str(schedule), output=str(output)))
    assert output.exists() and (tmp_path / "scores.report.html").exists()
    with pytest.raises(TooManyRejectsError):
        score.run(ScoreParams(data=str(schedule), output=str(output), overwrite=True, max_reject_fraction=0.001))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["schedule.csv", "scores.rejects.parquet"], "an earlier run's scores beside this run's rejects"


@pytest.mark.slow
def test_a_run_that_finds_its_output_taken_at_the_end_takes_back_what_it_published(
    model_env, schedule, tmp_path, monkeypatch
):
    """Two runs on one output: the check at the start passes for both; the second to publish must not mix the files."""
    output = tmp_path / "scores.parquet"
    other = tmp_path / "scores.report.html"
    write_report = score.report.write_and_log

    def another_run_publishes_meanwhile(*args, **kwargs):
        page = write_report(*args, **kwargs)
        other.write_text("the other run's report")  # the last file this run publishes: the first two go first
        return page

    monkeypatch.setattr(score.report, "write_and_log", another_run_publishes_meanwhile)
    with pytest.raises(ScoreInputError, match=r"scores.report.html appeared while this run was working"):
        score.run(ScoreParams(data=str(schedule), output=str(output)))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["schedule.csv", "scores.report.html"], left
    assert other.read_text() == "the other run's report"


@pytest.mark.slow
def test_an_output_on_another_disk_than_the_temporary_folder_is_published_whole(
    model_env, schedule, tmp_path, monkeypatch
):
    """The report is made in the run's temporary folder: a rename from there fails across file systems (EXDEV)."""
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system here for the run's temporary folder")
    scratch = Path(tempfile.mkdtemp(dir=other))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    try:
        output = tmp_path / "scores.parquet"
        score.run(ScoreParams(data=str(schedule), output=str(output)))
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == ["schedule.csv", "scores.parquet", "scores.rejects.parquet", "scores.report.html"], names
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.slow
def test_a_failure_while_publishing_takes_back_what_was_published(model_env, schedule, tmp_path, monkeypatch):
    publish = sinks.publish

    def the_upload_of_the_report_fails(local, uri, overwrite=True):
        if uri.endswith(".report.html"):
            raise OSError("the network went away")
        publish(local, uri, overwrite)

    monkeypatch.setattr(sinks, "publish", the_upload_of_the_report_fails)
    with pytest.raises(OSError, match="the network went away"):
        score.run(ScoreParams(data=str(schedule), output=str(tmp_path / "scores.parquet")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schedule.csv"], "a half output set was left"


@pytest.mark.slow
def test_columns_the_step_does_not_read_may_share_a_name(model_env, schedule, tmp_path):
    """A spreadsheet export ends its header with empty names: only the flight columns must be unique."""
    data = tmp_path / "export.csv"
    data.write_text("".join(line.rstrip("\n") + ",,\n" for line in schedule.read_text().splitlines(keepends=True)))
    result = score.run(ScoreParams(data=str(data), output=str(tmp_path / "scores.parquet")))
    assert (result.rows, result.rejected_rows) == (ROWS, len(BAD))


@pytest.mark.slow
def test_an_output_where_nothing_can_be_written_is_refused_before_any_work(model_env, schedule):
    with pytest.raises(ScoreInputError, match=r"output /proc/scores.parquet: cannot write in /proc"):
        score.run(ScoreParams(data=str(schedule), output="/proc/scores.parquet"))


@pytest.mark.slow
def test_sigterm_stops_a_run_like_ctrl_c_leaving_nothing(registered_model, tmp_path):
    """Python's default SIGTERM ended the step where it stood: a partial file, blocked workers, a RUNNING run."""
    data = tmp_path / "season.csv"
    pd.concat([schedule_frame()] * 150, ignore_index=True).to_csv(data, index=False)  # 120,000 rows
    out = tmp_path / "out"
    out.mkdir()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = process_env({**registered_model["env"], "TMPDIR": str(scratch)})
    command = score_command(str(data), str(out / "scores.parquet"), chunk_rows=500, max_reject_fraction=1)
    log = tmp_path / "score.log"
    with open(log, "w") as handle:
        step = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "worker processes" not in log.read_text() and step.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # batches in flight in the workers
        assert step.poll() is None, f"the run ended before the signal:\n{log.read_text()[-3000:]}"
        step.send_signal(signal.SIGTERM)
        assert step.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()[-3000:]
        assert "score stopped by SIGTERM: nothing of this run was published" in log.read_text()
        deadline = time.monotonic() + 10
        while group_members(step.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_members(step.pid), "the step's worker processes outlived it"
        assert list(out.iterdir()) == [] and list(scratch.iterdir()) == [], (
            list(out.iterdir()),
            list(scratch.iterdir()),
        )
        client = mlflow.MlflowClient(registered_model["env"]["MLFLOW_TRACKING_URI"])
        run_id = re.search(r"score: run ([0-9a-f]{32})", log.read_text()).group(1)
        assert client.get_run(run_id).info.status in ("FAILED", "KILLED")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(step.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_a_folder_whose_files_give_a_column_other_types_is_refused_naming_it(model_env, schedule, tmp_path, engine):
    """The output is one Parquet file of the values as given: a later file's times were written as text, or a crash.

    Only widths and units of one type family are cast; "0226" read back as 226, or a date as its midnight, would not
    be the values given.
    """
    frame = pd.read_csv(schedule, dtype=str, keep_default_na=False)
    half = len(frame) // 2
    numbers = frame.head(half).assign(**{"Vlo-I": frame["Vlo-I"].head(half).str.strip().str.split(".").str[0]})
    numbers = numbers[numbers["Vlo-I"].str.fullmatch(r"\d+")].astype({"Vlo-I": "int64"})
    times = frame.tail(half).assign(**{"Fecha-I": pd.to_datetime(frame["Fecha-I"].tail(half), errors="coerce")})
    cases = {
        "letters after numbers": ([("a.parquet", numbers), ("b.csv", frame.tail(half).assign(**{"Vlo-I": "LA1287"}))],
                                  r"column Vlo-I: the schedule's files give it as int64 and as (large_)?string"),
        "times after text": ([("a.csv", frame.head(half)), ("b.parquet", times.dropna(subset=["Fecha-I"]))],
                             r"column Fecha-I: the schedule's files give it as (large_)?string and as timestamp"),
        "numbers after text": ([("a.csv", frame.head(half)), ("b.parquet", numbers)],
                               r"column Vlo-I: the schedule's files give it as (large_)?string and as int64"),
    }  # fmt: skip
    for name, (files, refusal) in cases.items():
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        for file_name, part in files:
            if file_name.endswith(".csv"):
                part.to_csv(folder / file_name, index=False)
            else:
                part.to_parquet(folder / file_name, index=False)
        output = tmp_path / f"{folder.name}.parquet"
        params = ScoreParams(data=str(folder), output=str(output), engine=engine, spark_master="local[2]")
        with pytest.raises(ScoreInputError, match=refusal):
            score.run(params)
        assert not output.exists() and not Path(rejects_uri(str(output))).exists(), name


# ------------------------------------------------------------------ bad input


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing_column", r"missing.csv: required column\(s\) \['OPERA'\] missing"),
        ("empty_file", r"empty.csv: the file is empty"),
        ("header_only", r"header.csv: no flights"),
        ("no_such_file", r"nowhere.csv: no such file or folder"),
        ("empty_folder", r"folder without .csv or .parquet files"),
        ("not_parquet", r"broken.parquet: cannot read as Parquet"),
        ("output_exists", r"output .*taken.parquet exists; remove it or pass overwrite=true"),
        ("duplicate_column", r"dup.csv: column\(s\) \['Des-I'\] appear more than once"),
        ("duplicate_column_parquet", r"dup.parquet: column\(s\) \['Des-I'\] appear more than once"),
        ("a_link_to_a_file_read_already", r"folder/z.csv is the same file as .*folder/a.csv \(a link\)"),
        ("a_folder_link_that_loops_back", r"is the same file as .*folder/a.csv \(a link\)"),
        ("a_hard_link_to_a_file_read_already", r"folder/z.csv is the same file as .*folder/a.csv \(a link\)"),
        ("max_reject_fraction_nan", r"max_reject_fraction nan: expected 0 to 1"),
    ],
)
def test_bad_input_names_the_file_and_leaves_no_output(model_env, schedule, tmp_path, case, pattern):
    output = tmp_path / "out" / "scores.parquet"
    output.parent.mkdir()
    frame = pd.read_csv(schedule, dtype=str, keep_default_na=False)
    header = ",".join(frame.columns) + "\n"
    if case == "missing_column":
        data = tmp_path / "missing.csv"
        frame.drop(columns="OPERA").to_csv(data, index=False)
    elif case == "empty_file":
        data = _write(tmp_path / "empty.csv", "")
    elif case == "header_only":
        data = _write(tmp_path / "header.csv", header)
    elif case == "no_such_file":
        data = tmp_path / "nowhere.csv"
    elif case == "empty_folder":
        data = tmp_path / "folder"
        data.mkdir()
    elif case == "not_parquet":
        data = _write(tmp_path / "broken.parquet", "PAR1 not really")
    elif case == "duplicate_column":  # pandas would read the first Des-I, silently
        data = tmp_path / "dup.csv"
        doubled = frame.copy()
        doubled.insert(len(doubled.columns), "Des-I", "XXXX", allow_duplicates=True)
        doubled.to_csv(data, index=False)
    elif case == "duplicate_column_parquet":  # Arrow keeps both; selecting the column raised a KeyError
        table = pa.Table.from_pandas(frame, preserve_index=False)
        data = tmp_path / "dup.parquet"
        pq.write_table(table.append_column("Des-I", table.column("Des-I")), data)
    elif case.startswith("a_") and "link" in case:
        data = tmp_path / "folder"
        data.mkdir()
        (data / "a.csv").write_bytes(schedule.read_bytes())
        if case == "a_link_to_a_file_read_already":
            (data / "z.csv").symlink_to(data / "a.csv")
        elif case == "a_hard_link_to_a_file_read_already":
            os.link(data / "a.csv", data / "z.csv")
        else:
            (data / "loop").symlink_to(".")
    elif case == "max_reject_fraction_nan":
        data = schedule
    else:
        data = schedule
        output = output.with_name("taken.parquet")
        output.write_bytes(b"earlier scores")
    fraction = float("nan") if case == "max_reject_fraction_nan" else ScoreParams().max_reject_fraction
    with pytest.raises(ScoreInputError, match=pattern):
        score.run(ScoreParams(data=str(data), output=str(output), max_reject_fraction=fraction))
    left = sorted(p.name for p in output.parent.iterdir())
    assert left == (["taken.parquet"] if case == "output_exists" else []), left
    if case == "output_exists":
        assert output.read_bytes() == b"earlier scores"
        result = score.run(ScoreParams(data=str(data), output=str(output), overwrite=True))
        assert len(pd.read_parquet(result.output)) == ROWS - len(BAD)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["header_only", "missing_column", "bad_row_past_the_first_megabyte"])
def test_spark_refuses_a_bad_file_with_the_pandas_message(model_env, schedule, tmp_path, case):
    frame = pd.read_csv(schedule, dtype=str, keep_default_na=False)
    data = tmp_path / f"{case}.csv"
    if case == "bad_row_past_the_first_megabyte":  # found by the reader in a task, not by the file check
        pd.concat([frame] * 15).to_csv(data, index=False)
        assert data.stat().st_size > sources.CSV_HEADER_BYTES
        with open(data, "a", encoding="utf-8") as handle:
            handle.write("2017-12-31 23:00:00,1,too,many,fields\n")
    else:
        (frame.head(0) if case == "header_only" else frame.drop(columns="OPERA")).to_csv(data, index=False)
    messages = []
    for engine in ("pandas", "spark"):
        output = tmp_path / f"{engine}.parquet"
        with pytest.raises(ScoreInputError) as refused:
            score.run(ScoreParams(data=str(data), output=str(output), engine=engine, spark_master="local[2]"))
        messages.append(str(refused.value))
        assert not output.exists()
    assert messages[0] == messages[1] and f"{data}: " in messages[0], messages
    assert not list(tmp_path.glob("*.rejects.parquet"))


@pytest.mark.slow
def test_cli_reports_bad_input_with_exit_code_2(registered_model, tmp_path):
    data = _write(tmp_path / "empty.csv", "")
    done = subprocess.run(
        score_command(str(data), str(tmp_path / "scores.parquet")),
        cwd=PROJECT_ROOT,
        env=process_env(registered_model["env"]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"{data}: the file is empty" in done.stderr
    assert not (tmp_path / "scores.parquet").exists()


# ------------------------------------------------------------------ spark engine


@pytest.mark.slow
def test_spark_local2_gives_the_pandas_output(model_env, registered_model, schedule, tmp_path):
    env = registered_model["env"]
    pandas_out, spark_out = tmp_path / "pandas.parquet", tmp_path / "spark.parquet"
    run_score(env, str(schedule), str(pandas_out), chunk_rows=256)
    scratch = tmp_path / "tmp"  # the step's TMPDIR: what Python (and MLflow) leave there is left behind
    scratch.mkdir()
    spark_env = {**env, "TMPDIR": str(scratch)}
    run_score(spark_env, str(schedule), str(spark_out), engine="spark", spark_master="local[2]", chunk_rows=256)
    assert list(scratch.iterdir()) == [], "MLflow's model archive and its copies per worker were left in /tmp"
    scratch.rmdir()
    assert_scored_schedule(spark_out, registered_model["model_uri"])
    # The same rows in the same order, with the same Arrow types: both engines read with one reader.
    for kind in ("", ".rejects"):
        spark_file, pandas_file = tmp_path / f"spark{kind}.parquet", tmp_path / f"pandas{kind}.parquet"
        assert pq.read_schema(spark_file).remove_metadata() == pq.read_schema(pandas_file).remove_metadata()
        pd.testing.assert_frame_equal(pd.read_parquet(spark_file), pd.read_parquet(pandas_file))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pandas.parquet",
        "pandas.rejects.parquet",
        "pandas.report.html",
        "schedule.csv",
        "spark.parquet",
        "spark.rejects.parquet",
        "spark.report.html",
    ]
    # A Parquet schedule of 8 row groups is cut into several units (tasks); the rows come back in order.
    parquet = tmp_path / "in" / "schedule.parquet"
    parquet.parent.mkdir()
    pq.write_table(pa.Table.from_pandas(pd.read_csv(schedule, dtype=str, keep_default_na=False)), parquet, 100)
    done = run_score(env, str(parquet), str(tmp_path / "in" / "spark.parquet"), engine="spark", spark_master="local[2]")
    assert int(re.search(r"spark: (\d+) units", done.stderr).group(1)) >= 2, done.stderr[-2000:]
    written = pd.read_parquet(tmp_path / "in" / "spark.parquet")
    pd.testing.assert_frame_equal(written, pd.read_parquet(pandas_out), check_dtype=False)


# ------------------------------------------------------------------ gs:// in and out


@pytest.mark.slow
@pytest.mark.integration
def test_gs_publish_without_overwrite_asks_gcs_to_create_only(gcs_emulator, tmp_path, monkeypatch):
    """The create-only upload (if_generation_match=0) that keeps two runs on one gs:// output from mixing files.

    The emulator ignores preconditions, so GCS's answer to a taken name (412, PreconditionFailed) is
    played by a stand-in for the upload; the upload itself, without the precondition, is real.
    """
    from google.api_core.exceptions import PreconditionFailed
    from google.cloud.storage import Blob

    for key, value in gcs_emulator.env.items():
        monkeypatch.setenv(key, value)
    bucket = gcs_emulator.client().create_bucket("taken")
    mine = tmp_path / "mine.parquet"
    mine.write_bytes(b"this run's scores")
    upload = Blob.upload_from_filename
    asked = []

    def as_gcs_answers(blob, filename, *args, if_generation_match=None, **kwargs):
        asked.append((blob.name, if_generation_match))
        if if_generation_match == 0 and blob.name == "out/scores.parquet":
            raise PreconditionFailed("At least one of the pre-conditions you specified did not hold.")
        return upload(blob, filename, *args, **kwargs)

    monkeypatch.setattr(Blob, "upload_from_filename", as_gcs_answers)
    with pytest.raises(ScoreInputError, match=r"gs://taken/out/scores.parquet appeared while this run was working"):
        sinks.publish(mine, "gs://taken/out/scores.parquet", overwrite=False)
    sinks.publish(mine, "gs://taken/out/new.parquet", overwrite=False)
    assert bucket.blob("out/new.parquet").download_as_bytes() == b"this run's scores" and not mine.exists()
    mine.write_bytes(b"again")
    sinks.publish(mine, "gs://taken/out/new.parquet", overwrite=True)
    assert asked == [("out/scores.parquet", 0), ("out/new.parquet", 0), ("out/new.parquet", None)]
    assert bucket.blob("out/new.parquet").download_as_bytes() == b"again"


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_gs_in_and_out_through_the_emulator(model_env, registered_model, gcs_emulator, schedule, tmp_path, engine):
    bucket = gcs_emulator.client().create_bucket(f"schedules-{engine}")
    bucket.blob("in/2017/schedule.csv").upload_from_filename(str(schedule))
    env = {**registered_model["env"], **gcs_emulator.env}
    output = f"gs://{bucket.name}/out/scores.parquet"
    run_score(env, f"gs://{bucket.name}/in/2017", output, engine=engine, spark_master="local[2]")
    names = sorted(b.name for b in bucket.list_blobs(prefix="out/"))
    assert names == ["out/scores.parquet", "out/scores.rejects.parquet", "out/scores.report.html"]
    local = tmp_path / "scores.parquet"
    bucket.blob("out/scores.parquet").download_to_filename(str(local))
    bucket.blob("out/scores.rejects.parquet").download_to_filename(str(tmp_path / "scores.rejects.parquet"))
    assert_scored_schedule(local, registered_model["model_uri"])
    again = subprocess.run(
        score_command(f"gs://{bucket.name}/in/2017", output),
        cwd=PROJECT_ROOT,
        env=process_env(env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2 and f"output {output} exists" in again.stderr
