"""The one normalisation rule for categorical values and flight numbers, and the memo that applies it.

Categorical values (airline, destination, flight type, city): Unicode NFKC, surrounding
whitespace stripped, inner runs of whitespace collapsed to one space, upper-cased. Flight numbers
are NFKC-folded with digits of any script read as ASCII, trimmed, upper-cased and written without
leading zeros or a trailing ``.0`` (``"0226"``, ``226``, ``"226.0"`` and ``"２２６"`` are the same
flight). The rule is written once, as pandas functions; validation reaches it through the
memos here, so each distinct raw value pays for it once. The memos are bounded in entries and
bytes: odd traffic cannot grow a worker's memory.
"""

from __future__ import annotations

import math
import re
import sys
import unicodedata

import numpy as np
import pandas as pd

# Memoised normalisations are dropped when a memo grows past this many entries or bytes (the
# values' and their normal forms' sys.getsizeof): bounded memory under odd traffic.
MEMO_LIMIT = 50_000
MEMO_MAX_BYTES = 8 * 1024 * 1024


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


class Memo:
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


CATEGORY_MEMO = Memo(normalise_category)
FLIGHT_NUMBER_MEMO = Memo(normalise_flight_number)
