"""A clean run reads clean: the steps' MLflow calls no longer print the warnings a first run used to repeat."""

import warnings

import mlflow
import pytest

from pyfunc.schema import TARGET
from skyprophet.mlops import registry, tracking
from skyprophet.params import EtlParams
from skyprophet.science import fit
from skyprophet.storage import sha256_of
from steps import etl
from tests.factory import make_flights

# What `make pipeline` printed again and again before (issue 18).
REPEATED = ("can be interpreted in multiple ways", "Inferred schema contains integer column", "is deprecated since")


def warned(action) -> list[str]:
    """The messages of the user-facing warnings (UserWarning, FutureWarning) ``action()`` raises."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        action()
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning | FutureWarning)]


def repeated(messages: list[str]) -> list[str]:
    return [m for m in messages if any(text in m for text in REPEATED)]


@pytest.mark.parametrize("uri", ["/data/flights.parquet", "file:///data/flights.parquet", "gs://bucket/flights.csv"])
def test_a_dataset_source_is_named_without_a_guess(uri):
    messages = warned(lambda: tracking.dataset_source(uri))
    assert not messages, messages
    assert tracking.dataset_source(uri).to_dict() == {"uri": uri}


def test_etl_logs_its_lineage_quietly(tracking_store, tmp_path):
    path = tmp_path / "raw.csv"
    make_flights(days=90, flights_per_day=10).to_csv(path, index=False)
    assert not repeated(warned(lambda: etl.run(EtlParams(data_uri=str(path), sha256=sha256_of(path)))))


def test_training_flights_with_their_integer_target_are_logged_quietly(tracking_store, tmp_path):
    flights = make_flights(days=2, flights_per_day=10).assign(**{TARGET: 0})
    with mlflow.start_run() as run:
        messages = warned(lambda: fit.log_training_flights(flights, str(tmp_path / "train.parquet")))
    assert not repeated(messages), messages
    (logged,) = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.source_type) == ("train", "local")


def test_a_stage_moves_without_the_deprecation_notice(tracking_store, tmp_path):
    client = mlflow.MlflowClient()
    client.create_registered_model("quiet")
    version = client.create_model_version("quiet", source=(tmp_path / "model").as_uri())
    assert not repeated(warned(lambda: registry.transition_stage(client, "quiet", version.version, "Staging")))
    assert client.get_model_version("quiet", version.version).current_stage == "Staging"
