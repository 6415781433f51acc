"""The flight contract shared by etl, training and serving: columns, normalisation, validation.

One rule normalises every categorical value (airline, destination, flight type, city):
Unicode NFKC, surrounding whitespace stripped, inner runs of whitespace collapsed to one
space, upper-cased. Flight numbers are NFKC-folded with digits of any script read as ASCII,
trimmed, upper-cased and written without leading zeros or a trailing ``.0`` (``"0226"``, ``226``,
``"226.0"`` and ``"２２６"`` are the same flight); what is left must be letters and digits.
Scheduled times are text ``YYYY-MM-DD HH:MM:SS`` under the same folding (second 00-59: no leap
second) or datetimes read as that text (whole seconds, no time zone). A look-alike is one flight
or an error naming the field, never a second reading.

Every text field has a length cap checked before anything is normalised or cached, the
normalisation memos are bounded in entries and bytes, and values echoed in errors are cut to
``ECHO_CHARS`` characters: a hostile value costs an error, not the worker's memory.

``clean_columns`` is the one implementation of "a valid flight": it checks and normalises each
value in plain Python and numpy, so a one-flight request costs microseconds rather than the
milliseconds of pandas string operations on a one-row frame, and 100,000 flights stay well under
a second. Training (``clean_flights``) and serving (``validate_request``) both call it.
"""

from __future__ import annotations

import math
import re
import sys
import unicodedata
from collections.abc import Collection, Mapping
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

SCHEDULED_TIME = "Fecha-I"
OPERATED_TIME = "Fecha-O"
FLIGHT_NUMBER = "Vlo-I"
ORIGIN = "Ori-I"
# Scheduled categorical columns the model uses; values outside the training vocabulary are refused
# (or, with the model parameter unknown_categories="score", scored as unseen and flagged).
CATEGORY_COLUMNS = ("Emp-I", "Des-I", "TIPOVUELO", "OPERA", "SIGLADES")
REQUIRED_COLUMNS = (SCHEDULED_TIME, FLIGHT_NUMBER, *CATEGORY_COLUMNS)
# Known before departure but constant for one airport's file: accepted, not used.
OPTIONAL_COLUMNS = (ORIGIN, "SIGLAORI")
# What happened, not what was scheduled: never a model input.
OPERATED_COLUMNS = (OPERATED_TIME, "Vlo-O", "Ori-O", "Des-O", "Emp-O", "DIA", "MES", "AÑO", "DIANOM")
TARGET = "delay"
OUTPUT_COLUMNS = ("delay_probability", "delay")
# With unknown_categories="score": per flight, the fields whose value the model never saw.
UNKNOWN_FIELDS = "unknown_fields"
DELAY_MINUTES = 15
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# Scheduled times outside these years are refused as out of range.
MIN_YEAR, MAX_YEAR = 2000, 2100
# Requests above this many flights are refused; split larger batches.
MAX_BATCH_ROWS = 100_000
# What a flight with a category the model never saw gets (the model parameter ``unknown_categories``).
UNKNOWN_CATEGORY_CHOICES = ("refuse", "score")
# The model parameter ``explain``: JSON true or false (MLflow refuses "yes", "true", 1 with a 400 naming it).
EXPLAIN_PARAM = "explain"
# Memoised normalisations are dropped when a memo grows past this many entries or bytes (the
# values' and their normal forms' sys.getsizeof): bounded memory under odd traffic.
MEMO_LIMIT = 50_000
MEMO_MAX_BYTES = 8 * 1024 * 1024
# Field-length caps, in characters of the value as sent (surrounding spaces count), checked before
# any value is normalised or cached. Real values: categories up to 24 characters, flight numbers 5.
MAX_CATEGORY_CHARS = 64
MAX_FLIGHT_NUMBER_CHARS = 10
MAX_TIME_CHARS = 32
FIELD_CAPS = {
    SCHEDULED_TIME: ("MAX_TIME_CHARS", MAX_TIME_CHARS),
    FLIGHT_NUMBER: ("MAX_FLIGHT_NUMBER_CHARS", MAX_FLIGHT_NUMBER_CHARS),
    **{c: ("MAX_CATEGORY_CHARS", MAX_CATEGORY_CHARS) for c in CATEGORY_COLUMNS},
}
# A flight number sent as a number is a whole number of at most MAX_FLIGHT_NUMBER_CHARS digits.
MAX_FLIGHT_NUMBER = 10**MAX_FLIGHT_NUMBER_CHARS - 1
# What a normalised flight number is made of.
FLIGHT_NUMBER_FORM = re.compile(r"[0-9A-Z]+")
# Values echoed in errors are cut to this many characters, then their length is given.
ECHO_CHARS = 40
# Batches of at least this many flights are checked on each column's distinct values (``pd.factorize``,
# Arrow's dictionary encoding for Arrow-backed text) and their times parsed from the characters in
# numpy; anything that path does not accept as it stands is left to the per-value path, which
# names the field. Below it the per-value path is faster (factorizing has a fixed cost per column).
DISTINCT_PATH_ROWS = 1_000
# The strict time form after folding and stripping (second 00-59); anything else is not a time.
_PLAIN_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-5][0-9]")
# Python types a flight number may arrive as (a JSON number or text); booleans never.
_NUMBER_TYPES = (int, float, np.integer, np.floating)


class InvalidFlightsError(MlflowException):
    """Bad flights in a request; the scoring server answers these with HTTP 400."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"Field '{field}': {problem}", error_code=INVALID_PARAMETER_VALUE)
        self.field = field
        self.problem = problem


class Columns(dict):
    """``clean_columns``' result: column name -> numpy array, as a plain dict.

    ``factors`` holds, for a batch cleaned on its distinct values, each text column's codes and
    normalised distinct values (``values == distinct[codes]``) and the times' codes and distinct
    times, so the features and the vocabulary check work on a few hundred values, not a million.
    Empty when the batch was cleaned value by value.
    """

    factors: dict[str, tuple[np.ndarray, np.ndarray]]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.factors = {}


def normalise_category(values: pd.Series) -> pd.Series:
    """Apply the one normalisation rule for categorical values (see module docstring)."""
    text = values.astype("string").str.normalize("NFKC")
    return text.str.strip().str.replace(r"\s+", " ", regex=True).str.upper()


def fold(text: str) -> str:
    """NFKC, then any script's decimal digits as ASCII ("２２６" and "٢٢٦" read "226"); ASCII is unchanged."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text)
    return "".join(str(unicodedata.digit(c)) if unicodedata.category(c) == "Nd" else c for c in text)


_WHOLE_DECIMAL = re.compile(r"([0-9]+)\.0+")
_LEADING_ZEROS = re.compile(r"^0+(?=[0-9])")


def _flight_number_text(value: object) -> str:
    if isinstance(value, str):
        text = fold(value).strip().upper()
        whole = _WHOLE_DECIMAL.fullmatch(text)
        return _LEADING_ZEROS.sub("", whole.group(1) if whole else text, count=1)
    if isinstance(value, float | np.floating) and not (math.isfinite(value) and float(value).is_integer()):
        return repr(float(value))  # no flight number: refused by its form
    return str(int(value))


def normalise_flight_number(values: pd.Series) -> pd.Series:
    """Write flight numbers one way (see module docstring): a number by its digits, text folded."""
    return pd.Series([_flight_number_text(v) for v in values], index=values.index, dtype="string")


def _time_text(value: object) -> str | None:
    """The text a scheduled time is read from: folded and stripped text, or a datetime's own text."""
    if isinstance(value, str):
        return fold(value).strip()
    if isinstance(value, datetime | np.datetime64):  # pd.Timestamp is a datetime
        return str(pd.Timestamp(value))  # "2017-03-03 10:00:00"; with a fraction or zone it is no plain time
    return None


def parse_scheduled_time(values: pd.Series) -> pd.Series:
    """Parse ``Fecha-I`` strictly as ``YYYY-MM-DD HH:MM:SS`` (see module docstring); anything else becomes NaT."""
    text = [_time_text(v) for v in values]
    plain = [t if t is not None and _PLAIN_TIME.fullmatch(t) else None for t in text]
    parsed = pd.to_datetime(pd.Series(plain, index=values.index, dtype=object), format=TIME_FORMAT, errors="coerce")
    return parsed.astype(TIME_DTYPE)


# The dtype of parsed times, probed once so every path returns the same.
TIME_DTYPE = pd.to_datetime(pd.Series(["2000-01-01 00:00:00"]), format=TIME_FORMAT).dtype


def minutes_late(flights: pd.DataFrame) -> pd.Series:
    """Minutes between scheduled and operated departure (negative when early); the label's source."""
    late = parse_scheduled_time(flights[OPERATED_TIME]) - parse_scheduled_time(flights[SCHEDULED_TIME])
    return late.dt.total_seconds() / 60


class _Memo:
    """Raw value -> normalised text, filled in batches by one of the pandas normalisers above.

    The rule stays in one place (the pandas function); each distinct raw value pays for it once.
    Bounded by MEMO_LIMIT entries and MEMO_MAX_BYTES bytes: past either it starts afresh, and a
    batch too big for it on its own is normalised without being kept.
    """

    def __init__(self, normalise) -> None:
        self.normalise = normalise
        self.values: dict = {}
        self.bytes = 0  # approximate under concurrent requests; only ever reset, never trusted for values

    def lookup(self, raw: list, distinct: set) -> list[str]:
        """Normalise ``raw`` (whose ``distinct`` values are given), calling pandas only for new values."""
        values = self.values  # a local reference: another thread may swap in a fresh dict
        missing = distinct.difference(values)
        if missing:
            ordered = list(missing)
            normalised = self.normalise(pd.Series(ordered, dtype=object)).tolist()
            size = sum(map(sys.getsizeof, ordered)) + sum(map(sys.getsizeof, normalised))
            if len(values) + len(ordered) > MEMO_LIMIT or self.bytes + size > MEMO_MAX_BYTES:
                values = self.values = {}
                self.bytes = 0
            if len(ordered) <= MEMO_LIMIT and size <= MEMO_MAX_BYTES:
                values.update(zip(ordered, normalised, strict=True))
                self.bytes += size
            else:
                values = {**values, **dict(zip(ordered, normalised, strict=True))}
        return list(map(values.__getitem__, raw))


_CATEGORY_MEMO = _Memo(normalise_category)
_FLIGHT_NUMBER_MEMO = _Memo(normalise_flight_number)


def shown(value: object) -> str:
    """``repr`` of a value as an error echoes it: at most ECHO_CHARS characters, then its length."""
    if isinstance(value, str):
        return repr(value) if len(value) <= ECHO_CHARS else f"{value[:ECHO_CHARS]!r}… ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]}… ({len(text)} characters)"


def _example_rows(bad: list[int], values: list, limit: int = 3) -> str:
    shown_rows = [f"row {i}: {shown(values[i])}" for i in bad[:limit]]
    more = len(bad) - len(shown_rows)
    return "; ".join(shown_rows) + (f" (and {more} more)" if more > 0 else "")


def _describe_known(known: Collection[str]) -> str:
    known = sorted(known)
    if len(known) <= 30:
        return "known values: " + ", ".join(known)
    return f"the model knows {len(known)} values, e.g. " + ", ".join(known[:10])


def _is_blank(value: object) -> bool:
    """None, NaN, NA, NaT, or text that is empty once stripped."""
    if isinstance(value, str):
        return not value.strip()
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    return isinstance(value, np.datetime64) and np.isnat(value)


def _text_array(values: list[str]) -> np.ndarray:
    """A numpy array of ``str`` objects (``+`` and lookups work on it as on a pandas string column)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def as_frame(data: object) -> object:
    """The ``inputs``/``instances`` JSON forms as a DataFrame; anything else as it came (``check_batch`` judges).

    Without an input schema MLflow hands them over as parsed: records as a list of dicts of 0-d
    numpy arrays, columns as a dict of 1-d arrays, one flight as a dict of 0-d arrays.
    """

    def scalar(value: object) -> object:
        return value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value

    if isinstance(data, dict) and data and all(isinstance(v, np.ndarray) for v in data.values()):
        dimensions = {v.ndim for v in data.values()}
        if dimensions == {0}:
            return pd.DataFrame([{k: scalar(v) for k, v in data.items()}])
        if dimensions == {1} and len({len(v) for v in data.values()}) == 1:
            return pd.DataFrame(data)
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        return pd.DataFrame.from_records([{k: scalar(v) for k, v in r.items()} for r in data])
    if isinstance(data, list | np.ndarray) and len(data) == 0:
        return pd.DataFrame()  # "inputs": []: an empty batch
    return data


def check_batch(frame: pd.DataFrame) -> None:
    """Refuse what is not a batch of flights the server should score in one request."""
    if not isinstance(frame, pd.DataFrame):
        raise InvalidFlightsError("input", f"expected a table of flights, got {type(frame).__name__}")
    if len(frame) == 0:
        raise InvalidFlightsError("input", "the batch is empty; send at least one flight")
    duplicated = [] if frame.columns.is_unique else frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        name = str(duplicated[0])
        name = name if len(name) <= ECHO_CHARS else shown(name)
        raise InvalidFlightsError(name, f"duplicate column {name}; send each column once")
    if len(frame) > MAX_BATCH_ROWS:
        raise InvalidFlightsError("input", f"{len(frame)} flights exceed the limit of {MAX_BATCH_ROWS} per request")


def _check_text(column: str, values: list, dtype: object, distinct: set | None) -> None:
    """Categories are text: a numeric column, or any list, object, number or boolean, is refused."""
    if _numeric(dtype):
        raise InvalidFlightsError(column, f"expected text, got {dtype} values")
    if distinct is not None and all(type(v) is str for v in distinct):
        return
    wrong = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if wrong:
        found = sorted({type(values[i]).__name__ for i in wrong})
        raise InvalidFlightsError(column, f"expected text, got {', '.join(found)} ({_example_rows(wrong, values)})")


def _check_flight_numbers(values: list, distinct: set | None) -> None:
    """Text or a whole JSON number (``226``, ``226.0``); never a list, object, boolean or ``226.5``."""
    if distinct is not None and all(type(v) is str or type(v) is int for v in distinct):
        return
    wrong = [
        i for i, v in enumerate(values) if not isinstance(v, (str, *_NUMBER_TYPES)) or isinstance(v, bool | np.bool_)
    ]
    if wrong:
        found = sorted({type(values[i]).__name__ for i in wrong})
        raise InvalidFlightsError(
            FLIGHT_NUMBER,
            f"expected a flight number (text or number), got {', '.join(found)} ({_example_rows(wrong, values)})",
        )
    fractional = [
        i
        for i, v in enumerate(values)
        if isinstance(v, float | np.floating) and not (math.isfinite(v) and float(v).is_integer())
    ]
    if fractional:
        examples = _example_rows(fractional, values)
        raise InvalidFlightsError(FLIGHT_NUMBER, f"expected a whole flight number ({examples})")


# Character positions of the plain form: digits everywhere but the separators.
_SEPARATORS = {4: "-", 7: "-", 10: " ", 13: ":", 16: ":"}
_DIGITS = [i for i in range(19) if i not in _SEPARATORS]


def _plain_times(values: list) -> np.ndarray | None:
    """``values`` as datetime64 when every one is text in the plain form exactly (no spaces around), else None.

    Checked on the characters' code points in one numpy pass, then parsed by numpy in one call,
    which refuses impossible dates and times (Feb 30, 24:00) as strictly as pandas.
    """
    if not all(type(v) is str for v in values):
        return None
    codes = np.array(values, dtype="U20").view(np.uint32).reshape(len(values), 20)
    if (codes[:, 19] != 0).any() or (codes[:, 18] == 0).any():
        return None  # not 19 characters
    digits = codes[:, _DIGITS]
    if ((digits < 48) | (digits > 57)).any():
        return None
    if any((codes[:, i] != ord(c)).any() for i, c in _SEPARATORS.items()):
        return None
    try:
        return np.array(values, dtype="datetime64[s]").astype(TIME_DTYPE)
    except ValueError:
        return None


# Up to this many times are parsed one by one in Python (a one-flight request: ~3 us against ~25 us
# for numpy's fixed cost per array operation).
FEW_TIMES = 16


def _few_plain_times(values: list) -> np.ndarray | None:
    """A few times, each text in the plain form and a real time, as ``TIME_DTYPE``; else None (numpy's path decides)."""
    times = []
    for value in values:
        if type(value) is not str or _PLAIN_TIME.fullmatch(value) is None:
            return None
        try:
            times.append(
                datetime(
                    int(value[:4]), int(value[5:7]), int(value[8:10]), int(value[11:13]), int(value[14:16]),
                    int(value[17:19]),
                )
            )  # fmt: skip
        except ValueError:  # Feb 30, hour 24, year 0: numpy's path gives the answer
            return None
    return np.array(times, dtype=TIME_DTYPE)


def parse_times(values: list) -> np.ndarray:
    """Scheduled times as ``TIME_DTYPE`` (NaT where unparsable); the rule is ``parse_scheduled_time``'s.

    Text in the plain form takes numpy's path (10,000 flights: about 2 ms against 19 ms for pandas);
    a batch with any other value (spaces around, another form, not text) is left to pandas' parser
    for the values that are not plain.
    """
    plain = _few_plain_times(values) if len(values) <= FEW_TIMES else _plain_times(values)
    if plain is not None:
        return plain
    stripped = [v.strip() if type(v) is str else None for v in values]
    match = _PLAIN_TIME.fullmatch
    rows = [i for i, v in enumerate(stripped) if v is not None and match(v) is not None]
    times = np.full(len(values), np.datetime64("NaT"), dtype=TIME_DTYPE)
    if rows:
        parsed = _plain_times([stripped[i] for i in rows])
        if parsed is None:
            rows = []
        else:
            times[rows] = parsed
    rest = sorted(set(range(len(values))) - set(rows))
    if rest:
        times[rest] = parse_scheduled_time(pd.Series([values[i] for i in rest], dtype=object)).to_numpy(TIME_DTYPE)
    return times


def column_array(frame: pd.DataFrame, column: str) -> object:
    """A column's values (what ``frame[column].array``/``.tolist()`` read) without building a Series.

    ``frame[column]`` builds a Series, about 20 us a column on pandas 3: a third of a one-flight
    request's validation over seven columns. ``DataFrame._get_column_array`` (pandas >= 1.3) hands
    over the column's own array (the Series' ``_values``, whose ``tolist`` ``Series.tolist`` is);
    without it, the Series.
    """
    getter = getattr(frame, "_get_column_array", None)
    if getter is not None and frame.columns.is_unique:
        try:
            return getter(frame.columns.get_loc(column))
        except (TypeError, KeyError, IndexError):
            pass
    return frame[column]


def _values(array: object) -> list:
    """``array.tolist()``; Arrow-backed text without nulls read by Arrow (1 us, not 6, for one value)."""
    if isinstance(array.dtype, pd.StringDtype) and array.dtype.storage == "pyarrow":
        arrow = array.__arrow_array__()
        if arrow.null_count == 0:  # with nulls, pandas' own list (its NA value, not None)
            return arrow.to_pylist()
    return array.tolist()


def _numeric(dtype: object) -> bool:
    """``pd.api.types.is_numeric_dtype``, answered at once for the text dtypes requests come in."""
    if isinstance(dtype, pd.StringDtype) or (isinstance(dtype, np.dtype) and dtype.kind in "OUS"):
        return False
    return pd.api.types.is_numeric_dtype(dtype)


def _distinct(values: list) -> set | None:
    """The set of distinct values, or None when one is unhashable (a JSON list or object)."""
    try:
        return set(values)
    except TypeError:
        return None


def _check_caps(raw: Mapping[str, list], distinct: Mapping[str, set | None]) -> None:
    """Refuse text longer than its field's cap (FIELD_CAPS), before anything is normalised or cached."""
    for column, (name, cap) in FIELD_CAPS.items():
        if column not in raw:
            continue  # times as datetimes: no text
        values = raw[column]
        unique = distinct[column] if distinct[column] is not None else values
        if any(isinstance(v, str) and len(v) > cap for v in unique):
            rows = [i for i, v in enumerate(values) if isinstance(v, str) and len(v) > cap]
            raise InvalidFlightsError(column, f"longer than {name}={cap} characters ({_example_rows(rows, values)})")


def _check_flight_number_range(values: list, distinct: set) -> None:
    """Flight numbers sent as numbers: 0 to MAX_FLIGHT_NUMBER (``1e20`` is no flight, nor ``-5``)."""

    def outside(value: object) -> bool:
        return not isinstance(value, str) and not 0 <= value <= MAX_FLIGHT_NUMBER

    if any(map(outside, distinct)):
        rows = [i for i, v in enumerate(values) if outside(v)]
        raise InvalidFlightsError(
            FLIGHT_NUMBER,
            f"expected a flight number of at most MAX_FLIGHT_NUMBER_CHARS={MAX_FLIGHT_NUMBER_CHARS} digits "
            f"({_example_rows(rows, values)})",
        )


def _check_flight_number_form(values: list, distinct: set) -> None:
    """Normalised flight numbers are letters and digits only ("A-1", "226.5" and "\u200b226" are refused)."""
    unique = list(distinct)
    forms = _FLIGHT_NUMBER_MEMO.lookup(unique, distinct)
    bad = {v for v, form in zip(unique, forms, strict=True) if FLIGHT_NUMBER_FORM.fullmatch(form) is None}
    if bad:
        rows = [i for i, v in enumerate(values) if v in bad]
        raise InvalidFlightsError(
            FLIGHT_NUMBER, f"expected a flight number of letters and digits ({_example_rows(rows, values)})"
        )


def _datetime_times(column: pd.Series) -> np.ndarray:
    """A tz-naive datetime64 column as ``TIME_DTYPE``; NaT where a value has a fraction of a second.

    The rule of ``parse_scheduled_time`` (a datetime is read as its text), without the text.
    """
    values = column.to_numpy()
    fraction = values.astype("datetime64[s]") != values
    times = values.astype(TIME_DTYPE)
    times[fraction] = np.datetime64("NaT")
    return times


def _time_characters(column: pd.Series) -> np.ndarray | None:
    """Text times as an (n, 19) array of ASCII codes; None unless every value is 19 ASCII characters.

    Arrow-backed text (pandas' ``str``) is read from its buffers without making a Python string
    per value; an object column of ``str`` is converted once to fixed-width numpy text.
    """
    dtype = column.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        array = pa.chunked_array(column.array.__arrow_array__()).combine_chunks()
        if array.null_count or not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
            return None
        offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
        _, offsets_buffer, data_buffer = array.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype=offset_type, count=array.offset + len(array) + 1)
        offsets = offsets[array.offset :]
        start = int(offsets[0])
        if (np.diff(offsets) != 19).any():
            return None
        data = np.frombuffer(data_buffer, dtype=np.uint8, count=start + 19 * len(array))
        return data[start:].reshape(len(array), 19)
    values = column.to_numpy()
    if values.dtype != object or pd.api.types.infer_dtype(values, skipna=False) != "string":
        return None
    codes = np.array(values, dtype="U20").view(np.uint32).reshape(len(values), 20)
    if (codes[:, 19] != 0).any() or (codes[:, :19] - 1 >= 127).any():  # 20 characters, or NUL / non-ASCII
        return None
    return codes[:, :19].astype(np.uint8)


_SEPARATOR_CODES = np.frombuffer("".join(_SEPARATORS.values()).encode(), dtype=np.uint8)
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _parse_time_characters(chars: np.ndarray) -> np.ndarray | None:
    """(n, 19) ASCII codes of the plain form as ``TIME_DTYPE``; None if any is not the form or not a real time.

    The checks of numpy's own parser (month 1-12, the month's days with leap years, hour 0-23,
    minute and second 0-59: no leap second), on whole columns rather than value by value; the day
    number is the proleptic Gregorian calendar's (H. Hinnant's ``days_from_civil``).
    """
    columns = np.ascontiguousarray(chars.T)  # one row per character position: each read in one pass
    if (columns[list(_SEPARATORS)] != _SEPARATOR_CODES[:, None]).any():
        return None
    if (columns[_DIGITS] - np.uint8(48) > 9).any():  # below "0" wraps round to a large number
        return None

    def number(first: int, count: int) -> np.ndarray:
        value = columns[first].astype(np.int32) - 48
        for k in range(first + 1, first + count):
            value = value * 10 + columns[k] - 48
        return value

    year, month, day = number(0, 4), number(5, 2), number(8, 2)
    hour, minute, second = number(11, 2), number(14, 2), number(17, 2)
    if ((month < 1) | (month > 12) | (hour > 23) | (minute > 59) | (second > 59) | (day < 1)).any():
        return None
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    if (day > _DAYS_IN_MONTH[month - 1] + ((month == 2) & leap)).any():
        return None
    march_year = year - (month <= 2)  # years counted from March: the leap day comes last
    era = march_year // 400
    year_of_era = march_year - era * 400
    day_of_year = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146_097 + day_of_era - 719_468  # 1970-01-01 is day 0
    seconds = days.astype(np.int64) * 86_400 + (hour * 3_600 + minute * 60 + second)
    per_second = np.timedelta64(1, "s") // np.timedelta64(1, np.datetime_data(TIME_DTYPE)[0])
    return (seconds * per_second).view(TIME_DTYPE)


def _distinct_times(column: pd.Series) -> np.ndarray | None:
    """A whole column of valid times in range as ``TIME_DTYPE``, or None (the per-value path then names the field)."""
    if column.dtype.kind == "M":
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            return None
        times = _datetime_times(column)
    else:
        chars = _time_characters(column)
        times = None if chars is None else _parse_time_characters(chars)
        if times is None:
            return None
    if np.isnat(times).any():
        return None
    years = times.astype("datetime64[Y]").astype(np.int64) + 1970
    if ((years < MIN_YEAR) | (years > MAX_YEAR)).any():
        return None
    return times


def _factorized(column: pd.Series, numbers: bool) -> tuple[np.ndarray, list] | None:
    """Codes and distinct values of a column of text (or, for ``numbers``, text and whole numbers) without nulls."""
    dtype = column.dtype
    if numbers and isinstance(dtype, np.dtype) and dtype.kind in "iu":  # numpy integers: no nulls
        codes, uniques = pd.factorize(column.to_numpy())
        return codes, uniques.tolist()
    if not (pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype)):
        return None
    try:
        codes, uniques = pd.factorize(column)
    except TypeError:  # a list or dict among the values
        return None
    if len(codes) and codes.min() < 0:  # a null
        return None
    values = uniques.tolist()
    allowed = (str, int) if numbers else (str,)
    if not all(type(v) in allowed for v in values):  # never a bool, float, list, ...
        return None
    return codes, values


def _clean_distinct(frame: pd.DataFrame) -> Columns | None:
    """``clean_columns`` on each column's distinct values, for a batch every value of which is plainly valid.

    Returns None at the first value the per-value path might refuse or read differently (a null,
    a blank, a number of another type, a value over its cap, a time not in the plain form...):
    that path then gives the same answer, or the error naming the field. As there, nothing is
    normalised or cached before every value passed its type, cap and range checks.
    """
    found = {}
    for column in (FLIGHT_NUMBER, *CATEGORY_COLUMNS):
        factorized = _factorized(frame[column], numbers=column == FLIGHT_NUMBER)
        if factorized is None:
            return None
        cap = FIELD_CAPS[column][1]
        if any(type(v) is str and (len(v) > cap or not v.strip()) for v in factorized[1]):
            return None
        found[column] = factorized
    if any(type(v) is int and not 0 <= v <= MAX_FLIGHT_NUMBER for v in found[FLIGHT_NUMBER][1]):
        return None
    times = _distinct_times(frame[SCHEDULED_TIME])
    if times is None:
        return None
    columns = Columns({SCHEDULED_TIME: times})
    for column, (codes, values) in found.items():
        memo = _FLIGHT_NUMBER_MEMO if column == FLIGHT_NUMBER else _CATEGORY_MEMO
        normal = memo.lookup(values, set(values))
        if column == FLIGHT_NUMBER and any(FLIGHT_NUMBER_FORM.fullmatch(v) is None for v in normal):
            return None
        distinct = _text_array(normal)
        columns[column] = distinct[codes]
        columns.factors[column] = (codes, distinct)
    return columns


def clean_columns(frame: pd.DataFrame) -> Columns:
    """The required columns checked, parsed and normalised, as numpy arrays; or InvalidFlightsError.

    Extra columns are ignored. Nothing is defaulted: a missing column, a value over its field's
    length cap, a null or blank required value, a value of the wrong type, a flight number out of
    range or not of letters and digits, or an unparsable or out-of-range time is an error naming
    the field and the first rows. Categories are not checked against a vocabulary here.
    ``Fecha-I`` may be text, datetimes in an object column, or a datetime64 column (``pd.read_csv``
    with ``parse_dates``, Spark's timestamps); ``Vlo-I`` text or numbers (an int64 column).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidFlightsError(missing[0], f"required column missing (missing: {missing})")
    if len(frame) >= DISTINCT_PATH_ROWS:
        columns = _clean_distinct(frame)
        if columns is not None:
            return columns
    arrays = {c: column_array(frame, c) for c in REQUIRED_COLUMNS}
    time_column = arrays[SCHEDULED_TIME]
    datetimes = time_column.dtype.kind == "M" and not isinstance(time_column.dtype, pd.DatetimeTZDtype)
    # A datetime64 column is checked with numpy, never turned into a list of Timestamps.
    raw = {c: _values(a) for c, a in arrays.items() if not (datetimes and c == SCHEDULED_TIME)}
    # Checks run on each column's distinct values (a few hundred in 100,000 flights), rows are
    # looked for only once a check fails.
    distinct = {c: _distinct(values) for c, values in raw.items()}
    _check_caps(raw, distinct)
    for column in REQUIRED_COLUMNS:
        if column not in raw:
            blank = np.flatnonzero(np.isnat(time_column.to_numpy())).tolist()
            if blank:
                raise InvalidFlightsError(column, f"null or empty value ({_example_rows(blank, time_column.tolist())})")
            continue
        values = raw[column]
        unique = distinct[column] if distinct[column] is not None else values
        if any(map(_is_blank, unique)):
            blank = [i for i, v in enumerate(values) if _is_blank(v)]
            raise InvalidFlightsError(column, f"null or empty value ({_example_rows(blank, values)})")
    for column in CATEGORY_COLUMNS:
        _check_text(column, raw[column], arrays[column].dtype, distinct[column])
    _check_flight_numbers(raw[FLIGHT_NUMBER], distinct[FLIGHT_NUMBER])
    _check_flight_number_range(raw[FLIGHT_NUMBER], distinct[FLIGHT_NUMBER])
    times = _datetime_times(time_column) if datetimes else parse_times(raw[SCHEDULED_TIME])
    unparsable = np.flatnonzero(np.isnat(times)).tolist()
    if unparsable:
        shown_times = raw.get(SCHEDULED_TIME) or time_column.tolist()
        raise InvalidFlightsError(
            SCHEDULED_TIME,
            f"expected a time as YYYY-MM-DD HH:MM:SS ({_example_rows(unparsable, shown_times)})",
        )
    years = times.astype("datetime64[Y]").astype(np.int64) + 1970
    out_of_range = np.flatnonzero((years < MIN_YEAR) | (years > MAX_YEAR)).tolist()
    if out_of_range:
        shown_times = raw.get(SCHEDULED_TIME) or time_column.tolist()
        raise InvalidFlightsError(
            SCHEDULED_TIME,
            f"year outside {MIN_YEAR}-{MAX_YEAR} ({_example_rows(out_of_range, shown_times)})",
        )
    _check_flight_number_form(raw[FLIGHT_NUMBER], distinct[FLIGHT_NUMBER])
    numbers = _FLIGHT_NUMBER_MEMO.lookup(raw[FLIGHT_NUMBER], distinct[FLIGHT_NUMBER])
    columns = Columns({SCHEDULED_TIME: times, FLIGHT_NUMBER: _text_array(numbers)})
    for column in CATEGORY_COLUMNS:
        columns[column] = _text_array(_CATEGORY_MEMO.lookup(raw[column], distinct[column]))
    return columns


def clean_flights(frame: pd.DataFrame) -> pd.DataFrame:
    """``clean_columns`` as a DataFrame (for etl, training and evaluation)."""
    columns = clean_columns(frame.reset_index(drop=True))
    return pd.DataFrame({c: v if c == SCHEDULED_TIME else pd.array(v, dtype="string") for c, v in columns.items()})


def unknown_columns(clean: Mapping, vocabulary: Mapping[str, Collection[str]]) -> dict[str, np.ndarray]:
    """Per categorical column, True for the flights whose value is outside the training vocabulary."""
    unknown = {}
    factors = getattr(clean, "factors", {})
    for column in CATEGORY_COLUMNS:
        if column in factors:  # judged on the distinct values, spread to the flights by their codes
            codes, distinct = factors[column]
            known = vocabulary[column]
            outside = np.fromiter((v not in known for v in distinct.tolist()), dtype=bool, count=len(distinct))
            unknown[column] = outside[codes] if outside.any() else np.zeros(len(codes), dtype=bool)
            continue
        values = clean[column]
        never_seen = set(values).difference(vocabulary[column])
        if never_seen:
            unknown[column] = np.fromiter((v in never_seen for v in values), dtype=bool, count=len(values))
        else:
            unknown[column] = np.zeros(len(values), dtype=bool)
    return unknown


def unknown_categories(clean: Mapping, vocabulary: Mapping[str, Collection[str]]) -> np.ndarray:
    """Per flight, True when any categorical value is outside the training vocabulary."""
    return np.logical_or.reduce(list(unknown_columns(clean, vocabulary).values()))


def scorable(clean: Mapping, vocabulary: Mapping[str, Collection[str]]) -> np.ndarray:
    """Per validated flight, whether a model of ``vocabulary`` can score it: every category seen in training.

    The one answer to "which flights can this model score" (train's holdout, evaluate's splits,
    the gate, promote's and the bench's real flights, monitor's unseen count).
    """
    return ~np.asarray(unknown_categories(clean, vocabulary))


def unknown_field_names(unknown: Mapping[str, np.ndarray]) -> list[str]:
    """Per flight, the comma-separated fields whose value the model never saw ("" when none)."""
    names = np.full(len(next(iter(unknown.values()))), "", dtype=object)
    for column, mask in unknown.items():
        if mask.any():
            names[mask] = [f"{n},{column}" if n else column for n in names[mask]]
    return names.tolist()


def check_known_categories(clean: Mapping, unknown: Mapping[str, np.ndarray], vocabulary: Mapping) -> None:
    """Raise InvalidFlightsError naming the first column with a value the model never saw."""
    for column in CATEGORY_COLUMNS:
        if not unknown[column].any():
            continue
        rows = np.flatnonzero(unknown[column]).tolist()
        if rows:
            raise InvalidFlightsError(
                column,
                f"value never seen in training ({_example_rows(rows, list(clean[column]))}); "
                + _describe_known(vocabulary[column]),
            )


def check_unknown_categories_choice(choice: object) -> str:
    """The model parameter ``unknown_categories``, refused (a 400 naming it) unless a known choice."""
    if choice not in UNKNOWN_CATEGORY_CHOICES:
        raise InvalidFlightsError(
            "unknown_categories", f"expected one of {', '.join(UNKNOWN_CATEGORY_CHOICES)}, got {shown(choice)}"
        )
    return choice


def check_explain_choice(choice: object) -> bool:
    """The model parameter ``explain``, refused (a 400 naming it) unless a boolean."""
    if not isinstance(choice, bool | np.bool_):
        raise InvalidFlightsError(EXPLAIN_PARAM, f"expected true or false, got {shown(choice)}")
    return bool(choice)


def validate_request(
    frame: pd.DataFrame, vocabulary: Mapping[str, Collection[str]], unknown_categories: str = "refuse"
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Everything serving checks before scoring: the cleaned columns and, per column, the unseen values.

    With ``unknown_categories="refuse"`` a value the model never saw is an error naming the field;
    with ``"score"`` it is returned as unseen (its feature code is the "never seen" code).
    """
    check_unknown_categories_choice(unknown_categories)
    frame = as_frame(frame)
    check_batch(frame)
    clean = clean_columns(frame)
    unknown = unknown_columns(clean, vocabulary)
    if unknown_categories == "refuse":
        check_known_categories(clean, unknown, vocabulary)
    return clean, unknown


def model_signature():
    """The served model's signature: no input schema, odds out, options as params.

    The flights' contract is ``clean_columns`` (REQUIRED_COLUMNS, OPTIONAL_COLUMNS, docs/serving.md),
    not MLflow's per-column type check: that refuses what a schedule is as pandas or Spark read it
    (an all-digit ``Vlo-I`` is int64: "Can not safely convert int64 to <U0"; ``Fecha-I`` parsed as
    datetime64), and MLflow's ``AnyType``, which accepts them, walks every value in Python (about
    50-85 ms more per 10,000-flight request, seconds per million in ``score``) and makes MLflow
    refuse CSV bodies. Without it, pandas, HTTP and ``spark_udf`` hand the model the frame as it
    is and ``clean_columns`` accepts text, numbers and datetimes, normalises them to one form and
    names the field of anything else.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    outputs = [ColSpec("double", "delay_probability"), ColSpec("long", "delay")]
    outputs.append(ColSpec("string", UNKNOWN_FIELDS, required=False))
    # With explain=true (pyfunc.explain): the three factors in words and their numbers as JSON text.
    outputs += [ColSpec("string", c, required=False) for c in ("top_factors", "factor_values")]
    params = ParamSchema(
        [ParamSpec("unknown_categories", "string", "refuse"), ParamSpec(EXPLAIN_PARAM, "boolean", False)]
    )
    return ModelSignature(inputs=None, outputs=Schema(outputs), params=params)
