"""The raw flights file as etl takes it in: read as text, each unusable row's reason, the delay target.

``read_raw`` reads every column as text (nothing coerced or defaulted), ``reject_reasons`` names
the first reason a row cannot be used ("" when it can; the serving contract's caps and
flight-number form included, so a row the model would refuse is rejected here, not left to stop
training), ``delay_target`` labels a flight delayed when it left more than ``DELAY_MINUTES`` late.
etl uses them on the file it fetched; replay on the months it replays.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pyfunc.fields import FIELD_CAPS, FLIGHT_NUMBER, FLIGHT_NUMBER_FORM, MAX_FLIGHT_NUMBER_CHARS, MAX_YEAR, MIN_YEAR
from pyfunc.normalise import normalise_flight_number
from pyfunc.schema import (
    DELAY_MINUTES,
    OPERATED_TIME,
    REQUIRED_COLUMNS,
    SCHEDULED_TIME,
    minutes_late,
    parse_scheduled_time,
)
from skyprophet.science.splits import RawDataError
from skyprophet.storage import TEXT_CSV

TRAINING_COLUMNS = (*REQUIRED_COLUMNS, OPERATED_TIME)
# Operated more than this far from the schedule is taken as a data error, not a delay.
MAX_ABS_DEVIATION = pd.Timedelta(hours=24)


def read_raw(path: str) -> pd.DataFrame:
    """Read every column as text, so nothing is coerced or defaulted on the way in."""
    raw = pd.read_csv(path, **TEXT_CSV)
    missing = [c for c in TRAINING_COLUMNS if c not in raw.columns]
    if missing:
        raise RawDataError(f"raw file {path} lacks required columns {missing}; it has {list(raw.columns)}")
    return raw


def reject_reasons(raw: pd.DataFrame) -> pd.Series:
    """First reason each row cannot be used ("" when it can)."""
    scheduled = parse_scheduled_time(raw[SCHEDULED_TIME])
    operated = parse_scheduled_time(raw[OPERATED_TIME])
    conditions, reasons = [], []
    for column in TRAINING_COLUMNS:
        conditions.append(raw[column].str.strip() == "")
        reasons.append(f"missing_{column}")
    # The serving contract's caps and flight-number form (pyfunc.schema): a row the model would
    # refuse is rejected here by reason, not left to stop training.
    for column, (_, cap) in FIELD_CAPS.items():
        conditions.append(raw[column].str.len() > cap)
        reasons.append(f"too_long_{column}")
    short = raw[FLIGHT_NUMBER].where(raw[FLIGHT_NUMBER].str.len() <= MAX_FLIGHT_NUMBER_CHARS, "")
    number = normalise_flight_number(short)
    conditions.append(~number.str.fullmatch(FLIGHT_NUMBER_FORM.pattern).fillna(False).astype(bool))
    reasons.append(f"malformed_{FLIGHT_NUMBER}")
    conditions += [
        scheduled.isna(),
        (scheduled.dt.year < MIN_YEAR) | (scheduled.dt.year > MAX_YEAR),
        operated.isna(),
        (operated - scheduled).abs() > MAX_ABS_DEVIATION,
    ]
    reasons += ["unparsable_Fecha-I", "out_of_range_Fecha-I", "unparsable_Fecha-O", "implausible_delay"]
    return pd.Series(np.select(conditions, reasons, default=""), index=raw.index)


def delay_target(raw: pd.DataFrame) -> pd.Series:
    """1 when the flight left more than DELAY_MINUTES after its scheduled time."""
    return (minutes_late(raw) > DELAY_MINUTES).astype(np.int64)
