"""Paths, names and every step's defaults (from ``skyprophet.params``); MLproject declares the same (a test checks).

Every command line of ``steps/`` is ``argument_parser(<step>)``: one ``--option`` per field of the
step's parameters object, typed by its default, with the choices of a ``Literal`` field. ``""``
means "not given": the step resolves it (from the environment, or from what ran before) and says so.
"""

from __future__ import annotations

import argparse
import os
import typing
from pathlib import Path

from skyprophet import params

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCL_SHA256 = "66d7334fbc9c2c070842e9a99d465f552f94a2b1d5c4047be825e5954e12e829"
MODEL_NAME = params.MODEL_NAME
LOAD_CHECK = params.LOAD_CHECK
# register's and promote's ``promote``: auto: the gate must have passed a version; force: the gate
# may have lost; never: check only (register: stop at Staging).
PROMOTE_CHOICES = typing.get_args(params.Promote)
# Every step's parameters and defaults, derived from its parameters object (skyprophet/params.py).
DEFAULTS: dict[str, dict[str, object]] = {step: params.defaults(step) for step in params.STEPS}


# The embedded tracking + registry store of the checkout (what runs without any server).
EMBEDDED_STORE_URI = f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
# The SCL 2017 file where the workspace keeps it, beside the checkout (never inside it).
SCL_DATA_PATH = PROJECT_ROOT.parent / "shared" / "datasets" / "scl-2017" / "data.csv"


def default_data_uri() -> str:
    """Where the raw flights come from unless a step is told otherwise."""
    return os.environ.get("SKYPROPHET_DATA_URI", str(SCL_DATA_PATH))


def datasets_dir() -> Path:
    """Root of raw/, interim/ and processed/ (``$SKYPROPHET_DATASETS_DIR`` or ``datasets/``)."""
    return Path(os.environ.get("SKYPROPHET_DATASETS_DIR", PROJECT_ROOT / "datasets"))


def argument_parser(step: str, description: str | None) -> argparse.ArgumentParser:
    """A CLI parser with one ``--option`` per parameter of ``step``, typed and defaulted from DEFAULTS."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_options(parser, step)
    return parser


def add_step_options(parser: argparse.ArgumentParser, step: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Add ``step``'s options (all but ``skip``) to ``parser``; the names added.

    A boolean option alone means true (``--overwrite``); with a value it is that value
    (``--overwrite false``, as ``mlflow run -P`` passes it).
    """
    added = []
    for name, default in DEFAULTS[step].items():
        if name in skip:
            continue
        option = f"--{name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(option, type=parse_bool, nargs="?", const=True, default=default)
        else:
            parser.add_argument(option, type=type(default), default=default, choices=params.choices(step, name))
        added.append(name)
    return added


def parse_bool(text: str) -> bool:
    """``true``/``false`` (any case; also 1/0, yes/no) as typed on a command line or by ``mlflow run -P``."""
    value = str(text).strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
