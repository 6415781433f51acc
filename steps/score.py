"""score: whole schedules -> delay odds per flight, on pandas (streamed batches, a worker process per core) or Spark.

Reads: ``data``, a CSV or Parquet schedule or a folder of them (a path, ``file://`` or ``gs://``),
and a ``flight-delay`` model version (``model_uri``, default the Production one).
Writes: ``output``, one Parquet file (a path or ``gs://`` URI): the input's flight columns of
``pyfunc.schema`` (``Fecha-I``, ``Vlo-I``, ``Emp-I``, ``Des-I``, … as given) plus ``delay_probability``,
``delay`` and ``unknown_fields`` (the fields whose value the model never saw, "" when none: such
flights are scored, the model parameter ``unknown_categories="score"``). Beside it,
``<output stem>.rejects.parquet``: the rows that are not valid flights, with ``reject_reason``
(``missing_Vlo-I``, ``unparsable_Fecha-I``, …) and ``reject_detail`` (the schema's own message).
What a valid flight is comes from ``pyfunc.schema.clean_columns`` alone: a batch it refuses is
split in halves until the refused rows are single (a clean batch costs one call).

One MLflow run: the input as a dataset (source, content digest), the model name and version,
counts (rows, scored, flagged, rejected by reason) and ``summary/`` (mean probability by airline
and by day). Above ``max_reject_fraction`` rejected rows the step fails (the rejects file is kept,
``output`` is not written). Nothing half-written is ever left at ``output``: a local file is
written under a temporary name and renamed, a ``gs://`` object is uploaded once complete.

The library parts live in ``skyprophet.batch``: ``sources`` (listing, reading, digests), ``tally``
(validity and the summary), ``sinks`` (the output files), ``model``, ``pandas_engine``, ``spark_engine``
and ``report`` (the planner's page).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import mlflow

from pyfunc.schema import MAX_BATCH_ROWS
from skyprophet import config
from skyprophet import params as step_params
from skyprophet.batch import report
from skyprophet.batch.contract import ScoreInputError, TooManyRejectsError
from skyprophet.batch.model import resolve_model
from skyprophet.batch.pandas_engine import score_pandas
from skyprophet.batch.sinks import (
    ParquetSink,
    check_output,
    output_set,
    publish_together,
    rejects_uri,
    remove,
    report_uri,
    staged_beside,
)
from skyprophet.batch.sources import content_digest, is_gs, list_inputs, local_path
from skyprophet.batch.spark_engine import score_spark
from skyprophet.batch.tally import Tally
from skyprophet.mlops import registry, tracking
from skyprophet.mlops.digest import ArtifactDigestError
from skyprophet.params import ScoreParams

logger = logging.getLogger("skyprophet.score")
ENGINES = ("pandas", "spark")


@dataclass
class ScoreResult:
    """What a caller needs: the run, where the scores went and the counts."""

    run_id: str
    output: str
    rejects: str
    model_uri: str
    rows: int
    scored: int
    flagged: int
    rejected: dict[str, int]
    seconds: float

    @property
    def rejected_rows(self) -> int:
        """Rows that were not valid flights, every reason together."""
        return sum(self.rejected.values())


def log_dataset(data: str, uris: list[str], columns: list[str]) -> str:
    """The schedule as the run's input dataset (its source URI, a digest of the files' bytes, the flight columns)."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    local = not is_gs(data)
    digest = content_digest(str(local_path(data)) if local else data, uris)
    source = tracking.dataset_source(str(local_path(data).resolve()) if local else data)
    name = Path(urlparse(data).path.rstrip("/")).name or "schedule"
    schema = Schema([ColSpec("string", c) for c in columns])
    mlflow.log_input(MetaDataset(source=source, name=name, digest=digest, schema=schema), context="scoring")
    return digest


def _log_summary(tally: Tally, counts: dict, workdir: Path) -> None:
    folder = workdir / "summary"
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tally.summary().items():
        table.to_csv(folder / f"{name}.csv", index=False, float_format="%.6f")
    (folder / "counts.json").write_text(json.dumps(counts, indent=1), encoding="utf-8")
    mlflow.log_artifacts(str(folder), "summary")


def run(params: ScoreParams = ScoreParams()) -> ScoreResult:
    """Score ``data`` with ``model_uri`` into ``output`` inside one MLflow run (see the module docstring)."""
    data, output, engine, chunk_rows = params.data, params.output, params.engine, params.chunk_rows
    overwrite = params.overwrite
    if engine not in ENGINES:
        raise ScoreInputError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if not 1 <= chunk_rows <= MAX_BATCH_ROWS:
        raise ScoreInputError(f"chunk_rows {chunk_rows}: expected 1 to {MAX_BATCH_ROWS} (the model's batch limit)")
    if not 0 <= params.max_reject_fraction <= 1:  # NaN too: every comparison with it is false
        raise ScoreInputError(f"max_reject_fraction {params.max_reject_fraction}: expected 0 to 1")
    overwrite = config.parse_bool(overwrite) if not isinstance(overwrite, bool) else overwrite
    started = time.monotonic()
    with tracking.step_run("score") as active, tempfile.TemporaryDirectory(prefix="skyprophet-score-") as tmp:
        workdir = Path(tmp)
        tracking.log_step_params(params, overwrite=overwrite)
        uri, name, version = resolve_model(params.model_uri)
        local_model = registry.verified_copy(uri, workdir / "model")  # Production: refused if changed since accepted
        mlflow.set_tags(
            {"skyprophet.model_uri": uri, "skyprophet.model_name": name, "skyprophet.model_version": version}
        )
        check_output(output, overwrite)
        rejects = rejects_uri(output)
        uris = list_inputs(data, leave_out=output_set(output))
        logger.info("score: %d file(s) from %s with %s on %s", len(uris), data, uri, engine)
        sinks = (ParquetSink(output, workdir), ParquetSink(rejects, workdir))
        try:
            if engine == "pandas":
                tally, columns = score_pandas(local_model, uris, *sinks, chunk_rows)
            else:
                tally, columns = score_spark(local_model, uris, *sinks, params.spark_master, chunk_rows, workdir)
            digest = log_dataset(data, uris, columns)
            rejected = sum(tally.rejected.values())
            counts = {
                "rows": tally.rows,
                "scored": tally.scored,
                "flagged": tally.flagged,
                "rejected": rejected,
                "rejected_by_reason": dict(sorted(tally.rejected.items())),
                "model_uri": uri,
                "dataset_digest": digest,
            }
            mlflow.log_metrics(
                {"rows": tally.rows, "scored_rows": tally.scored, "flagged_rows": tally.flagged}
                | {"rejected_rows": rejected}
                | {f"rejected_{reason}": n for reason, n in tally.rejected.items()}
            )
            _log_summary(tally, counts, workdir)
            if rejected:
                logger.info("rejects: %d rows %s -> %s", rejected, counts["rejected_by_reason"], rejects)
            if rejected > params.max_reject_fraction * tally.rows:
                # Only this run's rejects are left: an earlier run's scores and report (overwrite) go too.
                publish_together([(sinks[1].path, rejects)], overwrite)
                for stale in (output, report_uri(output)) if overwrite else ():
                    remove(stale)
                raise TooManyRejectsError(
                    f"{data}: {rejected} of {tally.rows} rows are not valid flights "
                    f"(limit {params.max_reject_fraction:.1%}): {counts['rejected_by_reason']}; see {rejects}"
                )
            page = report.write_and_log(output, sinks[0].path, data, counts, workdir, name, version)
            page = staged_beside(page, report_uri(output), workdir)  # the temporary folder may be another disk
            try:
                publish_together(
                    [(sinks[0].path, output), (sinks[1].path, rejects), (page, report_uri(output))], overwrite
                )
            finally:
                page.unlink(missing_ok=True)
        finally:
            for sink in sinks:
                sink.discard()
        seconds = time.monotonic() - started
        mlflow.log_metrics({"seconds": seconds, "flights_per_second": tally.rows / max(seconds, 1e-9)})
        logger.info(
            "done: %d rows, %d scored (%d flagged), %d rejected in %.1f s -> %s",
            tally.rows,
            tally.scored,
            tally.flagged,
            rejected,
            seconds,
            output,
        )
        return ScoreResult(
            active.info.run_id, output, rejects, uri, tally.rows, tally.scored, tally.flagged, tally.rejected, seconds
        )


class Terminated(BaseException):
    """SIGTERM arrived: the step stops as it does on Ctrl-C (nothing published, the run ended, workers gone).

    A ``BaseException``, as ``KeyboardInterrupt`` is: handlers of ordinary errors must not take it for one.
    """


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signal.Signals(signum).name)


def main(argv: list[str] | None = None, exit: Callable[[int], None] = sys.exit) -> None:
    """CLI: ``python -m steps.score --data schedule.csv --output scores.parquet [--engine spark]``.

    SIGTERM (a scheduler's stop, ``kill``) unwinds the step like Ctrl-C: Python's default would end
    the process where it stands, leaving its partial files, its worker processes and a RUNNING run.
    """
    parser = config.argument_parser("score", __doc__)
    args = parser.parse_args(argv)
    tracking.setup_logging()
    main_thread = threading.current_thread() is threading.main_thread()  # only it may set a handler
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        run(step_params.parse("score", vars(args)))
    except (ScoreInputError, TooManyRejectsError, ArtifactDigestError) as err:
        logger.error("score failed: %s", err)
        exit(2)
    except Terminated as err:
        logger.error("score stopped by %s: nothing of this run was published", err)
        exit(128 + signal.SIGTERM)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
