"""report: the sums of a scored file checked against pandas (no model), and where the page goes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pyfunc.schema import UNKNOWN_FIELDS
from skyprophet.batch import report, report_data
from tests.factory import make_flights

# ------------------------------------------------------------------ the sums, without a model


def scored_frame(n: int = 5_000, seed: int = 1) -> pd.DataFrame:
    """A file shaped like score's output: generated flights with made-up probabilities and flags."""
    rng = np.random.default_rng(seed)
    flights = make_flights(days=50, flights_per_day=n // 50, seed=seed)
    frame = flights[["Fecha-I", "Vlo-I", "Des-I", "Emp-I", "TIPOVUELO", "OPERA", "SIGLADES", "Ori-I", "SIGLAORI"]]
    frame = frame.assign(delay_probability=rng.random(len(frame)))
    frame = frame.assign(delay=(frame["delay_probability"] >= 0.5).astype(np.int64), **{UNKNOWN_FIELDS: ""})
    frame.loc[[3, 4, 4000], UNKNOWN_FIELDS] = ["Des-I", "Des-I", "Emp-I,OPERA"]
    # Scheduled times in another form the schema accepts (spaces around) take the schema's parser.
    frame.loc[10, "Fecha-I"] = f"  {frame.loc[10, 'Fecha-I']} "
    # An airline spelled two ways is one airline, as the model sees it.
    frame.loc[frame.index[frame["Emp-I"] == "AAA"][:7], "Emp-I"] = " aaa"
    return frame.reset_index(drop=True)


def test_aggregates_match_pandas_across_batches(tmp_path, monkeypatch):
    frame = scored_frame()
    path = tmp_path / "scores.parquet"
    frame.to_parquet(path, index=False, row_group_size=700)
    monkeypatch.setattr(report_data, "BATCH_ROWS", 600)  # several batches: the sums must carry across them
    found = report_data.aggregate(path)

    assert found.flights == len(frame) and found.delayed == int(frame["delay"].sum())
    times = pd.to_datetime(frame["Fecha-I"].str.strip())
    expected = (
        frame.assign(day=times.dt.normalize(), hour=times.dt.hour)
        .groupby(["day", "hour"])
        .agg(flights=("delay", "size"), probability_sum=("delay_probability", "sum"))
    )
    cells = found.table("cells").assign(day=lambda t: pd.to_datetime(t["day"])).set_index(["day", "hour"])
    assert cells["flights"].sum() == len(frame)
    assert cells.index.tolist() == expected.index.tolist()
    assert cells["flights"].tolist() == expected["flights"].tolist()
    np.testing.assert_allclose(cells["probability_sum"], expected["probability_sum"])

    airlines = report_data.by_category(found.table("airlines"), "Emp-I", "OPERA", len(frame)).set_index("Emp-I")
    assert sorted(airlines.index) == ["AAA", "BBB", "CCC"]
    assert airlines.loc["AAA", "flights"] == (frame["Emp-I"].str.strip().str.upper() == "AAA").sum()
    assert airlines["share"].sum() == pytest.approx(1.0)
    assert airlines.loc["AAA", "label"] == "AAA · Alpha Air"

    top = frame.nlargest(report_data.TOP_FLIGHTS, "delay_probability")
    assert found.top["delay_probability"].tolist() == top["delay_probability"].tolist()
    assert found.flagged_by_fields == {"Des-I": 2, "Emp-I,OPERA": 1}
    assert found.flagged["Vlo-I"].tolist() == frame.loc[[3, 4, 4000], "Vlo-I"].tolist()


def test_report_path_sits_beside_the_output():
    assert report.report_uri("/x/scores.parquet") == "/x/scores.report.html"
    assert report.report_uri("gs://b/out/2018.PARQUET") == "gs://b/out/2018.report.html"
    assert report.report_uri("/x/scores") == "/x/scores.report.html"
