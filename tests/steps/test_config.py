"""MLproject and skyprophet/config.py declare the same defaults (every default lives in one place)."""

import pytest
import yaml

from skyprophet import params
from skyprophet.config import DEFAULTS, MODEL_NAME, PROJECT_ROOT, argument_parser

MLPROJECT = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())


@pytest.mark.parametrize(
    "step", ["etl", "train", "register", "promote", "monitor", "evaluate", "score", "whatif", "recalibrate", "replay"]
)
def test_mlproject_defaults_match_config(step):
    declared = {k: v["default"] for k, v in MLPROJECT["entry_points"][step]["parameters"].items()}
    assert declared.keys() == DEFAULTS[step].keys(), f"{step}: MLproject and config list different parameters"
    for name, default in DEFAULTS[step].items():
        assert type(default)(declared[name]) == default, f"{step}.{name}: MLproject {declared[name]!r} != {default!r}"


def test_main_takes_every_step_parameter_it_does_not_hand_over():
    handed_over = {"processed_uri", "model_uri", "holdout_uri", "version"}
    expected = {n for step in ("etl", "train", "register", "promote") for n in DEFAULTS[step]} - handed_over
    assert set(MLPROJECT["entry_points"]["main"]["parameters"]) == expected


def test_the_makefile_names_the_same_model_as_config():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert f"\nMODEL_NAME ?= {MODEL_NAME}\n" in makefile, "Makefile's MODEL_NAME default differs from skyprophet.config"


@pytest.mark.parametrize("step", sorted(DEFAULTS))
def test_every_command_line_is_built_from_its_defaults(step):
    assert vars(argument_parser(step, None).parse_args([])) == DEFAULTS[step]


def test_a_boolean_option_alone_means_true_and_takes_a_value_from_mlflow_run():
    parser = argument_parser("score", None)
    assert parser.parse_args(["--overwrite"]).overwrite is True
    assert parser.parse_args(["--overwrite", "false"]).overwrite is False
    with pytest.raises(SystemExit):
        parser.parse_args(["--overwrite", "maybe"])


def test_a_choice_outside_its_literal_is_refused_on_the_command_line_naming_the_option(capsys):
    with pytest.raises(SystemExit):
        argument_parser("train", None).parse_args(["--objective", "hinge"])
    assert "--objective" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("step", "name", "allowed"),
    [
        ("etl", "split", ("latest", "day")),
        ("score", "engine", ("pandas", "spark")),
        ("promote", "promote", ("auto", "force", "never")),
    ],
)
def test_choices_come_from_the_parameters_object(step, name, allowed):
    assert params.choices(step, name) == allowed
    assert params.choices(step, "model_name" if step == "promote" else "data_uri" if step == "etl" else "data") is None


def test_parse_refuses_unknown_names_and_values_outside_a_choice():
    assert params.parse("etl", {"split": "day"}).split == "day"
    with pytest.raises(ValueError, match="split must be one of"):
        params.parse("etl", {"split": "random"})
    with pytest.raises(ValueError, match="unknown parameter"):
        params.parse("etl", {"holdout_days": 3})
