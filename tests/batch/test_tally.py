"""tally: which rows are flights (the schema alone decides) and the day of each."""

from __future__ import annotations

import numpy as np
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


def _part(airlines: list[str], days: list[str], probabilities: list[float], rejected: dict[str, int]):
    scores = {
        "delay_probability": np.array(probabilities),
        "delay": (np.array(probabilities) > 0.5).astype(np.int64),
        "unknown_fields": np.array(["" if a != "ZZZ" else "Emp-I" for a in airlines], dtype=object),
    }
    flagged = scores["unknown_fields"] != ""
    groups = tally.group_sums(pd.Series(airlines, dtype=object), np.array(days, dtype=object), scores, flagged)
    rows = len(airlines) + sum(rejected.values())
    return tally.BatchScores(rows, None, np.array([]), np.array([]), scores, groups, rejected)


def test_merged_task_tallies_equal_one_tally_of_every_batch():
    parts = [
        _part(["LAN", "SKU", "LAN"], ["2017-01-01", "2017-01-01", "2017-01-02"], [0.1, 0.7, 0.3], {}),
        _part(["LAN", "ZZZ"], ["2017-01-02", "2017-01-02"], [0.9, 0.2], {"missing_Vlo-I": 2}),
        _part(["SKU"], ["2017-01-01"], [0.6], {"missing_Vlo-I": 1, "unparsable_Fecha-I": 1}),
    ]
    whole = tally.Tally()
    for part in parts:
        whole.add(part)
    first, second = tally.Tally(), tally.Tally()
    for part in parts[:2]:
        first.add(part)
    second.add(parts[2])
    merged = tally.Tally()
    merged.merge(first)
    merged.merge(second)
    assert (merged.rows, merged.scored, merged.flagged) == (whole.rows, whole.scored, whole.flagged) == (10, 6, 1)
    assert merged.rejected == whole.rejected == {"missing_Vlo-I": 3, "unparsable_Fecha-I": 1}
    for name, table in whole.summary().items():
        pd.testing.assert_frame_equal(merged.summary()[name], table)
    assert whole.summary()["by_day"]["flights"].tolist() == [3, 3]
