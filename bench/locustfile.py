"""Locust load for the served ``flight-delay`` model: single flights, batches and health checks.

Flights are drawn from the served model's own vocabulary and flight keys (``bench/flights.py``),
never from the real file. Run by ``bench/stress.py`` (``make stress-test``) and by ``bench/run.py``
when wrk is missing; configured by the environment:

- ``STRESS_MODEL_DIR``: a downloaded model version (its ``artifacts/spec.json`` feeds the flights);
- ``STRESS_MIX``: ``mixed`` (default: single flights, batches, /ping), ``single`` or ``bodies`` (bench);
- ``STRESS_BODY_FILE``: with ``single``, POST this exact body instead of generated flights; with
  ``bodies``, one JSON body per line, POSTed as they are (the bench's request forms);
- ``STRESS_WAIT``: the most seconds a user waits between requests (default 1; 0 = none);
- ``STRESS_P95_MS``: the run fails when the aggregated 95th percentile exceeds it (default 500);
- ``STRESS_SIDECAR_URL``: also check the sidecar's /ping and /health when set.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

from locust import HttpUser, between, constant, events, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.flights import load_spec, sample_flights  # noqa: E402

POOL_SIZE = 20_000
BATCH_SIZES = (10, 50, 200, 1000)
MIX = os.environ.get("STRESS_MIX", "mixed")
WAIT = float(os.environ.get("STRESS_WAIT", "1"))
P95_MS = float(os.environ.get("STRESS_P95_MS", "500"))
SIDECAR_URL = os.environ.get("STRESS_SIDECAR_URL", "").rstrip("/")
HEADERS = {"Content-Type": "application/json"}


def _records() -> list[dict]:
    body_file = os.environ.get("STRESS_BODY_FILE")
    if MIX == "bodies":
        return []
    if body_file:
        return json.loads(Path(body_file).read_text(encoding="utf-8"))["dataframe_records"]
    model_dir = os.environ.get("STRESS_MODEL_DIR")
    if not model_dir:
        raise SystemExit("set STRESS_MODEL_DIR (a downloaded model version) or STRESS_BODY_FILE")
    return sample_flights(load_spec(model_dir), POOL_SIZE, seed=int(os.environ.get("STRESS_SEED", "0"))).to_dict(
        orient="records"
    )


FLIGHTS = _records()
BODIES = Path(os.environ["STRESS_BODY_FILE"]).read_text(encoding="utf-8").splitlines() if MIX == "bodies" else []


@events.quitting.add_listener
def _fail_on_slow_or_failed(environment, **_kwargs) -> None:
    """Exit non-zero on any failed request or a 95th percentile above STRESS_P95_MS."""
    total = environment.stats.total
    p95 = total.get_response_time_percentile(0.95) or 0
    if total.num_failures:
        environment.process_exit_code = 1
        sys.stderr.write(f"stress: {total.num_failures} of {total.num_requests} requests failed\n")
    elif p95 > P95_MS:
        environment.process_exit_code = 1
        sys.stderr.write(f"stress: 95th percentile {p95:.0f} ms exceeds STRESS_P95_MS={P95_MS:.0f} ms\n")
    else:
        sys.stderr.write(f"stress: {total.num_requests} requests, none failed, 95th percentile {p95:.0f} ms\n")


class FlightClient(HttpUser):
    """A client of the scoring API: mostly one flight at a time, sometimes a schedule, sometimes a health check."""

    wait_time = constant(0) if WAIT <= 0 else between(WAIT / 10, WAIT)

    def _score(self, records: list[dict], name: str, body: str = "") -> None:
        body = body or json.dumps({"dataframe_records": records})
        with self.client.post("/invocations", data=body, headers=HEADERS, name=name, catch_response=True) as answer:
            if answer.status_code != 200:
                answer.failure(f"HTTP {answer.status_code}: {answer.text[:200]}")
                return
            predictions = answer.json().get("predictions", [])
            if records and len(predictions) != len(records):
                answer.failure(f"{len(predictions)} predictions for {len(records)} flights")
            elif not all(0.0 <= p["delay_probability"] <= 1.0 and p["delay"] in (0, 1) for p in predictions):
                answer.failure("a prediction outside [0, 1] or a delay flag outside {0, 1}")

    @task(1 if MIX == "bodies" else 0)
    def body(self) -> None:
        self._score([], "/invocations (bench body)", random.choice(BODIES))

    @task(0 if MIX == "bodies" else 20)
    def one_flight(self) -> None:
        self._score([random.choice(FLIGHTS)], "/invocations (1 flight)")

    @task(3 if MIX == "mixed" else 0)
    def batch(self) -> None:
        size = random.choice(BATCH_SIZES)
        start = random.randrange(0, max(1, len(FLIGHTS) - size))
        self._score(FLIGHTS[start : start + size], "/invocations (batch)")

    @task(2 if MIX == "mixed" else 0)
    def ping(self) -> None:
        self.client.get("/ping", name="/ping")

    @task(1 if MIX == "mixed" and SIDECAR_URL else 0)
    def sidecar_health(self) -> None:
        self.client.get(f"{SIDECAR_URL}/ping", name="sidecar /ping")
        with self.client.get(f"{SIDECAR_URL}/health", name="sidecar /health", catch_response=True) as answer:
            if answer.status_code != 200:
                answer.failure(f"sidecar not ready: HTTP {answer.status_code} {answer.text[:200]}")
