"""report, the pictures: matplotlib PNGs (embedded as base64) and the coloured HTML tables, on one colour scale."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# Days in the day-by-hour table (the calendar image shows every day); later days are left out, said so.
CALENDAR_TABLE_DAYS = 400
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
COLOURS = "YlOrRd"


def png(figure) -> str:
    """The figure as base64 PNG text (the figure is closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def img(encoded: str, alt: str) -> str:
    """An ``<img>`` of an embedded PNG."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def pct(value: float, digits: int = 1) -> str:
    """A share as a percentage."""
    return f"{100 * value:.{digits}f}%"


def colour_scale(cells: pd.DataFrame) -> mcolors.Normalize:
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
    return png(figure)


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
    return png(figure)


def share_figure(frame: pd.DataFrame, label: str, norm: mcolors.Normalize, title: str) -> str:
    """Horizontal bars of mean delay probability, each labelled with its share of the schedule."""
    frame = frame.sort_values("mean")
    figure, axes = plt.subplots(figsize=(6, 0.32 * len(frame) + 0.9))
    cmap = plt.get_cmap(COLOURS)
    bars = axes.barh(range(len(frame)), frame["mean"], color=cmap(norm(frame["mean"].to_numpy())), edgecolor="#999")
    axes.set_yticks(range(len(frame)), frame[label].tolist(), fontsize=8)
    for bar, share in zip(bars, frame["share"], strict=True):
        axes.text(
            bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {pct(share)} of flights", va="center", fontsize=7
        )
    axes.set_xlim(0, float(frame["mean"].max()) * 1.35 if len(frame) else 1)
    axes.set_xlabel("mean delay probability")
    axes.set_title(title, fontsize=10)
    axes.spines[["top", "right"]].set_visible(False)
    return png(figure)


def cell_colours(values: np.ndarray, norm: mcolors.Normalize) -> list[tuple[str, str]]:
    """(background, text colour) per value on the page's scale (one colormap call for every cell)."""
    rgba = plt.get_cmap(COLOURS)(norm(np.asarray(values, dtype=float)))
    dark = (0.299 * rgba[:, 0] + 0.587 * rgba[:, 1] + 0.114 * rgba[:, 2]) <= 0.55
    hexes = ["#{:02x}{:02x}{:02x}".format(*c) for c in np.round(rgba[:, :3] * 255).astype(int).tolist()]
    return [(h, "#fff" if d else "#000") for h, d in zip(hexes, dark.tolist(), strict=True)]


def html_table(frame: pd.DataFrame, columns: list[tuple[str, str, str]]) -> str:
    """An HTML table: (column, heading, format) per column; format "pct", "int", "prob" or "" (text)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in columns)
    body = []
    for record in frame.to_dict("records"):
        cells = []
        for column, _, kind in columns:
            value = record[column]
            if kind == "pct":
                cells.append(f'<td class="n">{pct(value)}</td>')
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
    colours = cell_colours(cells["mean"].to_numpy(), norm)
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
