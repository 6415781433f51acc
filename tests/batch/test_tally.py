"""tally: which rows are flights (the schema alone decides) and the day of each."""

from __future__ import annotations

import pandas as pd

from skyprophet.batch import tally
from tests.steps.test_score import BAD, FLIGHT_COLUMNS, schedule_frame


def test_flight_days_plain_and_other_accepted_forms():
    times = pd.Series(["2017-03-01 23:59:00", " 2017-03-02 00:10:00 ", "2017-12-31 10:00:00"], dtype=str)
    assert tally.flight_days(times).tolist() == ["2017-03-01", "2017-03-02", "2017-12-31"]


def test_reject_reasons_use_the_schema_alone():
    frame = schedule_frame()[FLIGHT_COLUMNS]
    reasons, details = tally.reject_reasons(frame)
    assert {i: r for i, r in enumerate(reasons) if r} == {row: reason for row, (_, _, reason) in BAD.items()}
    assert details[7] == "Fecha-I: expected a time as YYYY-MM-DD HH:MM:SS"
    clean, _ = tally.reject_reasons(frame.drop(index=list(BAD)))
    assert (clean == "").all()
