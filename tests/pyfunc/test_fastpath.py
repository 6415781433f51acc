"""The fast path against the straightforward pandas path: same cleaned flights, same errors, same odds."""

import types

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from pyfunc import fastpath
from pyfunc.features import build_features, fit_feature_spec
from pyfunc.model import BOOSTER_ARTIFACT, SPEC_ARTIFACT, FlightDelayModel
from pyfunc.schema import (
    CATEGORY_COLUMNS,
    FLIGHT_NUMBER,
    REQUIRED_COLUMNS,
    SCHEDULED_TIME,
    InvalidFlightsError,
    clean_flights,
    validate_request,
)
from steps import etl, train
from tests.factory import make_flights

HYPER = {**train.HYPER_DEFAULTS, "n_estimators": 40}


@pytest.fixture(scope="module")
def spec():
    return fit_feature_spec(clean_flights(make_flights(days=60, seed=1)))


@pytest.fixture(scope="module")
def requests_frame() -> pd.DataFrame:
    """4,000 flights as the scoring server hands them over: string columns, a few messy spellings."""
    frame = make_flights(days=100, seed=5).drop(columns=["Fecha-O"]).astype("str")
    rng = np.random.default_rng(3)
    rows = rng.choice(len(frame), 600, replace=False)
    messy = {
        "Emp-I": lambda v: f"  {v.lower()} ",
        "OPERA": lambda v: v.upper().replace(" ", "  \t "),
        "SIGLADES": lambda v: f"\u00a0{v}",  # NBSP: NFKC turns it into a space, then stripped
        "Des-I": lambda v: "".join(chr(ord(c) + 0xFEE0) for c in v),  # full-width letters, NFKC folds them
        FLIGHT_NUMBER: lambda v: f"0{v}.0",
        SCHEDULED_TIME: lambda v: f" {v}\t",
    }
    for i, (column, change) in enumerate(messy.items()):
        for row in rows[i::6]:
            frame.loc[row, column] = change(frame.loc[row, column])
    return frame


def as_frame(clean: dict | pd.DataFrame) -> pd.DataFrame:
    """The fast path's numpy columns as the DataFrame the straightforward path returns."""
    if isinstance(clean, pd.DataFrame):
        return clean
    return pd.DataFrame(
        {c: v if c == SCHEDULED_TIME else pd.array(v.tolist(), dtype=fastpath._TEXT_DTYPE) for c, v in clean.items()}
    )


def outcome(validate, frame: pd.DataFrame, vocabulary: dict) -> tuple:
    """("ok", cleaned) or ("error", field, message)."""
    try:
        return ("ok", as_frame(validate(frame, vocabulary)))
    except InvalidFlightsError as err:
        return ("error", err.field, err.message)


def assert_same(frame: pd.DataFrame, vocabulary: dict, label: str) -> None:
    slow = outcome(validate_request, frame, vocabulary)
    fast = outcome(fastpath.validate_request_fast, frame, vocabulary)
    assert slow[0] == fast[0], f"{label}: straightforward path gave {slow[:2]}, fast path {fast[:2]}"
    if slow[0] == "ok":
        assert_frame_equal(fast[1], slow[1], obj=label)
    else:
        assert fast[1:] == slow[1:], f"{label}: different error"


def test_fast_path_cleans_thousands_of_flights_exactly_like_pandas(spec, requests_frame):
    vocabulary = spec.vocabulary
    fast = fastpath.clean_known_flights(requests_frame, vocabulary)
    assert fast is not None, "the fast path should vouch for valid (if messy) flights, not fall back"
    assert_frame_equal(as_frame(fast), validate_request(requests_frame, vocabulary))
    for size in (1, 2, 17, 100):
        for start in range(0, len(requests_frame), 397):
            chunk = requests_frame.iloc[start : start + size]
            assert fastpath.clean_known_flights(chunk, vocabulary) is not None
            assert_same(chunk, vocabulary, f"rows {start}..{start + size}")


def test_indexed_spec_gives_the_same_features(spec, requests_frame):
    clean = validate_request(requests_frame, spec.vocabulary)
    indexed = fastpath.with_code_tables(spec)
    np.testing.assert_array_equal(build_features(clean, indexed), build_features(clean, spec))
    for size in (1, 3, 64, 65, 500):  # code tables answer from a dict up to 64 flights, from an Index beyond
        chunk = requests_frame.head(size)
        fast = fastpath.clean_known_flights(chunk, spec.vocabulary)
        expected = build_features(clean.head(size), spec)
        np.testing.assert_array_equal(build_features(fast, indexed), expected)
        # A request the fast path hands back to pandas (say, numeric flight numbers) meets the tables too.
        np.testing.assert_array_equal(build_features(clean.head(size), indexed), expected)
    assert spec.vocabulary["Emp-I"] == sorted(spec.vocabulary["Emp-I"]), "the original spec is left as it was"
    assert isinstance(spec.flight_keys, list)


BAD_VALUES = {
    SCHEDULED_TIME: [
        None,
        "",
        "   ",
        "2017-13-01 10:00:00",
        "2017-02-29 10:00:00",
        "2017-01-01 24:00:00",
        "2017-01-01 23:59:60",
        "2017/01/01 10:00:00",
        "2017-01-01T10:00:00",
        "2017-1-01 10:00:00",
        "17-01-01 10:00:00",
        "1999-12-31 23:00:00",
        "2101-01-01 00:00:00",
        "\u0662017-01-01 10:00:00",  # an Arabic-Indic digit
        "2017-01-01 10:00",
        "2017-01-01 10:00:00.5",
        "\n2017-01-01 10:00:00\n",
    ],
    FLIGHT_NUMBER: [None, "", "  ", 226, 226.0, "0", "00", "A-1", float("nan")],
    "Emp-I": [None, "", " ", "ZZZ", "AA A", 7, "AAA\u200b"],
    "Des-I": [None, "nowhere", "ZZ AA"],
    "TIPOVUELO": [None, "X", "n"],
    "OPERA": [None, "Nobody Air", "alpha  air"],
    "SIGLADES": [None, "Atlantis", "\u3000borealis\u3000"],
}


@pytest.mark.parametrize("column", list(BAD_VALUES))
def test_fast_path_refuses_and_accepts_exactly_what_pandas_does(spec, requests_frame, column):
    rng = np.random.default_rng(len(column))
    for value in BAD_VALUES[column]:
        for size in (1, 5, 300):
            frame = requests_frame.sample(size, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)
            frame = frame.astype(object)
            frame.loc[int(rng.integers(size)), column] = value
            assert_same(frame, spec.vocabulary, f"{column}={value!r} in {size} flights")


def test_missing_columns_and_batches_fail_the_same_way(spec, requests_frame):
    for column in REQUIRED_COLUMNS:
        assert_same(requests_frame.head(3).drop(columns=[column]), spec.vocabulary, f"without {column}")
    assert_same(requests_frame.head(0), spec.vocabulary, "empty batch")
    numeric = requests_frame.head(4).copy()
    numeric["TIPOVUELO"] = [1, 2, 3, 4]
    assert_same(numeric, spec.vocabulary, "numeric category column")


def test_big_batches_take_the_pandas_path(spec, requests_frame, monkeypatch):
    monkeypatch.setattr(fastpath, "FAST_PATH_MAX_ROWS", 10)
    assert fastpath.clean_known_flights(requests_frame.head(11), spec.vocabulary) is None
    assert_same(requests_frame.head(11), spec.vocabulary, "11 flights over a limit of 10")


def test_memo_stays_bounded_and_correct(spec, requests_frame, monkeypatch):
    monkeypatch.setattr(fastpath, "CACHE_LIMIT", 5)
    for start in range(0, 200, 20):
        assert_same(requests_frame.iloc[start : start + 20], spec.vocabulary, f"rows {start}.. with a tiny memo")
    assert len(fastpath._CATEGORY_MEMO.values) <= 5 + 20 * len(CATEGORY_COLUMNS)


@pytest.fixture(scope="module")
def loaded_model(tmp_path_factory):
    """A small real booster and spec, loaded through ``load_context`` as the server does."""
    flights = make_flights(days=60, seed=11)
    flights["delay"] = etl.delay_target(flights)
    fitted, _ = train.fit_model(flights, HYPER)
    folder = tmp_path_factory.mktemp("model")
    fitted.booster.save_model(str(folder / "booster.ubj"))
    fitted.spec.save(str(folder / "spec.json"))
    model = FlightDelayModel()
    context = types.SimpleNamespace(
        artifacts={BOOSTER_ARTIFACT: str(folder / "booster.ubj"), SPEC_ARTIFACT: str(folder / "spec.json")}
    )
    model.load_context(context)
    return model


def test_model_outputs_are_identical_on_both_paths(loaded_model, requests_frame):
    assert loaded_model.fast_path, "the fast path is on by default"
    frames = [requests_frame] + [requests_frame.iloc[i : i + n] for i, n in ((0, 1), (5, 1), (40, 100), (900, 7))]
    for frame in frames:
        loaded_model.fast_path = True
        fast = loaded_model.predict(None, frame)
        loaded_model.fast_path = False
        slow = loaded_model.predict(None, frame)
        assert_frame_equal(fast, slow, check_exact=True, obj=f"{len(frame)} flights")
    loaded_model.fast_path = True


def test_model_errors_are_identical_on_both_paths(loaded_model, requests_frame):
    bad = requests_frame.head(3).astype(object).copy()
    bad.loc[1, "Emp-I"] = "ZZZ"
    errors = []
    for fast in (True, False):
        loaded_model.fast_path = fast
        with pytest.raises(InvalidFlightsError) as caught:
            loaded_model.predict(None, bad)
        errors.append((caught.value.field, caught.value.message))
    loaded_model.fast_path = True
    assert errors[0] == errors[1] and errors[0][0] == "Emp-I", errors
