"""whatif: the change rewrites only what was asked (the model's answer: tests/steps/test_whatif.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from skyprophet.batch import whatif
from tests.steps.test_whatif import write_schedule


@pytest.fixture
def schedule(tmp_path: Path) -> Path:
    return write_schedule(tmp_path / "schedule.csv")


def test_the_change_rewrites_only_what_was_asked(schedule):
    frame = pd.read_csv(schedule, dtype=str)
    before = frame.iloc[[0, 1]].reset_index(drop=True)
    after = whatif.changed(before, departure="19:05", date="2017-09-15")
    assert after["Fecha-I"].tolist() == ["2017-09-15 19:05:00", "2017-09-15 19:05:00"]
    assert after.drop(columns="Fecha-I").equals(before.drop(columns="Fecha-I"))
    moved = whatif.changed(before, airline="AAA", operator=whatif.operator_of(frame, "AAA"))
    assert moved["OPERA"].tolist() == ["Alpha Air", "Alpha Air"] and moved["Fecha-I"].equals(before["Fecha-I"])
