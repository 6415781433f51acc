"""raw_flights: the delay target, row validation by reason, a clear error for a missing column."""

import pandas as pd
import pytest

from skyprophet.science.raw_flights import delay_target, read_raw, reject_reasons
from skyprophet.science.splits import RawDataError
from tests.factory import make_flights


def test_target_is_more_than_15_minutes_late():
    raw = pd.DataFrame(
        {
            "Fecha-I": ["2017-01-01 10:00:00"] * 4,
            "Fecha-O": ["2017-01-01 10:15:00", "2017-01-01 10:16:00", "2017-01-01 09:50:00", "2017-01-02 00:30:00"],
        }
    )
    assert delay_target(raw).tolist() == [0, 1, 0, 1], "15 min is on time, 16 min and crossing midnight are late"


def test_bad_rows_are_counted_by_reason():
    raw = make_flights(days=2, flights_per_day=10)
    raw.loc[0, "Fecha-I"] = "not a date"
    raw.loc[1, "Fecha-O"] = "2017-13-45 10:00:00"
    raw.loc[2, "OPERA"] = ""
    raw.loc[3, "Fecha-O"] = "2017-03-01 10:00:00"  # two months after the schedule
    reasons = reject_reasons(raw)
    assert reasons[:4].tolist() == ["unparsable_Fecha-I", "unparsable_Fecha-O", "missing_OPERA", "implausible_delay"]
    assert (reasons[4:] == "").all(), "good rows carry no reason"


def test_rows_the_model_would_refuse_are_rejected_by_reason_not_left_to_stop_training():
    raw = make_flights(days=2, flights_per_day=10).astype({"Vlo-I": str})
    raw.loc[0, "Vlo-I"] = "A-1"  # not letters and digits
    raw.loc[1, "Des-I"] = "X" * 65  # over MAX_CATEGORY_CHARS
    raw.loc[2, "Vlo-I"] = "12345678901"  # over MAX_FLIGHT_NUMBER_CHARS
    raw.loc[3, "Vlo-I"] = "０２２６"  # a look-alike of 226: one flight, kept
    reasons = reject_reasons(raw)
    assert reasons[:4].tolist() == ["malformed_Vlo-I", "too_long_Des-I", "too_long_Vlo-I", ""]
    assert (reasons[4:] == "").all()


def test_missing_column_is_a_clear_error(tmp_path):
    path = tmp_path / "flights.csv"
    make_flights(days=2).drop(columns=["Fecha-O"]).to_csv(path, index=False)
    with pytest.raises(RawDataError, match=r"lacks required columns \['Fecha-O'\]"):
        read_raw(str(path))
