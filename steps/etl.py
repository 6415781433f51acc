"""etl: raw flights CSV -> validated interim flights -> train / holdout split (latest period by default).

Reads: the raw CSV (path, ``file://`` or ``gs://``), checked against a SHA-256: by default the SCL
2017 digest (``config.SCL_SHA256``); another file needs ``--sha256 <its digest>`` or the explicit
``--sha256 none``, recorded on the run (param ``sha256=none``, tag ``etl.sha256_unchecked`` with
the digest it had). Writes into folders of its own run, so two etl runs never share a file:
``datasets/raw/<run id>/data.csv``, ``datasets/interim/<run id>/{flights,rejects}.parquet``,
``datasets/processed/<run id>/{train,holdout}.parquet``; logs the processed folder, the rejects and
the datasets' lineage to the MLflow run (``runs:/<run id>/processed`` is what ``main`` hands on).
Last, for a person running the steps one by one, ``datasets/processed/{train,holdout}.parquet``
(what train and evaluate read by default) become symbolic links to this run's files, each
replaced atomically.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import mlflow

from pyfunc.schema import TARGET
from skyprophet import config
from skyprophet import params as step_params
from skyprophet.mlops import tracking
from skyprophet.params import EtlParams
from skyprophet.science.raw_flights import delay_target, read_raw, reject_reasons
from skyprophet.science.splits import SPLITS, RawDataError, split_by_day, split_latest
from skyprophet.storage import DataSourceError, fetch, sha256_of

logger = logging.getLogger("skyprophet.etl")
# --sha256 none: no checksum check (recorded on the run); "" means the SCL 2017 file's digest.
NO_CHECKSUM = "none"


@dataclass
class EtlResult:
    """What the next step needs: the run and the URI of the processed split."""

    run_id: str
    processed_uri: str
    rows: int
    rejected: int


def expected_sha256(sha256: str) -> str:
    """The digest to check: the SCL 2017 one for "", none for ``none``, else the one given (64 hex digits)."""
    value = sha256.strip().lower()
    if value == NO_CHECKSUM:
        return ""
    if not value:
        return config.SCL_SHA256
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"sha256 must be 64 hex digits or {NO_CHECKSUM!r}, got {sha256!r}")
    return value


def fetch_checked(data_uri: str, destination: Path, sha256: str) -> Path:
    """``fetch`` with the checksum; a mismatch against the default digest says how to name another file's."""
    try:
        return fetch(data_uri, destination, expected_sha256(sha256))
    except DataSourceError as err:
        if sha256.strip() or "sha256" not in str(err):
            raise
        raise DataSourceError(
            f"{err} (the SCL 2017 file's digest, checked by default): for another file give "
            f"--sha256 <its SHA-256, e.g. from sha256sum> or --sha256 {NO_CHECKSUM} to skip the check "
            "(recorded on the run)"
        ) from None


def publish_latest(processed: Path, names: tuple[str, ...]) -> None:
    """Point ``datasets/processed/<name>.parquet`` at this run's files (one atomic rename each)."""
    latest = processed.parent
    for name in names:
        link = latest / f"{name}.parquet"
        temporary = latest / f".{name}.parquet.{processed.name}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(Path(processed.name) / f"{name}.parquet")
        os.replace(temporary, link)


def run(params: EtlParams = EtlParams()) -> EtlResult:
    """Fetch, validate, label and split the raw flights inside one MLflow run."""
    if params.split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {params.split!r}")
    sha256 = params.sha256
    expected_sha256(sha256)  # refuse a malformed digest before any run
    data_uri = params.data_uri or config.default_data_uri()
    root = config.datasets_dir()
    with tracking.step_run("etl") as active:
        shown_sha256 = sha256.strip().lower() or f"{config.SCL_SHA256} (SCL 2017, the default)"
        tracking.log_step_params(params, data_uri=data_uri, sha256=shown_sha256)
        run_folder = active.info.run_id  # every file of this run under a folder of its own
        logger.info("fetch: %s", data_uri)
        raw_path = fetch_checked(data_uri, root / "raw" / run_folder / "data.csv", sha256)
        if not expected_sha256(sha256):
            mlflow.set_tag("etl.sha256_unchecked", sha256_of(raw_path))
            logger.warning("fetch: no checksum check (--sha256 none); the file's sha256 is recorded on the run")
        raw = read_raw(str(raw_path))
        logger.info("validate: %d rows", len(raw))
        reasons = reject_reasons(raw)
        rejected = raw[reasons != ""].assign(reject_reason=reasons[reasons != ""])
        counts = rejected["reject_reason"].value_counts()
        interim = root / "interim" / run_folder
        interim.mkdir(parents=True, exist_ok=True)
        rejected.to_parquet(interim / "rejects.parquet", index=False)
        mlflow.log_artifact(str(interim / "rejects.parquet"), "rejects")
        mlflow.log_metrics({"raw_rows": len(raw), "rejected_rows": len(rejected)})
        mlflow.log_metrics({f"rejected_{reason}": int(n) for reason, n in counts.items()})
        if len(rejected) > params.max_reject_fraction * len(raw):
            raise RawDataError(
                f"{len(rejected)} of {len(raw)} rows rejected (limit {params.max_reject_fraction:.1%}): "
                f"{counts.to_dict()}; see {interim / 'rejects.parquet'}"
            )
        flights = raw[reasons == ""].reset_index(drop=True)
        flights[TARGET] = delay_target(flights)
        flights.to_parquet(interim / "flights.parquet", index=False)
        logger.info("split: %d flights, %.2f%% delayed", len(flights), 100 * flights[TARGET].mean())
        if params.split == "latest":
            in_holdout = split_latest(flights, params.holdout_months)
        else:
            in_holdout = split_by_day(flights, params.holdout_fraction, params.split_seed)
        processed = root / "processed" / run_folder
        processed.mkdir(parents=True, exist_ok=True)
        splits = {"train": flights[~in_holdout], "holdout": flights[in_holdout]}
        for name, frame in splits.items():
            frame.to_parquet(processed / f"{name}.parquet", index=False)
            source = tracking.dataset_source(data_uri)
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, targets=TARGET)
            tracking.log_input(dataset, context=name)
            mlflow.log_metrics({f"{name}_rows": len(frame), f"{name}_delay_rate": float(frame[TARGET].mean())})
        mlflow.log_artifacts(str(processed), "processed")
        publish_latest(processed, tuple(splits))
        run_id = active.info.run_id
    return EtlResult(run_id, f"runs:/{run_id}/processed", len(flights), len(rejected))


def main() -> None:
    """CLI: ``python -m steps.etl --data-uri ...``."""
    args = config.argument_parser("etl", __doc__).parse_args()
    tracking.setup_logging()
    result = run(step_params.parse("etl", vars(args)))
    logger.info("done: run %s, processed data at %s", result.run_id, result.processed_uri)


if __name__ == "__main__":
    main()
