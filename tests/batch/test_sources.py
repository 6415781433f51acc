"""sources: a schedule's files listed and read through pyarrow's file systems, locally and on GCS."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pyfunc.schema import REQUIRED_COLUMNS
from skyprophet.batch import sources
from skyprophet.batch.contract import ScoreInputError
from tests.factory import make_flights


def test_rebatch_gives_exact_sizes_in_order():
    batches = [pa.record_batch({"x": list(range(a, b))}) for a, b in ((0, 3), (3, 4), (4, 11), (11, 12))]
    tables = list(sources.rebatch(iter(batches), 5))
    assert [t.num_rows for t in tables] == [5, 5, 2]
    assert [v for t in tables for v in t["x"].to_pylist()] == list(range(12))


def _schedule_parts() -> dict[str, pd.DataFrame]:
    """Three parts of one generated schedule (text columns), with the names they are written under."""
    flights = make_flights(days=3, flights_per_day=30, seed=3, start="2017-05-01")
    return {"a.csv": flights.iloc[:40], "b.parquet": flights.iloc[40:70], "sub/c.csv": flights.iloc[70:]}


def _encode(name: str, frame: pd.DataFrame) -> bytes:
    """``frame`` as the bytes of a CSV or Parquet file, by ``name``'s suffix."""
    if not name.endswith(".parquet"):
        return frame.to_csv(index=False, lineterminator="\n").encode()
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False), sink)
    return sink.getvalue().to_pybytes()


# Files a folder holds beside the schedule that are not part of it: hidden and marker files (as
# pyarrow datasets and Spark skip them), files of another kind, a folder of temporary files.
NOT_SCHEDULE = {
    "_SUCCESS": b"",
    ".a.csv.partial": b"x",
    ".hidden.csv": b"Fecha-I\nx\n",
    "notes.txt": b"hello",
    "_tmp/d.csv": b"Fecha-I\nx\n",
}


def _read_all(uri: str, chunk_rows: int) -> tuple[list[int], pd.DataFrame]:
    kind, columns, _ = sources.file_columns(uri, uri)
    tables = list(sources.read_batches(uri, uri, kind, columns, chunk_rows))
    return [t.num_rows for t in tables], pd.concat([t.to_pandas() for t in tables], ignore_index=True)


def test_a_local_folder_is_listed_in_order_without_hidden_or_marker_files(tmp_path: Path):
    parts = _schedule_parts()
    for name, data in {**{n: _encode(n, f) for n, f in parts.items()}, **NOT_SCHEDULE}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    uris = sources.list_inputs(str(tmp_path))
    assert uris == [str(tmp_path / n) for n in parts]
    for uri, frame in zip(uris, parts.values(), strict=True):
        sizes, read = _read_all(uri, 16)
        assert sizes[:-1] == [16] * (len(sizes) - 1) and sum(sizes) == len(frame)
        pd.testing.assert_frame_equal(read, frame[list(read.columns)].reset_index(drop=True).astype(str))
    assert sources.list_inputs(uris[0]) == [uris[0]]


def test_unreadable_files_are_refused_naming_them(tmp_path: Path):
    header = ",".join(REQUIRED_COLUMNS) + "\n"
    cases = {
        "empty.csv": (b"", "the file is empty"),
        "blank.csv": (b"\n\n", "the file is empty"),
        "header.csv": (header.encode(), "no flights"),
        "missing.csv": (b"Fecha-I,Vlo-I\n2017-01-01 10:00:00,1\n", "required column(s)"),
        "latin1.csv": (header.encode() + ",".join(["Mar\xeda"] * len(REQUIRED_COLUMNS)).encode("latin-1"), "UTF8"),
        "broken.parquet": (b"PAR1 not really", "cannot read as Parquet"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ScoreInputError, match=re.escape(f"{name}: ") + ".*" + re.escape(message)):
            kind, columns, _ = sources.file_columns(str(tmp_path / name), name)
            list(sources.read_batches(str(tmp_path / name), name, kind, columns, 100))
    with pytest.raises(ScoreInputError, match="nowhere: no such file or folder"):
        sources.list_inputs(str(tmp_path / "nowhere"))


@pytest.mark.integration
def test_a_gs_folder_is_listed_and_streamed_through_pyarrow(gcs_emulator, monkeypatch):
    for key, value in gcs_emulator.env.items():
        monkeypatch.setenv(key, value)
    bucket = gcs_emulator.client().create_bucket("sources-schedules")
    parts = _schedule_parts()
    for name, data in {**{n: _encode(n, f) for n, f in parts.items()}, **NOT_SCHEDULE}.items():
        bucket.blob(f"in/2017/{name}").upload_from_string(data)
    bucket.blob("in/2018/a.csv").upload_from_string(_encode("a.csv", parts["a.csv"]))  # a sibling prefix

    folder = "gs://sources-schedules/in/2017"
    uris = sources.list_inputs(folder)
    assert uris == [f"{folder}/{n}" for n in parts]
    assert sources.list_inputs(f"{folder}/") == uris
    for uri, frame in zip(uris, parts.values(), strict=True):
        sizes, read = _read_all(uri, 7)
        assert sizes[:-1] == [7] * (len(sizes) - 1) and sum(sizes) == len(frame)
        pd.testing.assert_frame_equal(read, frame[list(read.columns)].reset_index(drop=True).astype(str))
    # One object is one file; the folder's digest is of the objects GCS keeps (their md5).
    assert sources.list_inputs(uris[1]) == sources.list_inputs(f"{uris[1]}/") == [uris[1]]
    assert sources.content_digest(uris[1], [uris[1]]) == sources.file_digest(uris[1])[:32] != ""
    with pytest.raises(ScoreInputError, match="in/2017/gone.csv: no such object"):
        sources.file_digest(f"{folder}/gone.csv")
    digest = sources.content_digest(folder, uris)
    assert len(digest) == 32
    bucket.blob("in/2017/sub/c.csv").upload_from_string(_encode("a.csv", parts["a.csv"]))
    assert sources.content_digest(folder, uris) != digest
    with pytest.raises(ScoreInputError, match="gs://sources-schedules/in/2019: no such file or folder"):
        sources.list_inputs("gs://sources-schedules/in/2019")


def test_a_long_csv_is_checked_from_its_first_megabyte(tmp_path: Path):
    frame = make_flights(days=60, flights_per_day=200, seed=5, start="2017-01-01")
    path = tmp_path / "long.csv"
    frame.to_csv(path, index=False, lineterminator="\n")
    assert path.stat().st_size > sources.CSV_HEADER_BYTES
    kind, columns, rows = sources.file_columns(str(path), "long.csv")
    assert kind == "csv" and rows is None and set(columns) <= set(frame.columns)
    assert sum(t.num_rows for t in sources.read_batches(str(path), "long.csv", kind, columns, 5000)) == len(frame)
    (tmp_path / "wide.csv").write_bytes(b"x" * (sources.CSV_HEADER_BYTES + 10))
    with pytest.raises(ScoreInputError, match="wide.csv: no line break in the first"):
        sources.file_columns(str(tmp_path / "wide.csv"), "wide.csv")


def test_a_parquet_file_is_cut_into_runs_of_row_groups_and_a_csv_is_one_unit(tmp_path: Path):
    frame = make_flights(days=10, flights_per_day=100, seed=3, start="2017-01-01").astype(str)
    path = tmp_path / "schedule.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=100)
    metadata = pq.read_metadata(path)
    sizes = [
        sum(metadata.row_group(i).column(c).total_compressed_size for c in range(metadata.num_columns))
        for i in range(metadata.num_row_groups)
    ]
    split = sum(sizes) // 3
    units = sources.split_units(str(path), "parquet", split)
    assert [g for unit in units for g in unit] == list(range(10))  # every row group once, in order
    assert len(units) == 3 or len(units) == 4
    assert all(sum(sizes[g] for g in unit) >= split for unit in units[:-1])
    assert sources.split_units(str(path), "parquet", 1) == [[g] for g in range(10)]
    assert sources.split_units(str(path), "parquet", 10**12) == [list(range(10))]
    read = [t for unit in units for t in sources.read_batches(str(path), "p", "parquet", list(frame.columns), 64, unit)]
    assert pa.concat_tables(read).to_pandas().equals(frame)
    frame.to_csv(tmp_path / "schedule.csv", index=False)
    assert sources.split_units(str(tmp_path / "schedule.csv"), "csv", 1) == [None]
