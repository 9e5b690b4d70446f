"""Draw the Grafana dashboard's panels from a running Prometheus into one PNG, where no Grafana runs.

    .venv/bin/python deploy/render_dashboard.py --prometheus http://127.0.0.1:9090 --minutes 15

The queries are the dashboard's own (deploy/dashboard.py reads them from the JSON Grafana loads),
each run as a query_range over the last N minutes; the panels keep their places on Grafana's
24-column grid. Needs matplotlib: `pip install -e '.[plots]'`.
"""

from __future__ import annotations

import json
import math
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click

if __package__ in (None, ""):  # run as a file, not with -m: make the repository importable for deploy.dashboard
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploy.dashboard import Panel, legend, load, panels

DEFAULT_OUT = Path(__file__).resolve().parent / "dashboard.png"
FIGURE_WIDTH_IN, HEADER_IN, ROW_IN = 22.0, 0.7, 0.42  # about a Grafana grid's proportions on a wide screen
# Room inside each grid cell for what Grafana draws outside the plot: the title above, the time
# axis below, the value axis on the left. In inches, so panels of every size get the same.
PAD_TOP_IN, PAD_BOTTOM_IN, PAD_LEFT_IN, PAD_RIGHT_IN = 0.3, 0.3, 0.75, 0.3


@dataclass(frozen=True)
class Series:
    """One series of a query_range answer: its name (from the panel's legendFormat) and its points."""

    name: str
    labels: dict[str, str]
    times: list[datetime]
    values: list[float]


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    """The `result` of Prometheus's /api/v1/query_range (a matrix), or an error naming the query."""
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    url = f"{prometheus.rstrip('/')}/api/v1/query_range?{params}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:  # a bad query: Prometheus says why in the body
        raise click.ClickException(f"{expr}: {exc.read().decode(errors='replace')}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"no Prometheus answering at {prometheus}: {exc}") from exc
    if body.get("status") != "success":
        raise click.ClickException(f"{expr}: {body.get('error', body)}")
    return list(body["data"]["result"])


def fetch(prometheus: str, panel: Panel, start: float, end: float, step: float) -> list[Series]:
    """Every series of every query of the panel, named as Grafana would name them."""
    out = []
    for query in panel.queries:
        for result in query_range(prometheus, query.expr, start, end, step):
            labels = result["metric"]
            points = result["values"]
            out.append(Series(legend(query.legend, labels), labels,
                              [datetime.fromtimestamp(float(t)) for t, _ in points],
                              [float(v) for _, v in points]))
    return out


def format_value(value: float, unit: str) -> str:
    """A value in the panel's Grafana unit (`s`, `ops`, `short`), readable at a glance."""
    if not math.isfinite(value):
        return "-"
    if unit == "s":
        if value == 0:
            return "0 s"
        for scale, suffix in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {suffix}"
        return f"{value / 1e-6:.2g} µs"
    if unit == "ops":
        return f"{value:.3g}/s"
    return f"{value:.3g}"


def _draw_timeseries(ax: Any, panel: Panel, series: list[Series]) -> None:
    from matplotlib.ticker import FuncFormatter

    for s in series:
        ax.plot(s.times, s.values, linewidth=1.2, label=s.name)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_value(v, panel.unit)))
    finite = [v for s in series for v in s.values if math.isfinite(v)]
    if finite and min(finite) >= 0:
        ax.set_ylim(bottom=0, top=max(finite) * 1.1 if max(finite) > 0 else 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", frameon=False, ncol=2 if len(series) > 4 else 1)


def _draw_stat(ax: Any, panel: Panel, series: list[Series]) -> None:
    last = [next((v for v in reversed(s.values) if math.isfinite(v)), math.nan) for s in series]
    ax.text(0.5, 0.45, "  ".join(format_value(v, panel.unit) for v in last), transform=ax.transAxes,
            ha="center", va="center", fontsize=22, fontweight="bold", color="tab:blue")
    twin = ax.twinx()  # the sparkline behind the number, as Grafana's graphMode "area" draws it
    for s in series:
        twin.fill_between(s.times, [v if math.isfinite(v) else 0 for v in s.values], alpha=0.15, color="tab:blue")
    for axis in (ax, twin):
        axis.set_xticks([])
        axis.set_yticks([])


def _draw_heatmap(ax: Any, panel: Panel, series: list[Series]) -> None:
    """Cumulative `le` buckets to per-bucket rates, drawn over time like Grafana's heatmap of a histogram."""
    import numpy as np

    ordered = sorted(series, key=lambda s: float(s.labels.get("le", "inf")))
    times = sorted({t for s in ordered for t in s.times})  # a bucket missing at a step counts as empty there
    cumulative = np.nan_to_num(np.array([[dict(zip(s.times, s.values)).get(t, 0.0) for t in times] for s in ordered]))
    counts = np.diff(cumulative, axis=0, prepend=0).clip(min=0)
    used = np.flatnonzero(counts.sum(axis=1))
    if used.size == 0:
        ax.text(0.5, 0.5, "no observations", transform=ax.transAxes, ha="center", va="center", color="grey")
        return
    rows = slice(used[0], used[-1] + 1)
    bounds = [s.labels.get("le", "+Inf") for s in ordered][rows]
    ax.pcolormesh(times, np.arange(len(bounds)), counts[rows], shading="nearest", cmap="Oranges")
    ax.set_yticks(np.arange(len(bounds)))
    ax.set_yticklabels([b if b == "+Inf" else f"≤ {format_value(float(b), panel.unit)}" for b in bounds],
                       fontsize=7)


def _rectangle(panel: Panel, width: float, height: float) -> tuple[float, float, float, float]:
    """The panel's plot area in figure fractions, from its gridPos (24 columns, rows of ROW_IN)."""
    x, y, w, h = panel.grid
    column = width / 24
    left = x * column + PAD_LEFT_IN
    top = HEADER_IN + y * ROW_IN + PAD_TOP_IN
    plot_w = w * column - PAD_LEFT_IN - PAD_RIGHT_IN
    plot_h = h * ROW_IN - PAD_TOP_IN - PAD_BOTTOM_IN
    if panel.type == "stat":  # a number needs no axes: use the whole cell
        left, plot_w = x * column + 0.1, w * column - 0.2
    return left / width, 1 - (top + plot_h) / height, plot_w / width, plot_h / height


def render(prometheus: str, minutes: float, window: str, step: float | None, out: Path) -> tuple[int, int]:
    """Draw every panel into `out`; returns (panels, panels with data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    dashboard = load()
    end = time.time()
    start = end - minutes * 60
    step = step or max(1.0, round(minutes * 60 / 300))
    every = panels(window, dashboard)
    width = FIGURE_WIDTH_IN
    height = HEADER_IN + max(p.grid[1] + p.grid[3] for p in every) * ROW_IN
    figure = plt.figure(figsize=(width, height), dpi=100)
    with_data = 0
    for panel in every:
        ax = figure.add_axes(_rectangle(panel, width, height))
        ax.set_title(panel.title, fontsize=10, loc="left")
        series = fetch(prometheus, panel, start, end, step)
        if not any(math.isfinite(v) for s in series for v in s.values):
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", va="center", color="grey")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        with_data += 1
        {"stat": _draw_stat, "heatmap": _draw_heatmap}.get(panel.type, _draw_timeseries)(ax, panel, series)
        if panel.type != "stat":
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
            ax.tick_params(labelsize=7)
            ax.set_xlim(datetime.fromtimestamp(start), datetime.fromtimestamp(end))
    figure.text(0.1 / width, 1 - 0.45 / height,
                f"{dashboard['title']}  —  last {minutes:g} min, rate window {window}, {prometheus}, "
                f"{datetime.fromtimestamp(end):%Y-%m-%d %H:%M:%S}", fontsize=14, fontweight="bold")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
    return len(every), with_data


@click.command()
@click.option("--prometheus", default="http://127.0.0.1:9090", show_default=True, help="Prometheus base URL")
@click.option("--minutes", default=15.0, show_default=True, help="draw the last N minutes")
@click.option("--window", default="1m", show_default=True,
              help="rate() window in place of Grafana's $__rate_interval (at least 4 scrape intervals)")
@click.option("--step", type=float, help="seconds between points (default: about 300 points)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUT, show_default=True)
def main(prometheus: str, minutes: float, window: str, step: float | None, out: Path) -> None:
    """Draw deploy/grafana/dashboards/eager.json's panels from a running Prometheus into one PNG."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise click.ClickException("matplotlib is needed: pip install -e '.[plots]'") from exc
    total, with_data = render(prometheus, minutes, window, step, out)
    click.echo(f"{out}: {total} panels, {with_data} with data")


if __name__ == "__main__":
    main()
