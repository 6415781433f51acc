"""The flight contract: normalisation and validation name the field and the problem."""

import pandas as pd
import pytest

from pyfunc.fields import REQUIRED_COLUMNS, InvalidFlightsError
from pyfunc.normalise import normalise_category, normalise_flight_number
from pyfunc.schema import MAX_BATCH_ROWS, check_batch, clean_flights, validate_request

VOCABULARY = {"Emp-I": ["AAA"], "Des-I": ["ZZAA"], "TIPOVUELO": ["N"], "OPERA": ["ALPHA AIR"], "SIGLADES": ["AURORA"]}
GOOD = {
    "Fecha-I": "2017-05-04 10:30:00",
    "Vlo-I": "101",
    "Des-I": "ZZAA",
    "Emp-I": "AAA",
    "TIPOVUELO": "N",
    "OPERA": "Alpha Air",
    "SIGLADES": "Aurora",
}


def one(**changes) -> pd.DataFrame:
    return pd.DataFrame([{**GOOD, **changes}])


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Alpha Air", "ALPHA AIR"),
        ("  alpha   air ", "ALPHA AIR"),
        ("ＡＬＰＨＡ ＡＩＲ", "ALPHA AIR"),  # full-width forms fold under NFKC
        ("alpha\tair", "ALPHA AIR"),
    ],
)
def test_category_normalisation_rule(raw, expected):
    assert normalise_category(pd.Series([raw]))[0] == expected, f"{raw!r} should normalise to {expected!r}"


@pytest.mark.parametrize(
    "raw", ["226", " 226 ", "0226", "226.0", 226, 226.0, "２２６", "\u0662\u0662\u0666", "\u00a0226"]
)
def test_flight_number_formats_are_one_flight(raw):
    assert normalise_flight_number(pd.Series([raw], dtype=object))[0] == "226", f"{raw!r} should be flight 226"


@pytest.mark.parametrize("raw", ["203", "1020", "2000", 203, 1020])
def test_inner_zeros_are_kept(raw):
    assert normalise_flight_number(pd.Series([raw], dtype=object))[0] == str(raw), "only leading zeros go"


def test_alphanumeric_flight_numbers_are_kept():
    assert normalise_flight_number(pd.Series(["989p"]))[0] == "989P"


def test_good_flight_passes_and_is_normalised():
    clean, unknown = validate_request(one(OPERA=" alpha air "), VOCABULARY)
    assert list(clean) == list(REQUIRED_COLUMNS), "cleaned flights keep exactly the required columns"
    assert clean["OPERA"][0] == "ALPHA AIR"
    assert clean["Fecha-I"][0] == pd.Timestamp("2017-05-04 10:30")
    assert not any(mask.any() for mask in unknown.values()), "every value is known"


@pytest.mark.parametrize(
    "frame, field, words",
    [
        (one().drop(columns=["OPERA"]), "OPERA", "missing"),
        (one(**{"Fecha-I": "2017-02-30 10:00:00"}), "Fecha-I", "YYYY-MM-DD"),
        (one(**{"Fecha-I": "yesterday"}), "Fecha-I", "row 0"),
        (one(**{"Fecha-I": "1850-01-01 10:00:00"}), "Fecha-I", "year outside"),
        (one(**{"Des-I": None}), "Des-I", "null"),
        (one(**{"Vlo-I": "  "}), "Vlo-I", "empty"),
        (one(OPERA="Omega Air"), "OPERA", "never seen"),
        (one(TIPOVUELO="X"), "TIPOVUELO", "known values: N"),
        (one(SIGLADES=7), "SIGLADES", "expected text"),
    ],
)
def test_bad_flights_name_the_field(frame, field, words):
    with pytest.raises(InvalidFlightsError) as caught:
        validate_request(frame, VOCABULARY)
    assert caught.value.field == field, f"error should name {field}, got {caught.value.field}"
    assert words in caught.value.message, f"message should say {words!r}: {caught.value.message}"


def test_unknown_value_message_counts_a_large_vocabulary():
    vocabulary = {**VOCABULARY, "SIGLADES": [f"CITY {i}" for i in range(50)]}
    with pytest.raises(InvalidFlightsError, match="knows 50 values"):
        validate_request(one(), vocabulary)


def test_empty_and_oversize_batches_are_refused():
    with pytest.raises(InvalidFlightsError, match="empty"):
        check_batch(one().iloc[:0])
    with pytest.raises(InvalidFlightsError, match=str(MAX_BATCH_ROWS)):
        check_batch(pd.concat([one()] * (MAX_BATCH_ROWS + 1), ignore_index=True))


def test_extra_columns_are_ignored():
    clean = clean_flights(one(**{"Fecha-O": "2017-05-04 11:30:00", "anything": 1}))
    assert "Fecha-O" not in clean.columns and "anything" not in clean.columns, "operated columns never pass"
