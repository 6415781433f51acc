"""report: the planner's HTML page of a scored schedule, summed right and rendered by a real Chromium.

The sums are checked in tests/batch/test_report.py (no model); the page is the one
``score`` writes for a generated schedule scored by the session's registered model, opened in
headless Chromium (``--dump-dom`` for what rendered, ``--screenshot`` kept under reports/report/).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import pandas as pd
import pytest

from skyprophet.batch import report_data
from skyprophet.config import PROJECT_ROOT
from skyprophet.params import ScoreParams
from steps import score
from tests.factory import make_flights

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = PROJECT_ROOT / "reports" / "report"
# Row -> (column, value): flights with a value the model never saw, and a row that is not a flight.
UNSEEN = {5: ("Des-I", "ZZXX"), 77: ("Emp-I", "QQQ"), 78: ("Emp-I", "QQQ")}
BAD = {12: ("Vlo-I", "")}


def chromium(*args: str, tmp_path: Path) -> str:
    """Headless Chromium on a file (no network, a throwaway profile); its stdout."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing: apt-get install -y chromium (.ci/run installs it)")
    profile = tmp_path / f"chromium-{len(list(tmp_path.glob('chromium-*')))}"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# ------------------------------------------------------------------ the page score writes, in Chromium


@pytest.mark.slow
def test_score_writes_a_report_that_renders_in_chromium(model_env, registered_model, tmp_path):
    frame = make_flights(days=45, flights_per_day=30, seed=11, start="2017-06-10")
    for row, (column, value) in {**UNSEEN, **BAD}.items():
        frame.loc[row, column] = value
    schedule = tmp_path / "schedule.csv"
    frame.to_csv(schedule, index=False, lineterminator="\n")
    output = tmp_path / "scores.parquet"

    result = score.run(ScoreParams(data=str(schedule), output=str(output), chunk_rows=500))

    page = tmp_path / "scores.report.html"
    assert page.is_file()
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id)]
    assert "scores.report.html" in artifacts
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and "http://" not in text and "https://" not in text  # self-contained

    dom = chromium("--dump-dom", page.as_uri(), tmp_path=tmp_path)
    assert f"flight-delay version {registered_model['version']}" in dom
    assert 'alt="calendar of mean delay probability by day and hour" src="data:image/png;base64,' in dom
    scored = pd.read_parquet(output)
    assert f"<b>{len(scored):,}</b><span>flights scored</span>" in dom
    assert f"Read: {len(frame):,} rows; {len(scored):,} scored, of which 3 flagged; 1 rejected" in dom
    assert "missing_Vlo-I: 1" in dom
    # The day-by-hour table: one row per day, the flights of a cell in it.
    times = pd.to_datetime(scored["Fecha-I"])
    calendar = dom.split('id="calendar-table"')[1].split("</table>")[0]
    assert calendar.count("<tr><th>") - 1 == times.dt.normalize().nunique()
    busiest = scored.groupby([times.dt.strftime("%a %Y-%m-%d"), times.dt.hour]).size().idxmax()
    n = scored.groupby([times.dt.strftime("%a %Y-%m-%d"), times.dt.hour]).size().max()
    assert f'title="{busiest[0]} {busiest[1]:02d}:00-{busiest[1]:02d}:59: {n} flights' in dom
    # The riskiest flights, each with three factors in words, the riskiest first.
    table = dom.split('id="top-flights-table"')[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + report_data.TOP_FLIGHTS
    assert table.count("pts)") == 3 * report_data.TOP_FLIGHTS
    riskiest = scored.sort_values("delay_probability", ascending=False).iloc[0]
    assert f'<td class="n">{riskiest["delay_probability"]:.3f}</td>' in table.split("</tr>")[1]
    # The flagged flights, by field and one by one.
    flagged = dom.split('id="flagged"')[1]
    assert '<tr><td>Emp-I</td><td class="n">2</td></tr>' in flagged
    assert '<tr><td>Des-I</td><td class="n">1</td></tr>' in flagged
    assert "QQQ" in flagged and "ZZXX" in flagged
    assert "All 4 airlines</summary>" in dom  # AAA, BBB, CCC and the unseen QQQ

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,2600", page.as_uri(), tmp_path=tmp_path)
    pixels = plt.imread(shot)
    assert pixels.shape[:2] == (2600, 1280)
    assert pixels[..., :3].std() > 0.05  # not a blank page
    shutil.copy(shot, SCREENSHOTS / "generated-schedule.png")
    shutil.copy(page, SCREENSHOTS / "generated-schedule.report.html")
