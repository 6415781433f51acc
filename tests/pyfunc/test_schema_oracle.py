"""``schema.clean_columns`` against the pandas oracle: same cleaned flights, same errors, every form."""

import datetime
import json
import sys

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlflow.pyfunc import scoring_server
from pandas.testing import assert_frame_equal

from pyfunc import normalise, schema, times
from pyfunc.coded_spec import CodedSpec, CodeTable
from pyfunc.features import FEATURE_NAMES, build_features, fit_feature_spec
from pyfunc.fields import CATEGORY_COLUMNS, FLIGHT_NUMBER, REQUIRED_COLUMNS, SCHEDULED_TIME, InvalidFlightsError
from pyfunc.model import FlightDelayModel
from skyprophet.science import fit, raw_flights, recipe
from tests.factory import make_flights
from tests.pyfunc import oracle

HYPER = recipe.Recipe(n_estimators=40)


@pytest.fixture(autouse=True, params=["per value", "distinct values"])
def validation_path(request, monkeypatch):
    """Every test twice: batches cleaned value by value, and on each column's distinct values (any size)."""
    monkeypatch.setattr(schema, "DISTINCT_PATH_ROWS", 10**9 if request.param == "per value" else 1)
    return request.param


@pytest.fixture(scope="module")
def spec():
    return fit_feature_spec(oracle.clean_flights(make_flights(days=60, seed=1)))


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


def number_forms(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The flight number as clients send it: text, JSON integers, JSON floats, a mixture."""
    numbers = frame[FLIGHT_NUMBER].str.strip().str.replace(r"\.0$", "", regex=True).astype(int)
    mixed = frame[FLIGHT_NUMBER].astype(object).copy()
    mixed.iloc[::2] = numbers.iloc[::2].tolist()
    return {
        "text": frame,
        "datetime64 times": frame.assign(**{SCHEDULED_TIME: pd.to_datetime(frame[SCHEDULED_TIME].str.strip())}),
        "int64 column": frame.assign(**{FLIGHT_NUMBER: numbers}),
        "float64 column": frame.assign(**{FLIGHT_NUMBER: numbers.astype(float)}),
        "ints in an object column": frame.assign(**{FLIGHT_NUMBER: numbers.astype(object)}),
        "text and numbers mixed": frame.assign(**{FLIGHT_NUMBER: mixed}),
    }


def as_frame(clean: dict) -> pd.DataFrame:
    """``clean_columns``' numpy columns as the DataFrame the oracle returns."""
    return pd.DataFrame({c: v if c == SCHEDULED_TIME else pd.array(v, dtype="string") for c, v in clean.items()})


def outcome(validate, frame: pd.DataFrame, vocabulary: dict) -> tuple:
    """("ok", cleaned) or ("error", field, message)."""
    try:
        clean = validate(frame, vocabulary)
        return ("ok", clean if isinstance(clean, pd.DataFrame) else as_frame(clean[0]))
    except InvalidFlightsError as err:
        return ("error", err.field, err.message)


def assert_same(frame: pd.DataFrame, vocabulary: dict, label: str) -> None:
    expected = outcome(oracle.validate_request, frame, vocabulary)
    got = outcome(schema.validate_request, frame, vocabulary)
    assert expected[0] == got[0], f"{label}: the oracle gave {expected[:2]}, clean_columns {got[:2]}"
    if expected[0] == "ok":
        assert_frame_equal(got[1], expected[1], obj=label)
    else:
        assert got[1:] == expected[1:], f"{label}: different error"


def test_thousands_of_flights_clean_exactly_like_the_oracle_in_every_number_form(spec, requests_frame):
    for form, frame in number_forms(requests_frame).items():
        assert_same(frame, spec.vocabulary, f"{form}, all flights")
        for size in (1, 2, 17, 100):
            for start in range(0, len(frame), 797):
                assert_same(frame.iloc[start : start + size], spec.vocabulary, f"{form}, rows {start}+{size}")


def test_training_frames_clean_like_the_oracle(spec, requests_frame):
    assert_frame_equal(schema.clean_flights(requests_frame), oracle.clean_flights(requests_frame))
    shuffled = requests_frame.sample(frac=1, random_state=0)  # any index, as etl's filtered frames have
    assert_frame_equal(schema.clean_flights(shuffled), oracle.clean_flights(shuffled))


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
        "２０１７-０３-０３ ２３:５９:００",  # full-width digits: NFKC reads them as the plain time
        "2017-03-03 23:59:60",  # a leap second is no scheduled time (pandas reads it as the next day)
        pd.Timestamp("2017-03-03 10:00:00"),
        pd.Timestamp("2017-03-03 10:00:00.5"),
        pd.Timestamp("2017-03-03 10:00:00", tz="UTC"),
        " " * 20 + "2017-03-03 10:00:00",  # over MAX_TIME_CHARS
        20170101,
        True,
        ["2017-01-01 10:00:00"],
    ],
    FLIGHT_NUMBER: [
        None,
        "",
        "  ",
        226,
        226.0,
        226.5,
        float("inf"),
        "0",
        "00",
        "A-1",
        float("nan"),
        True,
        [1],
        {"n": 1},
        "２２６",
        "\u0662\u0662\u0666",
        "\u200b226",
        "226.5",
        "1e20",
        1e20,
        10**20,
        -5,
        "12345678901",  # over MAX_FLIGHT_NUMBER_CHARS
    ],
    "Emp-I": [None, "", " ", "ZZZ", "AA A", 7, 7.5, False, "AAA\u200b", ["AAA"]],
    "Des-I": [None, "nowhere", "ZZ AA", {"a": 1}, "Z" * 65, "Z" * 5_000_000],
    "TIPOVUELO": [None, "X", "n", 1],
    "OPERA": [None, "Nobody Air", "alpha  air"],
    "SIGLADES": [None, "Atlantis", "\u3000borealis\u3000"],
}


@pytest.mark.parametrize("column", list(BAD_VALUES))
def test_refuses_and_accepts_exactly_what_the_oracle_does(spec, requests_frame, column):
    rng = np.random.default_rng(len(column))
    for value in BAD_VALUES[column]:
        for size in (1, 5, 300):
            frame = requests_frame.sample(size, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)
            values = frame[column].astype(object).tolist()
            values[int(rng.integers(size))] = value  # any Python value, lists and dicts too
            frame[column] = pd.Series(values, dtype=object)
            assert_same(frame, spec.vocabulary, f"{column}={value!r} in {size} flights")


def test_missing_columns_typed_columns_and_batches_fail_the_same_way(spec, requests_frame):
    for column in REQUIRED_COLUMNS:
        assert_same(requests_frame.head(3).drop(columns=[column]), spec.vocabulary, f"without {column}")
    assert_same(requests_frame.head(0), spec.vocabulary, "empty batch")
    for values in ([1, 2, 3, 4], [1.5, 2.5, 3.5, 4.5], [True, False, True, True]):
        typed = requests_frame.head(4).copy()
        typed["TIPOVUELO"] = values
        assert_same(typed, spec.vocabulary, f"category column of {type(values[0]).__name__}")


def test_unknown_categories_are_scored_as_unseen_and_named_per_flight(spec, requests_frame):
    frame = requests_frame.head(6).copy()
    frame.loc[1, "Emp-I"] = "ZZZ"
    frame.loc[4, "Des-I"] = "NOWHERE"
    frame.loc[4, "OPERA"] = "Nobody Air"
    with pytest.raises(InvalidFlightsError) as caught:
        schema.validate_request(frame, spec.vocabulary)
    assert caught.value.field == "Emp-I", "refuse (the default) names the first unknown field"
    clean, unknown = schema.validate_request(frame, spec.vocabulary, "score")
    names = schema.unknown_field_names(unknown)
    assert names == ["", "Emp-I", "", "", "Des-I,OPERA", ""], names
    codes = build_features(clean, spec)[:, FEATURE_NAMES.index("Emp-I_code")]
    assert codes[1] == len(spec.vocabulary["Emp-I"]), "an unseen airline gets the 'never seen' code"
    with pytest.raises(InvalidFlightsError, match="unknown_categories.*refuse, score"):
        schema.validate_request(frame, spec.vocabulary, "maybe")


# (field, a look-alike, the plain form): the same flight, whatever the memos saw first.
SAME_FLIGHT = [
    (FLIGHT_NUMBER, "２２６", "226"),  # full-width digits
    (FLIGHT_NUMBER, "\u0662\u0662\u0666", "226"),  # Arabic-Indic digits
    (FLIGHT_NUMBER, "0226", "226"),
    (FLIGHT_NUMBER, "226.0", "226"),
    (FLIGHT_NUMBER, 226, "226"),
    (FLIGHT_NUMBER, 226.0, "226"),
    (FLIGHT_NUMBER, np.int64(226), "226"),
    (FLIGHT_NUMBER, "\u00a0226\u3000", "226"),  # no-break and ideographic spaces
    (FLIGHT_NUMBER, "989p", "989P"),
    (SCHEDULED_TIME, "２０１７-０３-０３ ２３:５９:００", "2017-03-03 23:59:00"),
    (SCHEDULED_TIME, pd.Timestamp("2017-03-03 23:59:00"), "2017-03-03 23:59:00"),
    (SCHEDULED_TIME, " 2017-03-03 23:59:00\n", "2017-03-03 23:59:00"),
    ("OPERA", "ｓｋｙ\u00a0ａｉｒｌｉｎｅ", "Sky Airline"),
    ("Emp-I", " sky ", "SKY"),
]
# (field, a look-alike, words of the error): refused, never read as another flight.
REFUSED = [
    (SCHEDULED_TIME, "2017-03-03 23:59:60", "YYYY-MM-DD HH:MM:SS"),
    (SCHEDULED_TIME, pd.Timestamp("2017-03-03 23:59:00.5"), "YYYY-MM-DD HH:MM:SS"),
    (SCHEDULED_TIME, pd.Timestamp("2017-03-03 23:59:00", tz="America/Santiago"), "YYYY-MM-DD HH:MM:SS"),
    (FLIGHT_NUMBER, 1e20, "MAX_FLIGHT_NUMBER_CHARS=10 digits"),
    (FLIGHT_NUMBER, 10**20, "MAX_FLIGHT_NUMBER_CHARS=10 digits"),
    (FLIGHT_NUMBER, -226, "MAX_FLIGHT_NUMBER_CHARS=10 digits"),
    (FLIGHT_NUMBER, "226.5", "letters and digits"),
    (FLIGHT_NUMBER, "2.26E2", "letters and digits"),
    (FLIGHT_NUMBER, "\u200b226", "letters and digits"),  # a zero-width space
    (FLIGHT_NUMBER, "2" * 11, "MAX_FLIGHT_NUMBER_CHARS=10"),
    ("Des-I", "Z" * 65, "MAX_CATEGORY_CHARS=64"),
    (SCHEDULED_TIME, np.datetime64("2017-03-03"), "YYYY-MM-DD HH:MM:SS"),  # a day, not its midnight
    (SCHEDULED_TIME, "2017-03-03 10:00:00\x00", "YYYY-MM-DD HH:MM:SS"),  # numpy's text would drop the NUL
]


def one_flight(field: str, value: object) -> pd.DataFrame:
    flight = {
        SCHEDULED_TIME: "2017-03-03 10:00:00",
        FLIGHT_NUMBER: "226",
        "Emp-I": "SKY",
        "Des-I": "SCFA",
        "TIPOVUELO": "N",
        "OPERA": "Sky Airline",
        "SIGLADES": "Antofagasta",
    }
    return pd.DataFrame({c: pd.Series([value if c == field else v], dtype=object) for c, v in flight.items()})


@pytest.mark.parametrize(("field", "look_alike", "plain"), SAME_FLIGHT)
def test_look_alikes_are_the_same_flight_whichever_comes_first(field, look_alike, plain):
    for first, second in ((look_alike, plain), (plain, look_alike)):
        normalise.FLIGHT_NUMBER_MEMO.values.clear()
        normalise.CATEGORY_MEMO.values.clear()
        cleaned = [as_frame(schema.clean_columns(one_flight(field, v))) for v in (first, second)]
        assert_frame_equal(cleaned[0], cleaned[1], obj=f"{field}: {look_alike!r} against {plain!r}")
        assert_frame_equal(cleaned[0], oracle.clean_flights(one_flight(field, first)))


@pytest.mark.parametrize(("field", "look_alike", "words"), REFUSED)
def test_look_alikes_that_would_read_as_another_flight_are_refused(field, look_alike, words):
    for memo in (normalise.FLIGHT_NUMBER_MEMO, normalise.CATEGORY_MEMO):
        memo.values.clear()
    schema.clean_columns(one_flight(FLIGHT_NUMBER, 9_999_999_999.0))  # the memo saw the largest number first
    with pytest.raises(InvalidFlightsError) as caught:
        schema.clean_columns(one_flight(field, look_alike))
    assert caught.value.field == field, caught.value.message
    assert words in caught.value.message, caught.value.message
    assert outcome(oracle.validate_request, one_flight(field, look_alike), {})[1:] == (field, caught.value.message)


def test_a_boolean_flight_number_is_refused_beside_an_equal_number():
    """``True == 1`` with one hash: a set of distinct values, or ``pd.factorize``, keeps only the first seen."""
    for values in ([1, True], [True, 1], [0, False], [226, 1, np.True_], ["1", 1, True]):
        frame = pd.concat([one_flight(FLIGHT_NUMBER, v) for v in values], ignore_index=True)
        with pytest.raises(InvalidFlightsError) as caught:
            schema.clean_columns(frame)
        assert caught.value.field == FLIGHT_NUMBER and "got bool" in caught.value.message, (values, caught.value)


def test_zoned_and_date_columns_are_refused_naming_the_field_in_arrow_dtypes_too():
    text = pd.concat([one_flight(SCHEDULED_TIME, "2017-03-03 10:00:00")] * 3, ignore_index=True)
    moments = [datetime.datetime(2017, 3, 3, 10)] * 3
    arrow = {
        "timestamp[s, UTC]": pa.array(moments, pa.timestamp("s", tz="UTC")),
        "date32": pa.array([m.date() for m in moments], pa.date32()),
        "date64": pa.array([m.date() for m in moments], pa.date64()),
    }
    for name, values in arrow.items():
        frame = text.assign(**{SCHEDULED_TIME: pd.Series(pd.arrays.ArrowExtensionArray(values))})
        with pytest.raises(InvalidFlightsError) as caught:
            schema.clean_columns(frame)
        assert caught.value.field == SCHEDULED_TIME and "YYYY-MM-DD HH:MM:SS" in caught.value.message, name
    naive = pd.Series(pd.arrays.ArrowExtensionArray(pa.array(moments, pa.timestamp("s"))))
    assert_frame_equal(
        as_frame(schema.clean_columns(text.assign(**{SCHEDULED_TIME: naive}))), as_frame(schema.clean_columns(text))
    )


def test_hostile_values_are_refused_before_the_memo_and_echoed_cut(spec, requests_frame):
    frame = requests_frame.head(3).astype(object)
    frame.loc[1, "Des-I"] = "Z" * 5_000_000
    before = dict(normalise.CATEGORY_MEMO.values)
    with pytest.raises(InvalidFlightsError) as caught:
        schema.validate_request(frame, spec.vocabulary)
    message = caught.value.message
    assert caught.value.field == "Des-I" and "MAX_CATEGORY_CHARS=64" in message, message
    assert f"row 1: {'Z' * 40!r}… (5000000 characters)" in message and len(message) < 200, message
    assert normalise.CATEGORY_MEMO.values == before, "nothing of a refused batch is cached"
    with pytest.raises(InvalidFlightsError) as caught:
        schema.validate_request(frame, spec.vocabulary, "x" * 10_000)
    assert caught.value.field == "unknown_categories" and "… (10000 characters)" in caught.value.message


def test_memo_stays_bounded_in_bytes(spec, requests_frame, monkeypatch):
    monkeypatch.setattr(normalise, "MEMO_MAX_BYTES", 20_000)
    memo = normalise.CATEGORY_MEMO
    memo.values.clear()
    memo.bytes = 0
    for start in range(0, 2000, 100):
        frame = requests_frame.iloc[start : start + 100].copy()
        frame["OPERA"] = [f"airline {start + i} " + "x" * 50 for i in range(len(frame))]  # all distinct, 59+ chars
        clean = schema.clean_columns(frame)
        assert clean["OPERA"].tolist() == [f"AIRLINE {start + i} " + "X" * 50 for i in range(len(frame))]
        held = sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in memo.values.items())
        assert held <= 20_000 and memo.bytes == held, (held, memo.bytes)
    assert memo.values, "the memo still keeps what fits"


def test_memo_stays_bounded_and_correct(spec, requests_frame, monkeypatch):
    monkeypatch.setattr(normalise, "MEMO_LIMIT", 5)
    for start in range(0, 200, 20):
        assert_same(requests_frame.iloc[start : start + 20], spec.vocabulary, f"rows {start}.. with a tiny memo")
    assert len(normalise.CATEGORY_MEMO.values) <= 5 + 20 * len(CATEGORY_COLUMNS)


def test_code_tables_give_the_codes_of_a_plain_index(spec, requests_frame):
    clean = oracle.clean_flights(requests_frame)
    for column in CATEGORY_COLUMNS:
        index = pd.Index(spec.vocabulary[column])
        for size in (1, 3, 64, 65, 500):  # a dict up to 64 values, the Index beyond
            values = clean[column].head(size).tolist() + ["NEVER SEEN"]
            expected = index.get_indexer(values).astype(np.float32)
            expected[expected < 0] = len(index)
            np.testing.assert_array_equal(CodeTable(spec.vocabulary[column]).lookup(values), expected)


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory):
    """A small real model logged from code to a temporary store and loaded back, as the server loads it."""
    folder = tmp_path_factory.mktemp("store")
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = mlflow.create_experiment("oracle", artifact_location=(folder / "artifacts").as_uri())
    flights = make_flights(days=60, seed=11)
    flights["delay"] = raw_flights.delay_target(flights)
    fitted, _ = fit.fit_model(flights, HYPER)
    with mlflow.start_run(experiment_id=experiment):
        info = fit.log_pyfunc(fitted, flights[list(REQUIRED_COLUMNS)].head(3))
    return fitted, mlflow.pyfunc.load_model(info.model_uri)


def bodies(frame: pd.DataFrame) -> dict[str, str]:
    """JSON bodies in the forms clients send, from the same flights."""
    records = json.loads(frame.to_json(orient="records"))
    numbers = [{**r, FLIGHT_NUMBER: int(float(r[FLIGHT_NUMBER]))} for r in records]
    required = [{c: r[c] for c in REQUIRED_COLUMNS} for r in numbers]
    split = {"columns": list(numbers[0]), "data": [list(r.values()) for r in numbers]}
    return {
        "records, text flight numbers": json.dumps({"dataframe_records": records}),
        "records, number flight numbers": json.dumps({"dataframe_records": numbers}),
        "records, float flight numbers": json.dumps(
            {"dataframe_records": [{**r, FLIGHT_NUMBER: float(r[FLIGHT_NUMBER])} for r in numbers]}
        ),
        "records, required columns only": json.dumps({"dataframe_records": required}),
        "split, number flight numbers": json.dumps({"dataframe_split": split}),
        "records with params": json.dumps({"dataframe_records": numbers, "params": {"unknown_categories": "score"}}),
        "inputs": json.dumps({"inputs": numbers}),
    }


def test_every_request_form_takes_the_fast_path(logged_model, requests_frame, monkeypatch):
    """After each distinct value was seen once, no request calls pandas' parser or normalisers."""
    _, model = logged_model
    frame = make_flights(days=3, seed=11).drop(columns=["Fecha-O"])
    schema_in = model.metadata.get_input_schema()

    def score(body: str) -> list:
        answer = scoring_server.invocations(body, "application/json", model, schema_in)
        assert answer.status == 200, answer.response[:300]
        return [p["delay_probability"] for p in json.loads(answer.response)["predictions"]]

    for size in (1, 100, len(frame)):
        forms = bodies(frame.head(size))
        reference = {name: score(body) for name, body in forms.items()}  # warms the memos
        assert len({json.dumps(v) for v in reference.values()}) == 1, "every form scores the same flights alike"

        def slow(*args, **kwargs):
            raise AssertionError("pandas string work on the request path")

        with monkeypatch.context() as patched:
            patched.setattr(times, "parse_scheduled_time", slow)
            patched.setattr(normalise.CATEGORY_MEMO, "normalise", slow)
            patched.setattr(normalise.FLIGHT_NUMBER_MEMO, "normalise", slow)
            for name, body in forms.items():
                assert score(body) == reference[name], f"{name}, {size} flights"


def test_model_outputs_match_the_oracle_pipeline(logged_model, requests_frame):
    fitted, model = logged_model
    for form, frame in number_forms(requests_frame).items():
        # As pandas holds them (int64, float64, datetime64 columns): the model has no MLflow input
        # schema to refuse them before it sees them.
        for chunk in (frame, frame.iloc[:1], frame.iloc[40:140]):
            output = model.predict(chunk)
            clean = oracle.validate_request(chunk, fitted.spec.features.vocabulary)
            expected = fitted.spec.calibrate(
                fitted.booster.inplace_predict(build_features(clean, fitted.spec.features))
            )
            np.testing.assert_array_equal(output["delay_probability"].to_numpy(), expected, err_msg=form)


def test_loaded_tables_give_the_features_of_fresh_ones(logged_model, requests_frame):
    fitted, _ = logged_model
    python_model = FlightDelayModel()
    python_model.spec, python_model.tables = fitted.spec, CodedSpec.of(fitted.spec.features)
    clean, _ = schema.validate_request(requests_frame, fitted.spec.features.vocabulary)
    np.testing.assert_array_equal(
        build_features(clean, fitted.spec.features, python_model.tables), build_features(clean, fitted.spec.features)
    )


def test_batches_of_plain_values_are_cleaned_on_their_distinct_values(spec, requests_frame, validation_path):
    """The distinct-value path takes every form a clean batch comes in; what it leaves goes value by value."""
    if validation_path == "per value":
        pytest.skip("the distinct-value path only")
    plain_times = requests_frame.assign(**{SCHEDULED_TIME: requests_frame[SCHEDULED_TIME].str.strip()})
    forms = number_forms(plain_times)
    forms["object columns"] = plain_times.astype(object)
    for form, frame in forms.items():
        clean = schema.clean_columns(frame)
        taken = form != "float64 column"  # float flight numbers: value by value
        assert bool(clean.factors) == taken, form
        assert_frame_equal(as_frame(clean), oracle.clean_flights(frame), obj=form)
        plain = dict(clean)  # the same columns without their factors: features computed value by value
        np.testing.assert_array_equal(build_features(clean, spec), build_features(plain, spec), err_msg=form)
        unknown = schema.unknown_columns(clean, spec.vocabulary)
        for column, mask in schema.unknown_columns(plain, spec.vocabulary).items():
            np.testing.assert_array_equal(unknown[column], mask, err_msg=f"{form}: {column}")
    assert not schema.clean_columns(requests_frame).factors, "times with spaces around: value by value"
