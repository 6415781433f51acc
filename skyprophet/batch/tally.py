"""The validity tally: which rows are flights, and the counts and sums of those scored.

Which rows are flights (``pyfunc.schema.clean_columns`` alone decides), the day of each flight, one
batch's scores and sums, and the run's counts and summary added up batch by batch.

The Spark workers import this module (through ``scoring``): it needs ``pyfunc`` and ``contract`` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pyfunc.normalise import normalise_category
from pyfunc.schema import UNKNOWN_FIELDS, InvalidFlightsError, clean_columns
from pyfunc.times import parse_times
from skyprophet.batch.contract import AIRLINE, DAY, FLIGHT_COLUMNS

# Reason slugs from the schema's problem texts (etl's names); anything else is invalid_<field>.
_REASON_KINDS = (
    ("null or empty", "missing"),
    ("expected a time", "unparsable"),
    ("year outside", "out_of_range"),
    ("expected", "wrong_type"),
)
_EXAMPLE_ROWS = re.compile(r"\s*\(row \d+: .*\)$", re.DOTALL)
_PLAIN_TIME = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"


def _reason(err: InvalidFlightsError) -> str:
    for prefix, kind in _REASON_KINDS:
        if err.problem.startswith(prefix):
            return f"{kind}_{err.field}"
    return f"invalid_{err.field}"


def reject_reasons(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per row: "" for a valid flight, else a reason slug; and the schema's message ("" when valid).

    ``clean_columns`` decides: a slice it refuses is halved until single rows are left, so a clean
    batch costs one call and ``k`` bad rows about ``k * log2(len(frame))`` calls on ever smaller slices.
    """
    reasons = np.full(len(frame), "", dtype=object)
    details = np.full(len(frame), "", dtype=object)
    columns = {c: frame[c] for c in FLIGHT_COLUMNS if c in frame.columns}
    frame = pd.DataFrame(columns).reset_index(drop=True)

    def visit(start: int, stop: int) -> None:
        try:
            clean_columns(frame.iloc[start:stop])
            return
        except InvalidFlightsError as err:
            if stop - start == 1:
                reasons[start] = _reason(err)
                details[start] = f"{err.field}: {_EXAMPLE_ROWS.sub('', err.problem)}"
                return
        middle = (start + stop) // 2
        visit(start, middle)
        visit(middle, stop)

    if len(frame):
        visit(0, len(frame))
    return reasons, details


def flight_days(times: pd.Series) -> np.ndarray:
    """``YYYY-MM-DD`` of valid scheduled times: the first ten characters of the plain form, else the schema's parser.

    The times are valid flights' (the schema accepted them), so a plain ``YYYY-MM-DD HH:MM:SS``
    is a real date and its day is its text; any other accepted form is parsed by ``parse_times``.
    """
    text = pa.array(times, from_pandas=True)
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        return np.asarray(_parsed_days(times.tolist()), dtype=object)
    plain = pc.match_substring_regex(text, _PLAIN_TIME).to_numpy(zero_copy_only=False)
    days = pc.utf8_slice_codeunits(text, 0, 10).to_numpy(zero_copy_only=False).astype(object)
    if not plain.all():
        rest = np.flatnonzero(~plain)
        days[rest] = _parsed_days(text.take(pa.array(rest)).to_pylist())
    return days


def _parsed_days(values: list) -> np.ndarray:
    return np.datetime_as_string(parse_times(values).astype("datetime64[D]"), unit="D").astype(object)


@dataclass
class BatchScores:
    """What scoring one batch gives, small enough to send back from a worker process.

    ``valid``: None when every row is a flight, else a mask; ``reasons`` and ``details`` are the
    rejected rows' (in order); ``scores`` the valid rows' ``SCORE_COLUMNS``; ``groups`` the
    batch's per (airline as given, day) sums for the summary.
    """

    rows: int
    valid: np.ndarray | None
    reasons: np.ndarray
    details: np.ndarray
    scores: dict[str, np.ndarray]
    groups: pd.DataFrame
    rejected: dict[str, int]
    seconds: float = 0.0  # CPU seconds of validation, features, prediction and the sums (where it scored)

    @property
    def scored(self) -> int:
        """Flights scored."""
        return len(self.scores["delay"])

    @property
    def flagged(self) -> int:
        """Flights scored with a value the model never saw."""
        return int((self.scores[UNKNOWN_FIELDS] != "").sum())


def group_sums(
    airlines: pd.Series, days: np.ndarray, scores: dict[str, np.ndarray], flagged: np.ndarray
) -> pd.DataFrame:
    """Per (airline as given, day): flights, probability sum, delayed and flagged flights (Arrow's group-by)."""
    table = pa.table(
        {
            AIRLINE: pa.array(airlines, from_pandas=True),
            DAY: pa.array(days, type=pa.string()),
            "probability_sum": scores["delay_probability"],
            "delayed": scores["delay"],
            "flagged": flagged.astype(np.int64),
        }
    )
    sums = table.group_by([AIRLINE, DAY]).aggregate(
        [("probability_sum", "count"), ("probability_sum", "sum"), ("delayed", "sum"), ("flagged", "sum")]
    )
    frame = sums.to_pandas().rename(
        columns={
            "probability_sum_count": "flights",
            "probability_sum_sum": "probability_sum",
            "delayed_sum": "delayed",
            "flagged_sum": "flagged",
        }
    )
    return frame[[AIRLINE, DAY, "flights", "probability_sum", "delayed", "flagged"]].astype({AIRLINE: object})


@dataclass
class Tally:
    """Counts and per (airline as given, day) sums, added up chunk by chunk (or from Spark's group-by)."""

    rows: int = 0
    scored: int = 0
    flagged: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    groups: list[pd.DataFrame] = field(default_factory=list)

    def add(self, part: BatchScores) -> None:
        """Add one batch's counts and per (airline, day) sums."""
        self._add(part.rows, part.scored, part.flagged, part.rejected, [part.groups])

    def merge(self, other: Tally) -> None:
        """Add another tally's counts and sums (a Spark task's)."""
        self._add(other.rows, other.scored, other.flagged, other.rejected, other.groups)

    def _add(self, rows: int, scored: int, flagged: int, rejected: dict[str, int], groups: list) -> None:
        self.rows += rows
        self.scored += scored
        self.flagged += flagged
        for reason, n in rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + n
        self.groups.extend(g for g in groups if len(g))
        if len(self.groups) > 50:
            self.groups = [pd.concat(self.groups).groupby([AIRLINE, DAY], sort=False).sum().reset_index()]

    def summary(self) -> dict[str, pd.DataFrame]:
        """``by_airline`` (normalised as the model sees it) and ``by_day``: flights, mean probability, delay share."""
        columns = ["flights", "probability_sum", "delayed", "flagged"]
        groups = pd.concat(self.groups) if self.groups else pd.DataFrame(columns=[AIRLINE, DAY, *columns])
        groups = groups.assign(airline=normalise_category(groups[AIRLINE]).astype(object), day=groups[DAY])
        tables = {}
        for name, key in (("by_airline", "airline"), ("by_day", "day")):
            table = groups.groupby(key)[columns].sum().sort_index()
            table["flights"] = table["flights"].astype(np.int64)
            table["mean_delay_probability"] = table["probability_sum"] / table["flights"]
            table["delay_share"] = table["delayed"] / table["flights"]
            tables[name] = table[["flights", "mean_delay_probability", "delay_share", "flagged"]].reset_index()
        return tables
