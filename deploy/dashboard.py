"""The Grafana dashboard's panels as plain Prometheus queries.

The panel queries live in one place, `deploy/grafana/dashboards/eager.json`, the file Grafana
loads. The end-to-end test (every panel has data) and `render_dashboard.py` (the same panels as
a PNG, where no Grafana runs) read them from there through this module, so a query is never
copied and the picture, the test and Grafana cannot drift apart.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parent / "grafana" / "dashboards" / "eager.json"

# Grafana's own variables that these panels use. Grafana derives them from the time picker and
# the scrape interval; a plain Prometheus query needs a fixed window in their place.
_WINDOW_VARIABLES = ("__rate_interval", "__interval", "__range")
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass(frozen=True)
class Query:
    """One target of a panel: what Grafana sends to Prometheus, and how it names each series."""

    ref_id: str
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """A panel as much as a renderer needs: where it sits on the 24-column grid, and its queries."""

    id: int
    title: str
    type: str
    unit: str
    grid: tuple[int, int, int, int]  # x, y, w, h in Grafana grid units
    queries: tuple[Query, ...]


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    """The dashboard JSON exactly as Grafana reads it."""
    return json.loads(path.read_text())


def substitute(expr: str, window: str) -> str:
    """`expr` with Grafana's window variables replaced by `window` (a PromQL duration such as `1m`).

    An unknown variable is an error rather than passed through: Prometheus would reject the query
    anyway, and the message would not say which dashboard variable is to blame.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in _WINDOW_VARIABLES:
            raise ValueError(f"no plain-Prometheus value for Grafana variable ${name} in {expr!r}")
        return window

    return _VARIABLE.sub(replace, expr)


def panels(window: str = "1m", dashboard: dict[str, Any] | None = None) -> list[Panel]:
    """Every panel of the dashboard, its queries ready for Prometheus's HTTP API with `window` for rate()."""
    dashboard = load() if dashboard is None else dashboard
    out = []
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        queries = tuple(Query(t["refId"], substitute(t["expr"], window), t.get("legendFormat", ""))
                        for t in panel.get("targets", []))
        out.append(Panel(id=panel["id"], title=panel["title"], type=panel["type"],
                         unit=panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""),
                         grid=(grid["x"], grid["y"], grid["w"], grid["h"]), queries=queries))
    return out


def queries(window: str = "1m") -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel, in dashboard order."""
    return [(panel.title, query.expr) for panel in panels(window) for query in panel.queries]


def legend(template: str, labels: dict[str, str]) -> str:
    """A series' name the way Grafana's legendFormat makes it: `{{gate}} p50` -> `eager p50`."""
    if not template:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()
