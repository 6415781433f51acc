"""etl: rejects counted on the run, the split written with its lineage, the checksum checked by
default, and every run's files in folders of its own (the target, row validation and the splits
themselves: tests/science)."""

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from skyprophet.config import SCL_SHA256
from skyprophet.params import EtlParams
from skyprophet.science.splits import RawDataError
from skyprophet.storage import DataSourceError, sha256_of
from steps import etl
from tests.factory import make_flights, write_flights


def test_an_unknown_split_is_refused_before_any_run(tracking_store, flights_csv):
    with pytest.raises(ValueError, match="split must be one of latest, day, got 'random'"):
        etl.run(EtlParams(data_uri=str(flights_csv), split="random"))
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_run_writes_splits_rejects_and_lineage(tracking_store, tmp_path):
    raw = make_flights(days=90, flights_per_day=40)[::3].reset_index(drop=True)  # 1,200 flights, Jan-Mar
    raw.loc[5, "Fecha-I"] = "31/01/2017 10:00"  # one bad row in 1,200: under the 1 % limit
    path = tmp_path / "raw.csv"
    raw.to_csv(path, index=False)
    result = etl.run(EtlParams(data_uri=f"file://{path}", sha256=sha256_of(path)))
    assert (result.rows, result.rejected) == (1199, 1)
    run = mlflow.get_run(result.run_id)
    assert run.data.metrics["rejected_unparsable_Fecha-I"] == 1
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"train", "holdout"}
    assert all(d.dataset.digest for d in run.inputs.dataset_inputs), "lineage carries a digest"
    local = mlflow.artifacts.download_artifacts(result.processed_uri)
    train, holdout = pd.read_parquet(f"{local}/train.parquet"), pd.read_parquet(f"{local}/holdout.parquet")
    assert len(train) + len(holdout) == 1199
    assert set(holdout["Fecha-I"].str[:7]) == {"2017-02", "2017-03"}, "by default the last two months"
    rejects = pd.read_parquet(f"{tracking_store['SKYPROPHET_DATASETS_DIR']}/interim/{result.run_id}/rejects.parquet")
    assert rejects["reject_reason"].tolist() == ["unparsable_Fecha-I"]


def test_too_many_rejects_fail_the_step(tracking_store, tmp_path):
    raw = make_flights(days=5, flights_per_day=20)
    raw.loc[:4, "Fecha-O"] = ""
    path = tmp_path / "raw.csv"
    raw.to_csv(path, index=False)
    with pytest.raises(RawDataError, match=r"5 of 100 rows rejected.*missing_Fecha-O"):
        etl.run(EtlParams(data_uri=str(path), sha256=sha256_of(path)))


def test_checksum_mismatch_and_missing_file_fail(tracking_store, flights_csv, tmp_path):
    with pytest.raises(DataSourceError, match="sha256"):
        etl.run(EtlParams(data_uri=str(flights_csv), sha256="0" * 64))
    with pytest.raises(DataSourceError, match="not found"):
        etl.run(EtlParams(data_uri=str(tmp_path / "nowhere.csv"), sha256="none"))


def test_the_scl_digest_is_checked_by_default_and_another_file_must_be_named_or_opted_out(tracking_store, flights_csv):
    with pytest.raises(DataSourceError, match=f"expected {SCL_SHA256}") as refused:
        etl.run(EtlParams(data_uri=str(flights_csv)))
    assert "--sha256 none" in str(refused.value) and "SCL 2017" in str(refused.value), refused.value
    assert not list(Path(tracking_store["SKYPROPHET_DATASETS_DIR"], "processed").glob("*")), "nothing processed"

    with pytest.raises(ValueError, match="sha256 must be 64 hex digits or 'none', got 'abc'"):
        etl.run(EtlParams(data_uri=str(flights_csv), sha256="abc"))

    result = etl.run(EtlParams(data_uri=str(flights_csv), sha256="none"))
    run = mlflow.get_run(result.run_id)
    assert run.data.params["sha256"] == "none", "the opt-out is recorded on the run"
    assert run.data.tags["etl.sha256_unchecked"] == sha256_of(flights_csv), "with the digest the file had"
    checked = mlflow.get_run(etl.run(EtlParams(data_uri=str(flights_csv), sha256=sha256_of(flights_csv))).run_id)
    assert checked.data.params["sha256"] == sha256_of(flights_csv) and "etl.sha256_unchecked" not in checked.data.tags


@pytest.mark.real_data
def test_the_real_scl_file_passes_the_default_check(real_data, tmp_path):
    assert etl.fetch_checked(str(real_data), tmp_path / "data.csv", "") == tmp_path / "data.csv"
    assert sha256_of(tmp_path / "data.csv") == SCL_SHA256


def test_two_runs_share_no_file_and_the_default_folder_names_the_last_one(tracking_store, tmp_path):
    root = Path(tracking_store["SKYPROPHET_DATASETS_DIR"])
    files = {}
    for seed in (1, 2):
        path = write_flights(tmp_path / f"flights-{seed}.csv", days=70, seed=seed)
        run_id = etl.run(EtlParams(data_uri=str(path), sha256=sha256_of(path), holdout_months=1)).run_id
        written = {f for f in root.rglob("*") if f.is_file() and not f.is_symlink()}
        files[run_id] = {f: sha256_of(f) for f in written if run_id in f.parts}
        assert files[run_id], f"run {run_id} wrote nothing under folders of its own"
    first, second = files
    assert not set(files[first]) & set(files[second]), "no file of one run is a file of the other"
    assert all(sha256_of(f) == digest for f, digest in files[first].items()), "the second run changed the first's"
    for name in ("train", "holdout"):
        latest = root / "processed" / f"{name}.parquet"
        assert latest.is_symlink() and latest.resolve() == (root / "processed" / second / f"{name}.parquet").resolve()
        expected = pd.read_parquet(mlflow.artifacts.download_artifacts(f"runs:/{second}/processed/{name}.parquet"))
        pd.testing.assert_frame_equal(pd.read_parquet(latest), expected)
    assert not list((root / "processed").glob(".*.parquet.*")), "no temporary link left"
