"""Draw the dashboard's layout from its JSON, so the docs show what the operator sees.

    .venv/bin/python -m ops.render_dashboard [--dashboard ops/dashboards/notifications.json] [--out docs/dashboard.png]

Each tile is drawn where the mosaic layout puts it, with its title, its y-axis
unit, one legend entry per data set (and where it comes from: a log-based
metric, a built-in metric or PromQL) and its threshold lines. It draws no data:
the image is the layout and the queries, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The figure is drawn without pyplot: no GUI backend, no global state.
from matplotlib.axes import Axes
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
COLORS = ("#1a73e8", "#e8710a", "#12b5cb", "#9334e6", "#188038", "#d01884")
UNIT = 0.36  # inches per mosaic column / row unit


def source(data: dict[str, Any]) -> str:
    """Where a data set's numbers come from, in a few words."""
    query = data["timeSeriesQuery"]
    if "prometheusQuery" in query:
        names = re.findall(r"([a-z_]+:[a-z_0-9]+)\{", query["prometheusQuery"])
        short = [re.sub(r"^logging_googleapis_com:user_(\w+?)(_sum|_count)?$", r"\1", n) for n in names]
        return "PromQL: " + ", ".join(dict.fromkeys(short))
    metric = re.search(r'metric\.type="([^"]+)"', query["timeSeriesFilter"]["filter"])
    name = metric.group(1) if metric else "?"
    aligner = query["timeSeriesFilter"]["aggregation"]["perSeriesAligner"].removeprefix("ALIGN_").lower()
    return f"{name.removeprefix('logging.googleapis.com/user/')} ({aligner})"


def legend_text(data: dict[str, Any]) -> str:
    template = str(data.get("legendTemplate", "series"))
    return re.sub(r"\$\{[a-z]+\.labels\.(\w+)\}", r"<\1>", template)


def _y_range(thresholds: list[dict[str, Any]], unit: str) -> tuple[float, float]:
    if not thresholds:
        return (0.0, 1.0)
    value = float(thresholds[0]["value"])
    if thresholds[0].get("direction") == "BELOW" and unit == "share":
        return (1 - (1 - value) * 5, 1.0)
    return (0.0, value * 2.5)


def draw_chart(axes: Axes, widget: dict[str, Any]) -> None:
    chart = widget["xyChart"]
    unit = chart.get("yAxis", {}).get("label", "")
    thresholds = chart.get("thresholds", [])
    low, high = _y_range(thresholds, unit)
    axes.set_ylim(low, high)
    axes.set_xlim(0, 1)
    axes.set_xticks([0, 0.5, 1], ["-1 h", "-30 min", "now"], fontsize=6)
    axes.tick_params(axis="y", labelsize=6)
    axes.set_ylabel(unit, fontsize=7)
    axes.grid(True, color="#e0e0e0", linewidth=0.5)
    for threshold in thresholds:
        axes.axhline(float(threshold["value"]), color="#d93025", linestyle="--", linewidth=1)
        axes.text(
            0.99,
            float(threshold["value"]),
            f"{threshold.get('label', '')} {threshold['value']:g}",
            color="#d93025",
            fontsize=6,
            ha="right",
            va="bottom",
        )
    for n, data in enumerate(chart["dataSets"]):
        axes.plot([], [], color=COLORS[n % len(COLORS)], linewidth=2, label=legend_text(data))
        axes.text(
            0.01,
            0.04 + 0.1 * n,
            textwrap.shorten(source(data), 70),
            transform=axes.transAxes,
            fontsize=5.5,
            color=COLORS[n % len(COLORS)],
        )
    axes.legend(loc="upper left", fontsize=6, frameon=False)


def draw_text(axes: Axes, widget: dict[str, Any]) -> None:
    axes.axis("off")
    content = str(widget["text"]["content"]).replace("`", "")
    axes.text(0.005, 0.5, "\n".join(textwrap.wrap(content, 190)), fontsize=8, va="center", family="monospace")


def render(dashboard: dict[str, Any]) -> Figure:
    layout = dashboard["mosaicLayout"]
    columns = int(layout["columns"])
    rows = max(int(t["yPos"]) + int(t["height"]) for t in layout["tiles"])
    figure = Figure(figsize=(columns * UNIT, rows * UNIT + 0.6), dpi=110)
    figure.suptitle(f"{dashboard['displayName']} (layout from ops/dashboards/, no data)", fontsize=12, y=0.995)
    top_margin = 0.6 / (rows * UNIT + 0.6)
    for tile in layout["tiles"]:
        x, y = int(tile["xPos"]) / columns, int(tile["yPos"]) / rows
        width, height = int(tile["width"]) / columns, int(tile["height"]) / rows
        scale = 1 - top_margin
        frame = figure.add_axes((x, 1 - top_margin - (y + height) * scale, width, height * scale))
        frame.set_xticks([])
        frame.set_yticks([])
        for spine in frame.spines.values():
            spine.set_color("#dadce0")
        widget = tile["widget"]
        title = "\n".join(textwrap.wrap(str(widget.get("title", "")), 58))
        frame.text(0.03, 0.97, title, fontsize=8, fontweight="bold", va="top", transform=frame.transAxes)
        inner_y = 1 - top_margin - (y + height * 0.88) * scale
        inner = (x + width * 0.12, inner_y, width * 0.84, height * 0.62 * scale)
        if "xyChart" in widget:
            draw_chart(figure.add_axes(inner), widget)
        elif "text" in widget:
            draw_text(frame, widget)
    return figure


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--dashboard", type=Path, default=ROOT / "ops" / "dashboards" / "notifications.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args(argv)
    figure = render(json.loads(args.dashboard.read_text()))
    # Fixed metadata: the same JSON gives the same bytes.
    figure.savefig(args.out, metadata={"Software": None})
    print(f"wrote {args.out.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
