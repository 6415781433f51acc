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

import base64
import html
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pyfunc.explain import FACTOR_VALUES_COLUMN  # noqa: E402
from pyfunc.schema import (  # noqa: E402
    EXPLAIN_PARAM,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SCHEDULED_TIME,
    TIME_FORMAT,
    UNKNOWN_FIELDS,
    normalise_category,
    parse_times,
)
from skyprophet.batch.sinks import publish  # noqa: E402
from skyprophet.batch.sources import is_gs, local_copy, local_path  # noqa: E402

logger = logging.getLogger("skyprophet.report")

FLIGHT_COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
PROBABILITY, DELAY = "delay_probability", "delay"
AIRLINE, AIRLINE_NAME, DESTINATION, CITY = "Emp-I", "OPERA", "Des-I", "SIGLADES"
# Rows read per batch: memory stays a few batches of a few columns whatever the schedule's size.
BATCH_ROWS = 1_000_000
# The riskiest flights listed with their factors (the only flights the model explains).
TOP_FLIGHTS = 20
# Flagged flights listed one by one (all of them are counted by field).
FLAGGED_LISTED = 50
# Rows of the riskiest days and hours tables.
RISKIEST_DAYS, RISKIEST_HOURS = 10, 5
# Airlines and destinations in the charts (the largest by flights); the tables list them all.
CHART_CATEGORIES = 15
# Days in the day-by-hour table (the calendar image shows every day); later days are left out, said so.
CALENDAR_TABLE_DAYS = 400
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
COLOURS = "YlOrRd"
# The model parameters of the explained sample (the same unseen-category rule as score).
EXPLAIN_PARAMS = {"unknown_categories": "score", EXPLAIN_PARAM: True}


def report_uri(output: str) -> str:
    """Where the report goes: ``scores.parquet`` -> ``scores.report.html``, beside the output."""
    if output.lower().endswith(".parquet"):
        return output[: -len(".parquet")] + ".report.html"
    return output + ".report.html"


# ------------------------------------------------------------------ one pass over the output


@dataclass
class Aggregates:
    """What the page is drawn from: sums per group, the riskiest and the flagged flights."""

    flights: int = 0
    probability_sum: float = 0.0
    delayed: int = 0
    cells: list[pd.DataFrame] = field(default_factory=list)
    airlines: list[pd.DataFrame] = field(default_factory=list)
    destinations: list[pd.DataFrame] = field(default_factory=list)
    flagged_by_fields: dict[str, int] = field(default_factory=dict)
    top: pd.DataFrame | None = None
    flagged: pd.DataFrame | None = None

    def table(self, name: str) -> pd.DataFrame:
        """One summed table (``cells``, ``airlines`` or ``destinations``), grouped by its key columns."""
        parts = getattr(self, name)
        if not parts:
            return pd.DataFrame(columns=[*GROUP_KEYS[name], *SUMS])
        keys = [c for c in parts[0].columns if c not in SUMS]
        return pd.concat(parts).groupby(keys, sort=True, dropna=False)[list(SUMS)].sum().reset_index()


# What every group adds up, and the key columns of each group (the names only where the file has them).
SUMS = ("flights", "probability_sum", "delayed")
GROUP_KEYS = {"cells": ["day", "hour"], "airlines": [AIRLINE], "destinations": [DESTINATION]}


def _times(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Scheduled times as timestamps: Arrow's parser for the plain form, the schema's for the rest."""
    text = pc.utf8_trim_whitespace(column.cast(pa.string()))
    times = pc.strptime(text, format=TIME_FORMAT, unit="s", error_is_null=True)
    if isinstance(times, pa.ChunkedArray):
        times = times.combine_chunks()
    missing = np.flatnonzero(times.is_null().to_numpy(zero_copy_only=False))
    if len(missing):  # another form the schema accepts: the same parser score used
        values = np.asarray(times.to_numpy(zero_copy_only=False), dtype="datetime64[s]")
        values[missing] = parse_times(pc.take(column, pa.array(missing)).to_pylist()).astype("datetime64[s]")
        times = pa.array(values, type=pa.timestamp("s"))
    return times


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(code per row, distinct values) of a text column: Arrow's dictionary, no Python string per row."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        column = pc.fill_null(column.cast(pa.string()), "")
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    values = np.asarray(column.dictionary.cast(pa.string()).to_pylist(), dtype=object)
    return column.indices.to_numpy(zero_copy_only=False).astype(np.int64), values


def _sums(codes: np.ndarray, size: int, probability: np.ndarray, delay: np.ndarray) -> tuple[np.ndarray, ...]:
    """(codes used, flights, probability sum, delayed) per code, by ``np.bincount``."""
    flights = np.bincount(codes, minlength=size)
    used = np.flatnonzero(flights)
    sums = np.bincount(codes, weights=probability, minlength=size)
    delayed = np.bincount(codes, weights=delay, minlength=size)
    return used, flights[used], sums[used], delayed[used].astype(np.int64)


def _by_codes(table: pa.Table, key: str, name: str, probability: np.ndarray, delay: np.ndarray) -> pd.DataFrame:
    """Sums per (``key``, ``name``) value pair of one batch (``name`` left out when the file lacks it)."""
    codes, values = _codes(table[key])
    if name in table.column_names:
        names_codes, names = _codes(table[name])
        used, flights, sums, delayed = _sums(
            codes * len(names) + names_codes, len(values) * len(names), probability, delay
        )
        keys = {key: values[used // len(names)], name: names[used % len(names)]}
    else:
        used, flights, sums, delayed = _sums(codes, len(values), probability, delay)
        keys = {key: values[used]}
    return pd.DataFrame({**keys, "flights": flights, "probability_sum": sums, "delayed": delayed})


def _cells(times: pa.Array, probability: np.ndarray, delay: np.ndarray) -> pd.DataFrame:
    """Sums per (day, hour of departure) of one batch."""
    days = times.cast(pa.date32()).cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
    hours = pc.hour(times).to_numpy(zero_copy_only=False).astype(np.int64)
    first = int(days.min())
    used, flights, sums, delayed = _sums(
        (days - first) * 24 + hours, (int(days.max()) - first + 1) * 24, probability, delay
    )
    day = (first + used // 24).astype("datetime64[D]")
    return pd.DataFrame(
        {"day": day, "hour": used % 24, "flights": flights, "probability_sum": sums, "delayed": delayed}
    )


def aggregate(path: str | Path) -> Aggregates:
    """Read ``score``'s output once, in batches, and sum what the report shows."""
    present = set(pq.ParquetFile(path).schema_arrow.names)
    # Every text column but the time as Arrow dictionaries: codes per row, each distinct value once.
    text = [c for c in (*FLIGHT_COLUMNS, UNKNOWN_FIELDS) if c in present and c != SCHEDULED_TIME]
    parquet = pq.ParquetFile(path, read_dictionary=text)
    flight_columns = [c for c in FLIGHT_COLUMNS if c in present]
    columns = [*flight_columns, PROBABILITY, DELAY, *([UNKNOWN_FIELDS] if UNKNOWN_FIELDS in present else [])]
    result = Aggregates()
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
        table = pa.Table.from_batches([batch])
        if not table.num_rows:
            continue
        probability = table[PROBABILITY].to_numpy().astype(np.float64)
        delay = table[DELAY].to_numpy().astype(np.int64)
        result.flights += table.num_rows
        result.probability_sum += float(probability.sum())
        result.delayed += int(delay.sum())
        result.cells.append(_cells(_times(table[SCHEDULED_TIME]), probability, delay))
        result.airlines.append(_by_codes(table, AIRLINE, AIRLINE_NAME, probability, delay))
        result.destinations.append(_by_codes(table, DESTINATION, CITY, probability, delay))
        keep = np.argpartition(-probability, TOP_FLIGHTS)[:TOP_FLIGHTS] if len(probability) > TOP_FLIGHTS else None
        top = (table if keep is None else table.take(pa.array(keep))).to_pandas()
        result.top = top if result.top is None else pd.concat([result.top, top], ignore_index=True)
        result.top = result.top.sort_values(PROBABILITY, ascending=False, kind="stable").head(TOP_FLIGHTS)
        if UNKNOWN_FIELDS in present:
            codes, values = _codes(table[UNKNOWN_FIELDS])
            flagged = values[codes] != ""
            if flagged.any():
                for key, n in zip(*np.unique(values[codes[flagged]], return_counts=True), strict=True):
                    result.flagged_by_fields[key] = result.flagged_by_fields.get(key, 0) + int(n)
                have = 0 if result.flagged is None else len(result.flagged)
                if have < FLAGGED_LISTED:
                    rows = np.flatnonzero(flagged)[: FLAGGED_LISTED - have]
                    more = table.take(pa.array(rows)).to_pandas()
                    result.flagged = more if result.flagged is None else pd.concat([result.flagged, more])
    for frame in (result.top, result.flagged):
        if frame is not None:  # dictionary columns come back as categoricals: plain text for the page
            for column in frame.columns:
                if isinstance(frame[column].dtype, pd.CategoricalDtype):
                    frame[column] = frame[column].astype(object)
    return result


# ------------------------------------------------------------------ the riskiest flights, explained


def explain_top(model_uri: str, top: pd.DataFrame) -> list[list[dict]]:
    """Per riskiest flight: its three factors (text, direction, probability without it) from the model's ``explain``."""
    if top is None or top.empty or not model_uri:
        return []
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_uri)
    flights = top[[c for c in FLIGHT_COLUMNS if c in top.columns]].reset_index(drop=True)
    explained = model.predict(flights, params=EXPLAIN_PARAMS)
    factors = []
    for values in explained[FACTOR_VALUES_COLUMN]:
        parsed = json.loads(values)
        factors.append(
            [
                {
                    "text": item["text"],
                    "points": parsed["probability"] - item["probability_without"],
                }
                for item in parsed["top"]
            ]
        )
    return factors


# ------------------------------------------------------------------ the page


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(encoded: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _pct(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%"


def _scale(cells: pd.DataFrame) -> mcolors.Normalize:
    """The one colour scale of the page: 0 to the 99th percentile of the cells' mean probability."""
    means = cells["mean"] if len(cells) else pd.Series([0.5])
    top = max(float(np.nanquantile(means, 0.99)), 0.05)
    return mcolors.Normalize(vmin=0.0, vmax=top, clip=True)


def calendar_figure(cells: pd.DataFrame, norm: mcolors.Normalize) -> str:
    """Day (x) by hour of departure (y), coloured by mean delay probability; grey where nothing departs."""
    first, last = cells["day"].min(), cells["day"].max()
    days = pd.date_range(first, last, freq="D")
    grid = np.full((24, len(days)), np.nan)
    column = ((cells["day"] - first) / pd.Timedelta(days=1)).astype(int).to_numpy()
    grid[cells["hour"].to_numpy(), column] = cells["mean"].to_numpy()
    width = min(max(6.0, len(days) / 30), 14.0)
    figure, axes = plt.subplots(figsize=(width, 3.6))
    cmap = plt.get_cmap(COLOURS).with_extremes(bad="#eeeeee")
    image = axes.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
    axes.set_yticks(range(0, 24, 3), [f"{h:02d}:00" for h in range(0, 24, 3)])
    axes.set_ylabel("departure hour")
    starts = [i for i, d in enumerate(days) if d.day == 1] or [0]
    if len(days) <= 45:
        starts = list(range(0, len(days), 7))
        labels = [days[i].strftime("%a %d %b") for i in starts]
    else:
        labels = [
            days[i].strftime("%b %Y") if days[i].month == 1 or i == starts[0] else days[i].strftime("%b")
            for i in starts
        ]
    axes.set_xticks(starts, labels, fontsize=8)
    bar = figure.colorbar(image, ax=axes, pad=0.01)
    bar.set_label("mean delay probability")
    axes.set_title("When the risk sits: every day of the schedule by hour of departure")
    return _png(figure)


def profile_figure(hours: pd.DataFrame, weekdays: pd.DataFrame, norm: mcolors.Normalize) -> str:
    """Mean delay probability by hour of departure and by weekday, bars coloured on the page's scale."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 2.8), gridspec_kw={"width_ratios": [3, 1]})
    cmap = plt.get_cmap(COLOURS)
    for axes, frame, key, labels in (
        (left, hours, "hour", [f"{h:02d}" for h in hours["hour"]]),
        (right, weekdays, "weekday", [WEEKDAYS[w] for w in weekdays["weekday"]]),
    ):
        axes.bar(range(len(frame)), frame["mean"], color=cmap(norm(frame["mean"].to_numpy())), edgecolor="#999")
        axes.set_xticks(range(len(frame)), labels, fontsize=8)
        axes.set_ylabel("mean delay probability" if key == "hour" else "")
        axes.set_xlabel("departure hour" if key == "hour" else "weekday")
        axes.spines[["top", "right"]].set_visible(False)
    return _png(figure)


def share_figure(frame: pd.DataFrame, label: str, norm: mcolors.Normalize, title: str) -> str:
    """Horizontal bars of mean delay probability, each labelled with its share of the schedule."""
    frame = frame.sort_values("mean")
    figure, axes = plt.subplots(figsize=(6, 0.32 * len(frame) + 0.9))
    cmap = plt.get_cmap(COLOURS)
    bars = axes.barh(range(len(frame)), frame["mean"], color=cmap(norm(frame["mean"].to_numpy())), edgecolor="#999")
    axes.set_yticks(range(len(frame)), frame[label].tolist(), fontsize=8)
    for bar, share in zip(bars, frame["share"], strict=True):
        axes.text(
            bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {_pct(share)} of flights", va="center", fontsize=7
        )
    axes.set_xlim(0, float(frame["mean"].max()) * 1.35 if len(frame) else 1)
    axes.set_xlabel("mean delay probability")
    axes.set_title(title, fontsize=10)
    axes.spines[["top", "right"]].set_visible(False)
    return _png(figure)


def _with_means(frame: pd.DataFrame, total: int) -> pd.DataFrame:
    frame = frame.copy()
    frame["mean"] = frame["probability_sum"] / frame["flights"]
    frame["late"] = frame["delayed"] / frame["flights"]
    frame["share"] = frame["flights"] / max(total, 1)
    return frame


def _by_category(frame: pd.DataFrame, key: str, name: str | None, total: int) -> pd.DataFrame:
    """Groups of values as given, merged under the model's normalisation; the most frequent name beside each."""
    if frame.empty:
        return _with_means(frame.assign(label=[]), total)
    frame = frame.assign(**{key: normalise_category(frame[key]).astype(object)})
    sums = frame.groupby(key)[["flights", "probability_sum", "delayed"]].sum().reset_index()
    if name and name in frame.columns:
        names = frame.sort_values("flights", ascending=False).drop_duplicates(key).set_index(key)[name]
        sums["label"] = [f"{k} · {names.get(k, '')}" for k in sums[key]]
    else:
        sums["label"] = sums[key]
    return _with_means(sums, total)


def _cell_colours(values: np.ndarray, norm: mcolors.Normalize) -> list[tuple[str, str]]:
    """(background, text colour) per value on the page's scale (one colormap call for every cell)."""
    rgba = plt.get_cmap(COLOURS)(norm(np.asarray(values, dtype=float)))
    dark = (0.299 * rgba[:, 0] + 0.587 * rgba[:, 1] + 0.114 * rgba[:, 2]) <= 0.55
    hexes = ["#{:02x}{:02x}{:02x}".format(*c) for c in np.round(rgba[:, :3] * 255).astype(int).tolist()]
    return [(h, "#fff" if d else "#000") for h, d in zip(hexes, dark.tolist(), strict=True)]


def _rows(frame: pd.DataFrame, columns: list[tuple[str, str, str]]) -> str:
    """An HTML table: (column, heading, format) per column; format "pct", "int", "prob" or "" (text)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in columns)
    body = []
    for record in frame.to_dict("records"):
        cells = []
        for column, _, kind in columns:
            value = record[column]
            if kind == "pct":
                cells.append(f'<td class="n">{_pct(value)}</td>')
            elif kind == "int":
                cells.append(f'<td class="n">{int(value):,}</td>')
            elif kind == "prob":
                cells.append(f'<td class="n">{value:.3f}</td>')
            else:
                cells.append(f"<td>{html.escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def calendar_table(cells: pd.DataFrame, norm: mcolors.Normalize) -> str:
    """Day rows by hour columns: flights in each cell, coloured by their mean probability, details on hover."""
    days = sorted(cells["day"].unique())
    shown = days[:CALENDAR_TABLE_DAYS]
    note = ""
    if len(days) > len(shown):
        note = (
            f"<p class='note'>The table shows the first {CALENDAR_TABLE_DAYS} days (CALENDAR_TABLE_DAYS) of "
            f"{len(days)}; the calendar image above shows them all.</p>"
        )
    colours = _cell_colours(cells["mean"].to_numpy(), norm)
    lookup = {
        (d, h): (n, m, c)
        for d, h, n, m, c in zip(cells["day"], cells["hour"], cells["flights"], cells["mean"], colours, strict=True)
    }
    head = "<th>day</th>" + "".join(f"<th>{h:02d}</th>" for h in range(24))
    body = []
    for day in shown:
        stamp = pd.Timestamp(day)
        label = stamp.strftime("%a %Y-%m-%d")
        cells_html = [f"<th>{label}</th>"]
        for hour in range(24):
            if (day, hour) not in lookup:
                cells_html.append("<td></td>")
                continue
            n, mean, (background, colour) = lookup[(day, hour)]
            tip = f"{label} {hour:02d}:00-{hour:02d}:59: {int(n)} flights, mean delay probability {mean:.3f}"
            cells_html.append(f'<td style="background:{background};color:{colour}" title="{tip}">{int(n)}</td>')
        body.append("<tr>" + "".join(cells_html) + "</tr>")
    return (
        f'{note}<table class="calendar" id="calendar-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


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
        f"<div class='card'><b>{_pct(found.delayed / total if total else 0)}</b>"
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

    cells = _with_means(found.table("cells"), total)
    cells["day"] = pd.to_datetime(cells["day"])
    norm = _scale(cells)
    parts.append("<h2 id='calendar'>Calendar</h2>")
    parts.append(_img(calendar_figure(cells, norm), "calendar of mean delay probability by day and hour"))
    hours = _with_means(cells.groupby("hour")[["flights", "probability_sum", "delayed"]].sum().reset_index(), total)
    days = _with_means(cells.groupby("day")[["flights", "probability_sum", "delayed"]].sum().reset_index(), total)
    weekday = cells.assign(weekday=cells["day"].dt.weekday)
    weekdays = _with_means(
        weekday.groupby("weekday")[["flights", "probability_sum", "delayed"]].sum().reset_index(), total
    )
    parts.append(_img(profile_figure(hours, weekdays, norm), "mean delay probability by hour and weekday"))

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
    parts.append(f"<div><h3>Days</h3>{_rows(riskiest_days, [('day', 'day', ''), *when])}</div>")
    parts.append(f"<div><h3>Hours of departure</h3>{_rows(riskiest_hours, [('hour', 'hour', ''), *when])}</div></div>")

    airlines = _by_category(found.table("airlines"), AIRLINE, AIRLINE_NAME, total)
    destinations = _by_category(found.table("destinations"), DESTINATION, CITY, total)
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
            + _img(share_figure(largest, "label", norm, title), f"risk by {kind}")
            + f"<details><summary>All {len(frame)} {kind}s</summary>"
            + _rows(frame.sort_values("mean", ascending=False), [("label", kind, ""), *stat])
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
        parts.append(_rows(by_field, [("fields", "unseen field(s)", ""), ("flights", "flights", "int")]))
        listed = found.flagged.reset_index(drop=True)
        shown = [
            c
            for c in (SCHEDULED_TIME, "Vlo-I", AIRLINE, DESTINATION, "TIPOVUELO", AIRLINE_NAME, CITY)
            if c in listed.columns
        ]
        parts.append(
            f"<p class='note'>The first {len(listed)} of them (FLAGGED_LISTED = {FLAGGED_LISTED}):</p>"
            + _rows(
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
    output: str, data: str, counts: dict, workdir: Path, model_name: str = "", model_version: str = ""
) -> str:
    """``score``'s one call: the report of ``output`` beside it (gs:// uploaded there) and as the run's artifact.

    Returns where the report went.
    """
    import mlflow

    local_output = local_copy(output, workdir)
    target = report_uri(output)
    local = workdir / Path(target).name if is_gs(target) else local_path(target)
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
    staged = local.with_name(f".{local.name}.partial")
    try:
        seconds = build_report(local_output, staged, about)
        staged.replace(local)
    finally:
        staged.unlink(missing_ok=True)
    if mlflow.active_run():
        mlflow.log_artifact(str(local))
        mlflow.log_metric("report_seconds", seconds["total"])
    if is_gs(target):
        publish(local, target)
    return target
