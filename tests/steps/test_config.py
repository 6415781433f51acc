"""MLproject and skyprophet/config.py declare the same defaults (every default lives in one place)."""

import pytest
import yaml

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
