"""report: the planner's view of a scored schedule, one self-contained HTML file.

Built from ``score``'s output file alone (never the engine's internals): one pass over the
columns it needs, in batches of ``BATCH_ROWS``, adds up flights and probabilities per (day, hour),
per airline and per destination, keeps the ``TOP_FLIGHTS`` riskiest flights and the first
``FLAGGED_LISTED`` flagged ones; only those riskiest flights go through the model's ``explain``.
So the cost grows with one read of a few columns, not with the model: seconds for millions of flights.

The page: headline numbers, which model version scored it and how the flights were read (rows,
scored, flagged, rejected by reason), a calendar (day x hour of departure coloured by mean delay
probability), the riskiest days and hours, risk by airline and destination with each one's share
of the schedule, the riskiest flights with their three factors in words, the flagged flights
(a category the model never saw), and the day-by-hour table with the flight counts. Plots are
matplotlib PNGs embedded as base64; no script, no external file.
"""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pyfunc.schema import (
    SCHEDULED_TIME,
    UNKNOWN_FIELDS,
)
from skyprophet.batch.report_data import (
    AIRLINE,
    AIRLINE_NAME,
    CITY,
    DESTINATION,
    FLAGGED_LISTED,
    PROBABILITY,
    Aggregates,
    aggregate,
    by_category,
    explain_top,
    with_means,
)
from skyprophet.batch.report_figures import (
    calendar_figure,
    calendar_table,
    colour_scale,
    html_table,
    img,
    pct,
    profile_figure,
    share_figure,
)
from skyprophet.batch.sinks import report_uri

logger = logging.getLogger("skyprophet.report")
# Rows of the riskiest days and hours tables.
RISKIEST_DAYS, RISKIEST_HOURS = 10, 5
# Airlines and destinations in the charts (the largest by flights); the tables list them all.
CHART_CATEGORIES = 15


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#222;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid #eee;padding-bottom:4px}
.sub{color:#555;margin:0 0 16px}.note{color:#666;font-size:13px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{background:#f6f6f6;border-radius:8px;padding:10px 16px;min-width:140px}
.card b{display:block;font-size:22px}.card span{color:#555;font-size:13px}
.card.warn{background:#fff1e0}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{padding:3px 8px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
th{white-space:nowrap}td{white-space:nowrap}td.why{white-space:normal}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.two{display:flex;gap:24px;flex-wrap:wrap}.two>div{flex:1;min-width:420px}
img{max-width:100%}
table.calendar td{text-align:center;min-width:22px;padding:1px 2px;font-size:11px;border:1px solid #fff}
table.calendar th{font-size:11px;padding:1px 4px;white-space:nowrap}
.up{color:#b2182b}.down{color:#2166ac}
"""


def _factor_cells(factors: list[dict]) -> str:
    parts = []
    for item in factors:
        points = 100 * item["points"]
        css = "up" if points > 0 else "down"
        arrow = "▲" if points > 0 else "▼"
        parts.append(
            f'<span class="{css}">{arrow}</span> {html.escape(item["text"])} '
            f'<span class="{css}">({points:+.1f} pts)</span>'
        )
    return "<br>".join(parts)


@dataclass
class Provenance:
    """Where the scores came from: the schedule, the model version, the run and the counts."""

    data: str = ""
    output: str = ""
    model_uri: str = ""
    model_name: str = ""
    model_version: str = ""
    run_id: str = ""
    counts: dict = field(default_factory=dict)


def render(found: Aggregates, factors: list[list[dict]], about: Provenance) -> str:
    """The report's HTML from the aggregates (and the riskiest flights' factors)."""
    total = found.flights
    counts = about.counts
    rejected = counts.get("rejected_by_reason", {}) or {}
    rows = counts.get("rows", total + sum(rejected.values()))
    flagged = counts.get("flagged", sum(found.flagged_by_fields.values()))
    version = (
        f"{about.model_name} version {about.model_version}" if about.model_version else (about.model_uri or "unknown")
    )
    mean = found.probability_sum / total if total else 0.0
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Delay risk report: {html.escape(Path(about.data).name or about.output)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Delay risk of the schedule {html.escape(Path(about.data.rstrip('/')).name or about.data)}</h1>",
        f"<p class='sub' id='provenance'>Scored by <b id='model-version'>{html.escape(version)}</b> "
        f"({html.escape(about.model_uri)}); MLflow run {html.escape(about.run_id or '-')}; "
        f"schedule {html.escape(about.data)}; scores {html.escape(about.output)}; "
        f"report made {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.</p>",
        "<div class='cards'>",
        f"<div class='card'><b>{total:,}</b><span>flights scored</span></div>",
        f"<div class='card'><b>{mean:.3f}</b><span>mean delay probability</span></div>",
        f"<div class='card'><b>{pct(found.delayed / total if total else 0)}</b>"
        "<span>predicted late (&gt;15 min)</span></div>",
        f"<div class='card{' warn' if flagged else ''}'><b>{flagged:,}</b><span>flagged: unseen category</span></div>",
        f"<div class='card{' warn' if rejected else ''}'><b>{sum(rejected.values()):,}</b>"
        "<span>rows rejected</span></div>",
        "</div>",
    ]
    reasons = ", ".join(f"{html.escape(r)}: {n:,}" for r, n in sorted(rejected.items())) or "none"
    parts.append(
        f"<p id='read' class='note'>Read: {rows:,} rows; {total:,} scored, of which {flagged:,} flagged; "
        f"{sum(rejected.values()):,} rejected (by reason: {reasons}). Rejected rows are in the "
        "<code>.rejects.parquet</code> file beside the scores.</p>"
    )
    if not total:
        parts.append("<p>No flight was scored.</p></body></html>")
        return "".join(parts)

    cells = with_means(found.table("cells"), total)
    cells["day"] = pd.to_datetime(cells["day"])
    norm = colour_scale(cells)
    parts.append("<h2 id='calendar'>Calendar</h2>")
    parts.append(img(calendar_figure(cells, norm), "calendar of mean delay probability by day and hour"))
    hours = with_means(cells.groupby("hour")[["flights", "probability_sum", "delayed"]].sum().reset_index(), total)
    days = with_means(cells.groupby("day")[["flights", "probability_sum", "delayed"]].sum().reset_index(), total)
    weekday = cells.assign(weekday=cells["day"].dt.weekday)
    weekdays = with_means(
        weekday.groupby("weekday")[["flights", "probability_sum", "delayed"]].sum().reset_index(), total
    )
    parts.append(img(profile_figure(hours, weekdays, norm), "mean delay probability by hour and weekday"))

    riskiest_days = days.sort_values("mean", ascending=False).head(RISKIEST_DAYS)
    riskiest_days = riskiest_days.assign(day=riskiest_days["day"].dt.strftime("%a %Y-%m-%d"))
    riskiest_hours = hours.sort_values("mean", ascending=False).head(RISKIEST_HOURS)
    riskiest_hours = riskiest_hours.assign(hour=[f"{h:02d}:00-{h:02d}:59" for h in riskiest_hours["hour"]])
    stat = [
        ("flights", "flights", "int"),
        ("share", "share of schedule", "pct"),
        ("mean", "mean delay probability", "prob"),
        ("late", "predicted late", "pct"),
    ]
    when = [stat[0], *stat[2:]]
    parts.append("<h2 id='riskiest'>Riskiest days and hours</h2><div class='two'>")
    parts.append(f"<div><h3>Days</h3>{html_table(riskiest_days, [('day', 'day', ''), *when])}</div>")
    hours_table = html_table(riskiest_hours, [("hour", "hour", ""), *when])
    parts.append(f"<div><h3>Hours of departure</h3>{hours_table}</div></div>")

    airlines = by_category(found.table("airlines"), AIRLINE, AIRLINE_NAME, total)
    destinations = by_category(found.table("destinations"), DESTINATION, CITY, total)
    parts.append("<h2 id='categories'>Risk by airline and by destination</h2>")
    parts.append(
        f"<p class='note'>The {CHART_CATEGORIES} largest by flights, riskiest at the top; the label is each one's "
        "share of the schedule. The tables under them list every airline and destination.</p><div class='two'>"
    )
    for frame, kind in ((airlines, "airline"), (destinations, "destination")):
        largest = frame.sort_values("flights", ascending=False).head(CHART_CATEGORIES)
        title = f"The {len(largest)} largest {kind}s" if len(frame) > len(largest) else f"Every {kind}"
        parts.append(
            f"<div id='by-{kind}'>"
            + img(share_figure(largest, "label", norm, title), f"risk by {kind}")
            + f"<details><summary>All {len(frame)} {kind}s</summary>"
            + html_table(frame.sort_values("mean", ascending=False), [("label", kind, ""), *stat])
            + "</details></div>"
        )
    parts.append("</div>")

    top = found.top.reset_index(drop=True)
    parts.append(f"<h2 id='top-flights'>The {len(top)} riskiest flights and why</h2>")
    parts.append(
        "<p class='note'>The model's three strongest factors per flight; the points are how far each one moves this "
        "flight's delay probability (percentage points, the others held as they are).</p>"
    )
    heads = ("#", "departure", "flight", "airline", "destination", "delay probability", "top factors")
    head = "<tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>"
    body = []
    for i, record in enumerate(top.to_dict("records")):
        why = _factor_cells(factors[i]) if i < len(factors) else ""
        flag = (
            f" <span class='up'>(unseen: {html.escape(record.get(UNKNOWN_FIELDS, ''))})</span>"
            if record.get(UNKNOWN_FIELDS)
            else ""
        )
        body.append(
            f"<tr><td>{i + 1}</td><td>{html.escape(str(record[SCHEDULED_TIME]))}</td>"
            f"<td>{html.escape(str(record['Vlo-I']))}</td>"
            f"<td>{html.escape(str(record[AIRLINE]))} {html.escape(str(record.get(AIRLINE_NAME, '')))}</td>"
            f"<td>{html.escape(str(record[DESTINATION]))} {html.escape(str(record.get(CITY, '')))}{flag}</td>"
            f"<td class='n'>{record[PROBABILITY]:.3f}</td><td class='why'>{why}</td></tr>"
        )
    parts.append(f"<table id='top-flights-table'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>")

    parts.append("<h2 id='flagged'>Flagged flights: a category the model never saw</h2>")
    if not found.flagged_by_fields:
        parts.append("<p>None: the model knew every airline, destination, flight type and city.</p>")
    else:
        parts.append(
            f"<p class='warn'>{flagged:,} flights were scored with at least one value the model never saw "
            "(scored as unseen: their probability leans on the other factors). By field:</p>"
        )
        by_field = pd.DataFrame(
            sorted(found.flagged_by_fields.items(), key=lambda kv: -kv[1]), columns=["fields", "flights"]
        )
        parts.append(html_table(by_field, [("fields", "unseen field(s)", ""), ("flights", "flights", "int")]))
        listed = found.flagged.reset_index(drop=True)
        shown = [
            c
            for c in (SCHEDULED_TIME, "Vlo-I", AIRLINE, DESTINATION, "TIPOVUELO", AIRLINE_NAME, CITY)
            if c in listed.columns
        ]
        parts.append(
            f"<p class='note'>The first {len(listed)} of them (FLAGGED_LISTED = {FLAGGED_LISTED}):</p>"
            + html_table(
                listed,
                [
                    *((c, c, "") for c in shown),
                    (UNKNOWN_FIELDS, "unseen", ""),
                    (PROBABILITY, "delay probability", "prob"),
                ],
            )
        )

    parts.append("<h2 id='calendar-counts'>Day by hour: flights in each hour</h2>")
    parts.append(
        "<p class='note'>Each cell is the number of flights departing in that hour; its colour is their mean delay "
        "probability (hover for the number).</p>"
    )
    parts.append(calendar_table(cells, norm))
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(output: str | Path, destination: str | Path, about: Provenance) -> dict[str, float]:
    """Write the report of ``output`` (a local Parquet file) to ``destination``; returns the seconds per part."""
    started = time.monotonic()
    found = aggregate(output)
    aggregated = time.monotonic()
    factors = explain_top(about.model_uri, found.top)
    explained = time.monotonic()
    page = render(found, factors, about)
    Path(destination).write_text(page, encoding="utf-8")
    done = time.monotonic()
    seconds = {
        "aggregate": aggregated - started,
        "explain": explained - aggregated,
        "render": done - explained,
        "total": done - started,
    }
    logger.info(
        "report: %d flights -> %s in %.1f s (read %.1f, explain %.1f, draw %.1f)",
        found.flights,
        destination,
        seconds["total"],
        seconds["aggregate"],
        seconds["explain"],
        seconds["render"],
    )
    return seconds


def write_and_log(
    output: str, scores: Path, data: str, counts: dict, workdir: Path, model_name: str = "", model_version: str = ""
) -> Path:
    """``score``'s one call: the report of the finished ``scores`` (not yet at ``output``), logged to the run.

    Returns the local file, named as the report beside ``output`` will be; ``score`` publishes it
    with the scores and the rejects.
    """
    import mlflow

    local = workdir / "report" / Path(report_uri(output)).name
    local.parent.mkdir(parents=True, exist_ok=True)
    run = mlflow.active_run()
    about = Provenance(
        data=data,
        output=output,
        model_uri=counts.get("model_uri", ""),
        model_name=model_name,
        model_version=model_version,
        run_id=run.info.run_id if run else "",
        counts=counts,
    )
    seconds = build_report(scores, local, about)
    if run:
        mlflow.log_artifact(str(local))
        mlflow.log_metric("report_seconds", seconds["total"])
    return local
