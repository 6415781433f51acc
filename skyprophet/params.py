"""Each step's parameters, declared once: a typed, frozen dataclass per step (``Literal`` for choices).

From these come ``config.DEFAULTS`` (what ``MLproject`` must declare; a test checks), every command
line (``config.argument_parser``: one ``--option`` per field, typed by its default, ``choices`` from
its ``Literal``) and what a step logs as its parameters. ``""`` means "not given": the step resolves
it (from the environment, or from what ran before) and says so.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Literal

MODEL_NAME = "flight-delay"  # the registered model every step, tool and test means unless told another name
PRODUCTION_URI = f"models:/{MODEL_NAME}@production"

Split = Literal["latest", "day"]
Objective = Literal["minutes_late", "delayed"]
Calibration = Literal["forward", "days"]
Promote = Literal["auto", "force", "never"]
Engine = Literal["pandas", "spark"]


@dataclass(frozen=True)
class LoadCheck:
    """The acceptance load check: a short headless locust run on the served version."""

    users: int = 4
    spawn_rate: float = 4.0
    duration: str = "5s"
    p95_ms: float = 1000.0


@dataclass(frozen=True)
class EtlParams:
    """etl: raw flights -> validated train / holdout Parquet."""

    data_uri: str = ""  # "" = $SKYPROPHET_DATA_URI, else the SCL file beside the checkout
    sha256: str = ""  # "" = the SCL 2017 digest (config.SCL_SHA256); "none" = no check (recorded on the run)
    # The holdout that gates a version: "latest" = the file's last holdout_months calendar months
    # (time-forward, what users meet); "day" = random whole days (holdout_fraction, split_seed), a
    # secondary view that lets a model memorise the training year's weather.
    split: Split = "latest"
    holdout_months: int = 2
    split_seed: int = 42
    holdout_fraction: float = 0.33
    max_reject_fraction: float = 0.01


@dataclass(frozen=True)
class TrainParams:
    """train: processed flights -> calibrated XGBoost pyfunc."""

    processed_uri: str = ""  # "" = datasets/processed (what etl wrote locally)
    country: str = "auto"  # public holidays of: "auto" = the origin's country from its ICAO code, "none", or e.g. "CL"
    objective: Objective = "minutes_late"  # or "delayed" (0/1 label, logistic loss)
    calibration: Calibration = "forward"  # or "days" (day-grouped folds)
    # Chosen by the month-ahead backtest of SCL 2017's last six months (docs/model.md): shallow and
    # short beats the deep day-split winner (depth 9, 400 trees at 0.02) on unseen months, and fits
    # about ten times faster.
    n_estimators: int = 80
    learning_rate: float = 0.1
    max_depth: int = 6
    min_child_weight: float = 50.0
    subsample: float = 0.8
    colsample_bytree: float = 0.4
    scale_pos_weight: float = 3.0  # objective "delayed" only: flights late are ~19 %; calibration undoes it
    cv_folds: int = 3  # blocks of the latest training days that fit the calibration (calibration=forward)
    seed: int = 42


@dataclass(frozen=True)
class RegisterParams:
    """register: a trained model -> a registry version on the alias staging, with the gate's decision."""

    model_uri: str = ""  # "" = the model of the newest finished train run
    holdout_uri: str = ""  # "" = the train run's holdout, else datasets/processed
    model_name: str = MODEL_NAME
    promote: Promote = "auto"


@dataclass(frozen=True)
class PromoteParams(LoadCheck):
    """promote: the acceptance checks on a served copy of a version; all pass -> production."""

    model_name: str = MODEL_NAME
    version: str = ""  # "" = the version on the alias staging; else the version a person picked
    promote: Promote = "auto"  # auto: the gate must have passed it; force: the gate may have lost; never: check only
    workers: int = 1  # mlflow models serve -w for the checked server


@dataclass(frozen=True)
class EvaluateParams:
    """evaluate: the model against challenge and seed baselines on the day and forward splits."""

    processed_uri: str = ""  # "" = datasets/processed (what etl wrote locally)
    model_name: str = MODEL_NAME  # its Production version gets the table when trained on the same data
    search_trials: int = 0  # > 0: also a day-grouped CV hyper-parameter search with this many candidates
    seed: int = 42


@dataclass(frozen=True)
class MonitorParams:
    """monitor: drift of new flights; realized quality of flown ones."""

    data: str = ""  # the new flights (path, file:// or gs://); required
    model_name: str = MODEL_NAME
    auc_threshold: float = 0.65  # adversarial ROC AUC at or above this is drift (exit code 3)
    cv_folds: int = 5
    seed: int = 42
    max_rows: int = 100000  # per side, sampled; 0 = all
    exclude_features: str = ""  # comma-separated model features to leave out, e.g. hour,weekday
    report_dir: str = ""  # "" = reports/monitor in the checkout
    # Flights with Fecha-O: realized quality past these, against the gate's figures, is exit code 5.
    realized_ece_margin: float = 0.03  # realized ECE above gate ECE + this
    realized_auc_margin: float = 0.05  # realized ROC AUC below gate ROC AUC - this


@dataclass(frozen=True)
class RecalibrateParams(LoadCheck):
    """recalibrate: the delay-rate correction, a new version through staging and acceptance."""

    data: str = ""  # flown flights (Fecha-O given): path, file:// or gs://; required
    model_name: str = MODEL_NAME
    # The cadence the season replay proves (docs/model.md, `python -m bench.cadence`): run daily, the
    # last 10 flown days weighted by recency (half-life 2.5 days), a new version only when the serving
    # mean is more than 0.04 off: on SCL 2017 every month's ECE <= 0.046 with 36 versions in six months.
    days: int = 10  # the last days of flown flights the shift is solved on
    min_flights: int = 100  # fewer flown flights in the window (after the booster's training flights): no correction
    tolerance: float = 0.04  # |serving mean - realized rate| (both weighted) at or below this: no new version
    half_life: float = 2.5  # days: a flight's weight halves per half_life days of age; 0 = all weigh the same
    promote: Promote = "auto"
    workers: int = 1


@dataclass(frozen=True)
class ReplayParams(LoadCheck):
    """replay: the file's last months operated one after the other through the real pipeline."""

    # promote's load check on every version (LoadCheck's fields): the acceptance default. duration=2s
    # saves 3 s a version on a quiet machine, but under load (7 on 2 cores) a 2 s run completed no
    # request and failed a monthly promote: not the default.

    data_uri: str = ""  # "" = $SKYPROPHET_DATA_URI, else the SCL file beside the checkout
    sha256: str = ""
    months: int = 6  # the file's last months, one after the other
    model_name: str = "flight-delay-replay"  # its own registered model: the replay never touches flight-delay
    n_estimators: int = 80  # train's, for a quicker replay on generated flights
    # The correction as operated (recalibrate's defaults), checked daily: see RecalibrateParams.
    correction_every: int = 1  # days between correction checks (1 = daily)
    correction_days: int = RecalibrateParams.days  # recalibrate's days
    correction_half_life: float = RecalibrateParams.half_life  # recalibrate's half_life
    min_flights: int = RecalibrateParams.min_flights  # recalibrate's min_flights
    tolerance: float = RecalibrateParams.tolerance  # recalibrate's tolerance
    drift_cv_folds: int = 3  # monitor's cv_folds for the month's drift verdict
    drift_max_rows: int = 20000  # monitor's max_rows
    report_dir: str = ""  # "" = reports/replay in the checkout


@dataclass(frozen=True)
class ScoreParams:
    """score: delay odds for a whole schedule."""

    data: str = ""  # the schedule: a CSV or Parquet file or a folder of them (path, file:// or gs://); required
    output: str = ""  # one Parquet file (path or gs://); the rejects go beside it; required
    model_uri: str = PRODUCTION_URI  # the Production version, pinned in the run
    engine: Engine = "pandas"  # or "spark" (one mapInArrow pass on spark_master)
    spark_master: str = "local[*]"
    chunk_rows: int = 100000  # flights per model call (pandas chunk, Spark Arrow batch); at most 100,000
    max_reject_fraction: float = 0.01  # the step fails when more rows than this share are not valid flights
    overwrite: bool = False  # an existing output (or rejects file) is refused unless true


@dataclass(frozen=True)
class WhatifParams:
    """whatif: a few flights with a changed departure time, day or airline."""

    data: str = ""  # the schedule the flights are in (CSV or Parquet path; score's output works); required
    flights: str = ""  # <flight number>@<YYYY-MM-DD>[ HH:MM], comma-separated; required
    departure: str = ""  # new time of day HH:MM ("" = unchanged)
    date: str = ""  # new day YYYY-MM-DD, time kept ("" = unchanged)
    airline: str = ""  # new Emp-I code ("" = unchanged)
    operator: str = ""  # new OPERA name; "" = the one flying that code most in data
    model_uri: str = PRODUCTION_URI
    output: str = ""  # also write the side-by-side table here (CSV)


# Tools, not MLproject entry points.
@dataclass(frozen=True)
class ServeParams:
    """make serve / make run."""

    model_uri: str = PRODUCTION_URI  # the one pointer
    host: str = "127.0.0.1"
    port: int = 5001
    workers: int = 2  # one uvicorn worker per core: a worker is one Python process, bound to one core by the GIL


@dataclass(frozen=True)
class AcceptanceParams(LoadCheck):
    """make acceptance: the URL checks against a served version."""

    url: str = ""  # the model server's base URL (…/invocations is POSTed); required
    id_token: str = ""  # Bearer token; "" = $ACCEPTANCE_ID_TOKEN
    model_uri: str = ""  # the version served there (its input example is scored)
    flights: str = ""  # more valid flights: JSON records, CSV or Parquet
    checks: str = "smoke,contract,load"
    health_url: str = ""  # also GET this sidecar /health (200 expected)


@dataclass(frozen=True)
class TrackingServerParams:
    """make tracking-server; options after ``--`` go to ``mlflow server``."""

    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    auth: Literal["", "none", "basic"] = ""  # "" = $MLFLOW_AUTH, else none


@dataclass(frozen=True)
class AuthParams:
    """make auth-roles."""

    create_roles: bool = False  # create the users and grants (as the admin)
    experiment: str = ""  # "" = $MLFLOW_EXPERIMENT_NAME, else skyprophet
    model_name: str = MODEL_NAME


STEPS: dict[str, type] = {
    "etl": EtlParams,
    "train": TrainParams,
    "register": RegisterParams,
    "promote": PromoteParams,
    "evaluate": EvaluateParams,
    "monitor": MonitorParams,
    "recalibrate": RecalibrateParams,
    "replay": ReplayParams,
    "score": ScoreParams,
    "whatif": WhatifParams,
    "serve": ServeParams,
    "acceptance": AcceptanceParams,
    "tracking_server": TrackingServerParams,
    "auth": AuthParams,
}


def defaults(step: str) -> dict[str, object]:
    """``step``'s parameters and their defaults, in declaration order."""
    return dataclasses.asdict(STEPS[step]())


def choices(step: str, name: str) -> tuple[str, ...] | None:
    """The values a ``Literal`` field of ``step`` accepts, or None when it takes any value of its type."""
    hint = typing.get_type_hints(STEPS[step])[name]
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def parse(step: str, values: dict[str, object]) -> object:
    """``values`` as ``step``'s parameters object: unknown names and values outside a choice are refused."""
    unknown = set(values) - set(defaults(step))
    if unknown:
        raise ValueError(f"{step}: unknown parameter(s) {', '.join(sorted(unknown))}")
    for name, value in values.items():
        allowed = choices(step, name)
        if allowed is not None and value not in allowed:
            raise ValueError(f"{step}: {name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return STEPS[step](**values)


LOAD_CHECK = dataclasses.asdict(LoadCheck())
