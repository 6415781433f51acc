"""whatif: moved flights go the way the generated data says, side by side with the originals.

The generated flights (tests/factory.py) are late more often from 18:00 and with airline AAA
(Alpha Air) than with CCC (Gamma Jet); the session's registered model learned that, so moving a
morning CCC flight to the evening, or to AAA, must raise its delay probability, and the factor
that moved most must be the one changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from skyprophet.batch.whatif import WhatIfInputError
from skyprophet.params import WhatifParams
from steps import whatif
from tests.factory import make_flights


def write_schedule(path: Path) -> Path:
    """The generated schedule the what-ifs pick their flights from, as a CSV file."""
    make_flights(days=20, flights_per_day=40, seed=5, start="2017-03-01").to_csv(path, index=False)
    return path


@pytest.fixture
def schedule(tmp_path: Path) -> Path:
    return write_schedule(tmp_path / "schedule.csv")


def morning_flight(schedule: Path, airline: str = "CCC") -> str:
    """``<number>@<YYYY-MM-DD HH:MM>`` of the first flight of ``airline`` leaving 08:00-10:59."""
    frame = pd.read_csv(schedule, dtype=str)
    times = pd.to_datetime(frame["Fecha-I"])
    row = frame[(frame["Emp-I"] == airline) & times.dt.hour.between(8, 10)].iloc[0]
    return f"{row['Vlo-I']}@{row['Fecha-I'][:16]}"


# ------------------------------------------------------------------ refusals, before any model


def test_flights_and_changes_are_checked_naming_the_parameter(schedule):
    flight = morning_flight(schedule)
    cases = [
        ({"flights": flight}, r"^departure, date, airline: no change given"),
        ({"flights": "92-2017-01-01", "departure": "19:00"}, r"^flights: '92-2017-01-01' is not"),
        ({"flights": "9999@2017-03-02", "departure": "19:00"}, r"^flights: no flight 9999 on 2017-03-02"),
        ({"flights": flight, "departure": "7pm"}, r"^departure: '7pm' is not a time of day"),
        ({"flights": flight, "date": "2017-02-30"}, r"^date: '2017-02-30' is not a day"),
        ({"flights": flight, "airline": "ZZZ"}, r"^operator: airline 'ZZZ' is not flown in the schedule"),
        (
            {"data": str(schedule.with_name("nowhere.csv")), "flights": flight, "date": "2017-03-05"},
            r"^data: .*no such",
        ),
    ]
    for options, message in cases:
        with pytest.raises(WhatIfInputError, match=message):
            whatif.run(WhatifParams(**{"data": str(schedule), **options}))


def test_more_flights_than_the_limit_are_refused(schedule, monkeypatch):
    monkeypatch.setattr("skyprophet.batch.whatif.MAX_WHATIF_FLIGHTS", 3)
    frame = pd.read_csv(schedule, dtype=str)
    day = frame["Fecha-I"].str[:10].iloc[0]
    numbers = ",".join(f"{n}@{day}" for n in frame.loc[frame["Fecha-I"].str.startswith(day), "Vlo-I"].unique()[:4])
    with pytest.raises(WhatIfInputError, match=r"at most 3 \(MAX_WHATIF_FLIGHTS\)"):
        whatif.run(WhatifParams(data=str(schedule), flights=numbers, departure="19:00"))


# ------------------------------------------------------------------ the model's answer


@pytest.mark.slow
def test_an_evening_departure_and_a_later_airline_raise_the_odds(model_env, registered_model, schedule, tmp_path):
    flight = morning_flight(schedule)
    evening = whatif.run(
        WhatifParams(data=str(schedule), flights=flight, departure="19:30", output=str(tmp_path / "w.csv"))
    )
    row = evening.iloc[0]
    assert row["departure_after"].endswith(" 19:30:00") and row["airline_after"] == row["airline_before"] == "CCC"
    assert row["probability_after"] > row["probability_before"]
    moved = json.loads(row["moved_factors"])
    assert moved[0]["factor"] == "departure" and moved[0]["change"] > 0
    assert moved[0]["words_after"] in ("", "departure 19:30")
    assert pd.read_csv(tmp_path / "w.csv")["probability_after"].iloc[0] == pytest.approx(row["probability_after"])

    airline = whatif.run(WhatifParams(data=str(schedule), flights=flight, airline="AAA")).iloc[0]
    assert airline["airline_after"] == "AAA" and airline["unseen_after"] == ""
    assert airline["probability_after"] > airline["probability_before"]
    assert json.loads(airline["moved_factors"])[0]["factor"] == "airline"

    runs = mlflow.search_runs(filter_string="tags.`skyprophet.step` = 'whatif'", output_format="list")
    assert len(runs) == 2
    assert {r.data.tags["skyprophet.model_version"] for r in runs} == {registered_model["version"]}
    logged = mlflow.artifacts.load_text(f"runs:/{runs[-1].info.run_id}/whatif.csv")
    assert "probability_before" in logged and flight.split("@")[0] in logged


@pytest.mark.slow
def test_cli_prints_both_probabilities_and_the_factors(model_env, schedule, capsys):
    flight = morning_flight(schedule)
    whatif.main(["--data", str(schedule), "--flights", flight, "--departure", "20:00"])
    text = capsys.readouterr().out
    assert f"flight {flight.split('@')[0]}" in text and "-> " in text
    assert "delay probability 0." in text and "points)" in text
    assert "departure" in text.split("factors that moved most")[1]
    codes = []
    whatif.main(["--data", str(schedule), "--flights", flight], exit=codes.append)
    assert codes == [2]
