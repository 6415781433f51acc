"""Every default of the pipeline and its tools, in one place; MLproject declares the same values (a test checks).

Every command line of ``steps/`` is ``argument_parser(<step>)``: one ``--option`` per entry of
``DEFAULTS[<step>]``, typed by its default. ``""`` means "not given": the step resolves it (from
the environment, or from what ran before) and says so.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCL_SHA256 = "66d7334fbc9c2c070842e9a99d465f552f94a2b1d5c4047be825e5954e12e829"
# The registered model every step, tool and test means unless told another name.
MODEL_NAME = "flight-delay"

# register's and promote's ``promote``: auto: the gate must have passed a version; force: the gate
# may have lost; never: check only (register: stop at Staging).
PROMOTE_CHOICES = ("auto", "force", "never")

# The acceptance load check: a short headless locust run on the served version (promote, acceptance).
LOAD_CHECK = {"users": 4, "spawn_rate": 4.0, "duration": "5s", "p95_ms": 1000.0}

DEFAULTS: dict[str, dict[str, object]] = {
    "etl": {
        "data_uri": "",  # "" = $SKYPROPHET_DATA_URI, else the SCL file beside the checkout
        "sha256": "",  # "" = the SCL 2017 digest (SCL_SHA256); "none" = no check (recorded on the run)
        # The holdout that gates a version: "latest" = the file's last holdout_months calendar months
        # (time-forward, what users meet); "day" = random whole days (holdout_fraction, split_seed), a
        # secondary view that lets a model memorise the training year's weather.
        "split": "latest",
        "holdout_months": 2,
        "split_seed": 42,
        "holdout_fraction": 0.33,
        "max_reject_fraction": 0.01,
    },
    "train": {
        "processed_uri": "",  # "" = datasets/processed (what etl wrote locally)
        "country": "auto",  # public holidays of: "auto" = the origin's country from its ICAO code, "none", or e.g. "CL"
        "objective": "minutes_late",  # or "delayed" (0/1 label, logistic loss); see skyprophet/science/recipe.py
        "calibration": "forward",  # or "days" (day-grouped folds); see skyprophet/science/splits.py CALIBRATIONS
        # Chosen by the month-ahead backtest of SCL 2017's last six months (docs/model.md):
        # shallow and short beats the deep day-split winner (depth 9, 400 trees at 0.02) on unseen
        # months, and fits about ten times faster.
        "n_estimators": 80,
        "learning_rate": 0.1,
        "max_depth": 6,
        "min_child_weight": 50.0,
        "subsample": 0.8,
        "colsample_bytree": 0.4,
        "scale_pos_weight": 3.0,  # objective "delayed" only: flights late are ~19 %; calibration undoes it
        "cv_folds": 3,  # blocks of the latest training days that fit the calibration (calibration=forward)
        "seed": 42,
    },
    "register": {
        "model_uri": "",  # "" = the model of the newest finished train run
        "holdout_uri": "",  # "" = the train run's holdout, else datasets/processed
        "model_name": MODEL_NAME,
        "promote": "auto",
    },
    "promote": {
        "model_name": MODEL_NAME,
        "version": "",  # "" = the version on the alias staging; else the version a person picked
        "promote": "auto",  # auto: the gate must have passed it; force: the gate may have lost; never: check only
        **LOAD_CHECK,
        "workers": 1,  # mlflow models serve -w for the checked server
    },
    "evaluate": {
        "processed_uri": "",  # "" = datasets/processed (what etl wrote locally)
        "model_name": MODEL_NAME,  # its Production version gets the table when trained on the same data
        "search_trials": 0,  # > 0: also a day-grouped CV hyper-parameter search with this many candidates
        "seed": 42,
    },
    "monitor": {
        "data": "",  # the new flights (path, file:// or gs://); required
        "model_name": MODEL_NAME,
        "auc_threshold": 0.65,  # adversarial ROC AUC at or above this is drift (exit code 3)
        "cv_folds": 5,
        "seed": 42,
        "max_rows": 100000,  # per side, sampled; 0 = all
        "exclude_features": "",  # comma-separated model features to leave out, e.g. hour,weekday
        "report_dir": "",  # "" = reports/monitor in the checkout
        # Flights with Fecha-O: realized quality past these, against the gate's figures, is exit code 5.
        "realized_ece_margin": 0.03,  # realized ECE above gate ECE + this
        "realized_auc_margin": 0.05,  # realized ROC AUC below gate ROC AUC - this
    },
    "recalibrate": {  # the delay-rate correction (steps/recalibrate.py)
        "data": "",  # flown flights (Fecha-O given): path, file:// or gs://; required
        "model_name": MODEL_NAME,
        "days": 7,  # the last days of flown flights the shift is solved on
        "min_flights": 100,  # fewer flown flights in the window (after the booster's training flights): no correction
        "tolerance": 0.0,  # |serving mean - realized rate| at or below this: no new version
        "promote": "auto",
        **LOAD_CHECK,
        "workers": 1,
    },
    "replay": {  # the season replay (steps/replay.py)
        "data_uri": "",  # "" = $SKYPROPHET_DATA_URI, else the SCL file beside the checkout
        "sha256": "",
        "months": 6,  # the file's last months, one after the other
        "model_name": "flight-delay-replay",  # its own registered model: the replay never touches flight-delay
        "n_estimators": 80,  # train's, for a quicker replay on generated flights
        "correction_every": 2,  # days between correction checks (1 = daily)
        "correction_days": 7,  # recalibrate's days
        "min_flights": 100,  # recalibrate's min_flights
        "tolerance": 0.015,  # recalibrate's tolerance: a new version only when the mean is this far off
        "drift_cv_folds": 3,  # monitor's cv_folds for the month's drift verdict
        "drift_max_rows": 20000,  # monitor's max_rows
        # promote's load check on every version (one served model each): the acceptance default,
        # already short (a 1-user 2 s run can end before locust sends a request).
        **LOAD_CHECK,
        "report_dir": "",  # "" = reports/replay in the checkout
    },
    "score": {
        "data": "",  # the schedule: a CSV or Parquet file or a folder of them (path, file:// or gs://); required
        "output": "",  # one Parquet file (path or gs://); the rejects go beside it; required
        "model_uri": f"models:/{MODEL_NAME}@production",  # the Production version, pinned in the run
        "engine": "pandas",  # or "spark" (mlflow.pyfunc.spark_udf on spark_master)
        "spark_master": "local[*]",
        "chunk_rows": 100000,  # flights per model call (pandas chunk, Spark Arrow batch); at most 100,000
        "max_reject_fraction": 0.01,  # the step fails when more rows than this share are not valid flights
        "overwrite": False,  # an existing output (or rejects file) is refused unless true
    },
    "whatif": {  # a few flights with a changed departure time, day or airline (steps/whatif.py)
        "data": "",  # the schedule the flights are in (CSV or Parquet path; score's output works); required
        "flights": "",  # <flight number>@<YYYY-MM-DD>[ HH:MM], comma-separated; required
        "departure": "",  # new time of day HH:MM ("" = unchanged)
        "date": "",  # new day YYYY-MM-DD, time kept ("" = unchanged)
        "airline": "",  # new Emp-I code ("" = unchanged)
        "operator": "",  # new OPERA name; "" = the one flying that code most in data
        "model_uri": f"models:/{MODEL_NAME}@production",
        "output": "",  # also write the side-by-side table here (CSV)
    },
    # Tools, not MLproject entry points.
    "serve": {  # make serve / make run
        "model_uri": f"models:/{MODEL_NAME}@production",  # the one pointer
        "host": "127.0.0.1",
        "port": 5001,
        "workers": 2,  # one uvicorn worker per core: a worker is one Python process, bound to one core by the GIL
    },
    "acceptance": {  # make acceptance: the URL checks against a served version (skyprophet/ops/acceptance.py)
        "url": "",  # the model server's base URL (…/invocations is POSTed); required
        "id_token": "",  # Bearer token; "" = $ACCEPTANCE_ID_TOKEN
        "model_uri": "",  # the version served there (its input example is scored)
        "flights": "",  # more valid flights: JSON records, CSV or Parquet
        "checks": "smoke,contract,load",
        "health_url": "",  # also GET this sidecar /health (200 expected)
        **LOAD_CHECK,
    },
    "tracking_server": {  # make tracking-server; options after `--` go to `mlflow server`
        "host": "127.0.0.1",
        "port": 5000,
        "workers": 2,
        "auth": "",  # none or basic; "" = $MLFLOW_AUTH, else none
    },
    "auth": {  # make auth-roles
        "create_roles": False,  # create the users and grants (as the admin)
        "experiment": "",  # "" = $MLFLOW_EXPERIMENT_NAME, else skyprophet
        "model_name": MODEL_NAME,
    },
}


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
            parser.add_argument(option, type=type(default), default=default)
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
