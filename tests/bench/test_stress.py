"""The short stress test CI runs: the real runner, a real model server (and sidecar), real locust."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from skyprophet.config import PROJECT_ROOT
from skyprophet.ops.processes import process_env

pytestmark = [pytest.mark.stress, pytest.mark.slow]


def run_stress(registered_model: dict, report_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bench.stress", "--model-uri", registered_model["model_uri"]]
    command += ["--users", "10", "--spawn-rate", "10", "--report-dir", str(report_dir), *extra]
    return subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        env=process_env(registered_model["env"]),
        capture_output=True,
        text=True,
        timeout=400,
    )


def test_short_stress_run_passes_and_writes_the_report(registered_model, tmp_path):
    # A generous bound: CI machines are shared; `make stress-test` defaults to 500 ms.
    done = run_stress(registered_model, tmp_path, "--duration", "15s", "--p95-ms", "3000")
    assert done.returncode == 0, f"stress run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = tmp_path / "index.html"
    assert report.is_file() and "locust" in report.read_text(encoding="utf-8").lower(), "HTML report written"
    rows = {row["Name"]: row for row in csv.DictReader(open(tmp_path / "stats_stats.csv", encoding="utf-8"))}
    for name in ("/invocations (1 flight)", "/invocations (batch)", "/ping"):
        assert int(rows[name]["Request Count"]) > 0, f"no {name} requests in the mix: {sorted(rows)}"
    assert int(rows["Aggregated"]["Failure Count"]) == 0, rows["Aggregated"]
    assert "none failed" in done.stderr, done.stderr[-2000:]


def test_stress_run_fails_when_the_95th_percentile_is_over_the_bound(registered_model, tmp_path):
    done = run_stress(registered_model, tmp_path, "--duration", "5s", "--p95-ms", "0.001", "--sidecar", "off")
    assert done.returncode != 0, "a 0.001 ms bound cannot be met; the run must fail"
    assert "exceeds STRESS_P95_MS" in done.stderr, done.stderr[-2000:]
