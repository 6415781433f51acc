"""The pandas engine: every file streamed in Arrow batches, scored by a worker process per core.

This process reads each batch and writes the scores in input order; the workers (forked once the
model is loaded here, so they share it) validate, build features and predict. The model is handed
to the pool's initializer: nothing in this module holds it in the parent process.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import mlflow
import pyarrow as pa

from skyprophet.batch.contract import (
    FLIGHT_COLUMNS,
)
from skyprophet.batch.model import load_model
from skyprophet.batch.scoring import score_batch
from skyprophet.batch.sinks import ParquetSink, close_sinks, write_batch
from skyprophet.batch.sources import file_columns, read_batches, with_columns
from skyprophet.batch.tally import BatchScores, Tally

# The score step's logger: its lines (``stages:`` is read by bench/score.py) keep the step's name.
logger = logging.getLogger("skyprophet.score")
PROGRESS_SECONDS = 10.0
# Per-stage CPU seconds of the pandas engine (logged as seconds_<stage>; CPU rather than wall time,
# which on a shared machine mostly measures the others): reading batches and writing the scores in
# this process; scoring (validation, features, XGBoost, sums) summed over the workers.
STAGES = ("read", "score", "write")


class Progress:
    """A log line every PROGRESS_SECONDS: flights done, rate and, where known, the share of the total."""

    def __init__(self, total: int | None) -> None:
        self.total, self.done, self.start, self.last = total, 0, time.monotonic(), time.monotonic()

    def update(self, rows: int) -> None:
        """Count ``rows`` more; log when due."""
        self.done += rows
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            share = f" ({self.done / self.total:.0%})" if self.total else ""
            logger.info("scored %d rows%s, %.0f rows/s", self.done, share, rate)


# Set in each worker process by the pool's initializer (inherited through fork, never pickled);
# the parent process never sets it.
_worker_model = None


def _start_worker(model) -> None:
    """A worker keeps the model and goes when its parent goes (a SIGKILLed step left them blocked on pipes)."""
    global _worker_model
    _worker_model = model
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the step's own handler, which the fork copied
    with contextlib.suppress(OSError, AttributeError):  # Linux: SIGKILL when the parent exits, whatever the cause
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _score_in_worker(table: pa.Table) -> BatchScores:
    return score_batch(_worker_model, table.to_pandas())


def score_workers(total: int | None, chunk_rows: int) -> int:
    """Worker processes for the pandas engine: one per core, none (this process) for a single batch."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < 2 or (total is not None and total <= chunk_rows):
        return 0
    return cores


def score_pandas(
    model_uri: str, uris: list[str], output: ParquetSink, rejects: ParquetSink, chunk_rows: int
) -> tuple[Tally, list[str]]:
    """Score every file batch by batch, streamed: memory is a few batches, whatever the size.

    This process reads each batch (pyarrow) and writes the scores in input order (ParquetWriter);
    one worker process per core validates, builds features and predicts (XGBoost on one thread
    each), forked once the model is loaded here (they share it). At most two batches per worker
    are in flight. A single batch is scored here. Returns the tally and the flight columns.
    Files are streamed from where they are (``gs://`` included), never copied first.
    """
    checked = [(uri, *file_columns(uri, uri)) for uri in uris]
    columns = [c for c in FLIGHT_COLUMNS if any(c in cols for *_, cols, _ in checked)]
    known = [rows for *_, rows in checked]
    total = sum(known) if None not in known else None
    workers = score_workers(total, chunk_rows)
    # With workers, one XGBoost thread each: the workers already use every core.
    model = load_model(model_uri, batch_threads=1 if workers else None)
    progress = Progress(total)
    tally = Tally()
    stages = dict.fromkeys(STAGES, 0.0)

    def batches() -> Iterator[pa.Table]:
        for name, kind, file_cols, _ in checked:
            logger.info("read: %s (%s)", name, kind)
            tables = read_batches(name, name, kind, file_cols, chunk_rows)
            while True:
                started = time.process_time()
                table = next(tables, None)
                if table is None:
                    break
                table = with_columns(table, columns)
                stages["read"] += time.process_time() - started
                yield table

    def finish(table: pa.Table, part: BatchScores) -> None:
        started = time.process_time()
        tally.add(part)
        write_batch(table, part, output, rejects)
        progress.update(table.num_rows)
        stages["score"] += part.seconds
        stages["write"] += time.process_time() - started

    if workers:
        logger.info("score: %d worker processes, %d flights a batch", workers, chunk_rows)
        # A worker that dies (killed for memory) fails the step with BrokenProcessPool, not a hang.
        pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker, initargs=(model,)
        )
        try:
            pending: collections.deque = collections.deque()
            for table in batches():
                pending.append((table, pool.submit(_score_in_worker, table)))
                if len(pending) >= 2 * workers:
                    finish(pending[0][0], pending.popleft()[1].result())
            while pending:
                finish(pending[0][0], pending.popleft()[1].result())
        finally:
            pool.shutdown(cancel_futures=True)
    else:
        for table in batches():
            finish(table, score_batch(model, table.to_pandas()))
    started = time.process_time()
    close_sinks(output, rejects, columns)
    stages["write"] += time.process_time() - started
    logger.info("stages: %s", json.dumps({k: round(v, 2) for k, v in stages.items()} | {"workers": workers}))
    mlflow.log_metrics({f"seconds_{stage}": value for stage, value in stages.items()} | {"score_workers": workers})
    return tally, columns
