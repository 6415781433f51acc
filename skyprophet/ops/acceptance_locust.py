"""The acceptance load check's locust users: single flights and small batches, judged per answer.

Run by ``skyprophet.ops.acceptance`` (headless, bounded); configured by the environment:

- ``ACCEPTANCE_FLIGHTS``: a JSON file holding a list of flight records the model accepts;
- ``ACCEPTANCE_ID_TOKEN``: sent as ``Authorization: Bearer …`` when set (a private Cloud Run URL).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from locust import HttpUser, between, task

FLIGHTS = json.loads(Path(os.environ["ACCEPTANCE_FLIGHTS"]).read_text(encoding="utf-8"))
HEADERS = {"Content-Type": "application/json"}
if token := os.environ.get("ACCEPTANCE_ID_TOKEN"):
    HEADERS["Authorization"] = f"Bearer {token}"
BATCH = 20


class AcceptanceClient(HttpUser):
    """A client scoring one flight at a time, sometimes a small batch."""

    wait_time = between(0.05, 0.2)

    def _score(self, records: list[dict], name: str) -> None:
        body = json.dumps({"dataframe_records": records})
        with self.client.post("/invocations", data=body, headers=HEADERS, name=name, catch_response=True) as answer:
            if answer.status_code != 200:
                answer.failure(f"HTTP {answer.status_code}: {answer.text[:200]}")
                return
            predictions = answer.json().get("predictions", [])
            if len(predictions) != len(records):
                answer.failure(f"{len(predictions)} predictions for {len(records)} flights")
            elif not all(0.0 <= p["delay_probability"] <= 1.0 for p in predictions):
                answer.failure("a probability outside [0, 1]")

    @task(10)
    def one_flight(self) -> None:
        """Score one flight."""
        self._score([random.choice(FLIGHTS)], "/invocations (1 flight)")

    @task(1)
    def batch(self) -> None:
        """Score a small batch."""
        self._score(random.sample(FLIGHTS, min(BATCH, len(FLIGHTS))), f"/invocations ({BATCH} flights)")
