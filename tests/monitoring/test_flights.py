"""Reading new flights: a clear error for each unusable file, and a schedule from GCS."""

from __future__ import annotations

import pytest

from pyfunc.fields import REQUIRED_COLUMNS
from skyprophet.monitoring.flights import BadFlightsError, clean_new_flights, read_flights
from tests.factory import make_flights


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
