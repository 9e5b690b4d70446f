"""Observability: the Grafana dashboard and the scrape config against the metrics the stages define,
and every panel with data from a real Prometheus scraping a real stack (the Procfile's processes).

The panel queries are read from the dashboard JSON (deploy/dashboard.py), never copied here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import eager.common.metrics
import eager.detector.metrics
import eager.executor_pool.metrics
import eager.producer.metrics
from eager.common.config import Settings
from eager.common.lifetime import die_with_parent
from eager.common.protocol import STAGES, Gate, SessionStatus
from deploy import dashboard
from eager.client import Client
from eager.replay import SpeedProfile
from tests.conftest import free_port
from tests.helpers import answer_of, collect, eventually

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GRAFANA = DEPLOY / "grafana"
METRICS_MODULES: tuple[ModuleType, ...] = (eager.producer.metrics, eager.detector.metrics, eager.executor_pool.metrics, eager.common.metrics)

# The series a collector of each type exposes (the `_created` samples are left out: no panel should use them).
SERIES_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum"),
                   "summary": ("", "_count", "_sum")}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                   "offset", "inf", "nan"}
HONCHO_BASE_PORT, HONCHO_PORT_STEP = 5000, 100  # honcho's $PORT: 5000 for the first Procfile line, +100 per line
DEPLOYED_EXECUTORS = 4


def defined_series() -> set[str]:
    """Every series name the stages' metrics modules can expose, from their prometheus-client collectors."""
    names = set()
    for module in METRICS_MODULES:
        for collector in vars(module).values():
            if isinstance(collector, MetricWrapperBase):
                for family in collector.describe():
                    names.update(family.name + suffix for suffix in SERIES_SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label matchers, range
    windows, grouping clauses, function calls, keywords and numbers are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    identifiers = re.findall(r"\b[A-Za-z_][A-Za-z0-9_]*\b(?!\s*\()", expr)
    return {name for name in identifiers if name.lower() not in PROMQL_KEYWORDS}


def procfile_names() -> list[str]:
    """The Procfile's lines in order (honcho numbers ports by line), stages only: the model server has no /metrics."""
    return [line.split(":", 1)[0] for line in (ROOT / "Procfile").read_text().splitlines()
            if line.strip() and not line.startswith("#") and line.split(":", 1)[0] in STAGES]


def provisioned_datasource() -> dict[str, Any]:
    [datasource] = yaml.safe_load((GRAFANA / "provisioning/datasources/eager.yml").read_text())["datasources"]
    return datasource


# --------------------------------------------------------------------------- static: the files themselves


def test_dashboard_panels_are_well_formed_and_query_only_metrics_the_stages_define():
    board = dashboard.load()
    uid = provisioned_datasource()["uid"]
    assert board["title"] == "Eager: the pipeline at a glance"
    assert 36 <= board["schemaVersion"] <= 41
    defined = defined_series()
    ids, cells = set(), {}
    for panel in board["panels"]:
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        assert panel["title"] and panel["type"] in {"timeseries", "stat", "heatmap"}, where
        assert panel["id"] not in ids, f"{where}: duplicate id"
        ids.add(panel["id"])
        assert panel["datasource"]["uid"] == uid, where
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in "xywh"), where
        assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] > 0 and grid["h"] > 0, where
        assert grid["x"] + grid["w"] <= 24, f"{where}: wider than Grafana's 24 columns"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{where} overlaps {cells[x, y]}"
                cells[x, y] = where
        assert panel["targets"], f"{where}: no queries"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), f"{where}: duplicate refId"
        for target in panel["targets"]:
            assert target["refId"] and target["expr"].strip(), where
            assert target.get("datasource", {"uid": uid})["uid"] == uid, where
            # Grafana's rate window, never a fixed one: it stays right whatever the scrape interval and zoom.
            assert set(re.findall(r"\[([^\]]*)\]", target["expr"])) <= {"$__rate_interval"}, (where, target["expr"])
            names = metric_names(target["expr"])
            assert names, (where, target["expr"])
            assert names <= defined, f"{where}: {sorted(names - defined)} not defined by any stage's metrics module"


def test_metric_names_are_found_in_promql_the_way_prometheus_reads_it():
    expr = ('histogram_quantile(0.9, sum by (le, gate) (rate(eager_a_bucket{gate="by"}[5m]))) '
            '/ on (gate) group_left sum without (model) (eager_b_total offset 1m) > bool 1e-3')
    assert metric_names(expr) == {"eager_a_bucket", "eager_b_total"}
    assert {"eager_executor_sessions_total", "eager_executor_end_to_end_seconds_bucket",
            "eager_executor_queue_depth"} <= defined_series()
    assert "eager_executor_sessions" not in defined_series()


def test_plain_queries_substitute_grafanas_window_and_refuse_unknown_variables():
    exprs = [expr for _, expr in dashboard.queries("90s")]
    assert exprs and not any("$" in expr for expr in exprs)
    assert any("[90s]" in expr for expr in exprs)
    assert [p.title for p in dashboard.panels()] == [p["title"] for p in dashboard.load()["panels"]]
    with pytest.raises(ValueError, match=r"\$job"):
        dashboard.substitute('up{job="$job"}', "1m")
    assert dashboard.legend("{{gate}} p50", {"gate": "eager"}) == "eager p50"


def test_prometheus_config_scrapes_every_procfile_stage_on_its_honcho_port_and_grafana_knows_the_interval():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "5s"
    jobs = {job["job_name"]: [t for group in job["static_configs"] for t in group["targets"]]
            for job in config["scrape_configs"]}
    expected = {}
    for index, name in enumerate(procfile_names()):
        base = HONCHO_BASE_PORT + HONCHO_PORT_STEP * index  # `honcho start -c executor=N` adds 1 per copy
        copies = DEPLOYED_EXECUTORS if name == "executor" else 1
        expected[f"eager-{name}"] = [f"127.0.0.1:{base + n}" for n in range(copies)]
    assert jobs == expected
    assert expected["eager-executor"][0] == "127.0.0.1:5200"
    assert "prometheus --config.file=deploy/prometheus.yml" in (DEPLOY / "prometheus.yml").read_text()

    datasource = provisioned_datasource()
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://127.0.0.1:9090"
    assert datasource["jsonData"]["timeInterval"] == config["global"]["scrape_interval"]
    [provider] = yaml.safe_load((GRAFANA / "provisioning/dashboards/eager.yml").read_text())["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].endswith("deploy/grafana/dashboards")
    assert (GRAFANA / "dashboards" / "eager.json").is_file()


# --------------------------------------------------------------------------- live: a real Prometheus on a real stack

STEPS = '''import time

total = 0
for n in range(3):
    time.sleep(0.05)
    total += n
print("total", total)
squares = [n * n for n in range(10)]
print("sum of squares", sum(squares))
'''
# The error comes early, so generation is still going when it happens: the executor cancels the model.
FAILS_EARLY = 'print("start", flush=True)\nratio = 1 / 0\n' + "".join(
    f"padding_{i} = {i}  # more of the program the model is still writing\n" for i in range(12))
SPINS = "print('spinning', flush=True)\nwhile True:\n    pass\n"

ANSWERS = {"steps": answer_of(STEPS), "fails-early": answer_of(FAILS_EARLY), "spins": answer_of(SPINS)}
PROFILE = SpeedProfile(ttft_s=0.05, tokens_per_s=150.0)
# After the first session: eager and serial (each gate twice and more, so each labelled histogram grows
# after it first appears), an error (status error, a cancel by the executor, a cancelled generation),
# and a loop the batch timeout kills (a sandbox kill).
SESSIONS: list[tuple[str, Gate, SessionStatus]] = [
    ("steps", Gate.SERIAL, SessionStatus.OK),
    ("steps", Gate.EAGER, SessionStatus.OK),
    ("fails-early", Gate.EAGER, SessionStatus.ERROR),
    ("steps", Gate.SERIAL, SessionStatus.OK),
    ("spins", Gate.EAGER, SessionStatus.TIMEOUT),
    ("steps", Gate.BATCH, SessionStatus.OK),
    ("steps", Gate.EAGER, SessionStatus.OK),
]
# One counter per stage that counts every session once: when all three show N, Prometheus has scraped
# each stage after it observed the N-th session.
SESSION_COUNTS = ("eager_producer_generations_total", "eager_detector_sessions_total", "eager_executor_sessions_total")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A batch timeout short enough that the spinning loop is killed quickly (every other batch is far shorter)."""
    return dataclasses.replace(settings, batch_timeout_s=1.5)


class PrometheusApi:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def total(self, expr: str) -> float | None:
        result = self.query(f"sum({expr})")
        return float(result[0]["value"][1]) if result else None

    def wait(self, what: str, condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
        eventually(condition, f"Prometheus: {what}", timeout_s, every_s=0.1)


@contextmanager
def prometheus(metrics_ports: dict[str, int], tmp_path: Path) -> Iterator[PrometheusApi]:
    """A real `prometheus` scraping the stack every second, with the deployed config's jobs."""
    deployed = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in deployed["scrape_configs"]}
    assert jobs == {f"eager-{name}" for name in metrics_ports}
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": f"eager-{name}", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                           for name, port in metrics_ports.items()],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(tmp_path / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM))  # noqa: PLW1509  as the stages: gone if pytest is killed
    api = PrometheusApi(f"http://127.0.0.1:{port}")
    try:
        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{api.url}/-/ready", timeout=1) as response:
                    return response.status == 200
            except (urllib.error.URLError, OSError):
                return False

        api.wait("ready", ready)
        api.wait("every stage's /metrics scraped and up", lambda: api.total("up") == len(metrics_ports))
        yield api
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_every_dashboard_panel_has_data_from_a_real_prometheus_and_renders(replay_stack, tmp_path):
    started = time.monotonic()
    settings, _ = replay_stack(ANSWERS, PROFILE)
    with prometheus(replay_stack.stack.metrics_ports, tmp_path) as api, Client(settings) as client:
        def run(model: str, gate: Gate, status: SessionStatus) -> None:
            _, summary = collect(client.submit(messages=[{"role": "user", "content": "go"}], model=model, gate=gate))
            assert summary.status is status, (model, gate, summary)

        def scraped(sessions: int) -> None:
            for counter in SESSION_COUNTS:
                api.wait(f"{counter} at {sessions}", lambda counter=counter: api.total(counter) == sessions)

        # Labelled series appear with their first observation, and rate() sees only what changes after a
        # scrape: so the first session is scraped by every stage before the others run.
        run("steps", Gate.EAGER, SessionStatus.OK)
        scraped(1)
        for model, gate, status in SESSIONS:
            run(model, gate, status)
        scraped(1 + len(SESSIONS))

        window = f"{math.ceil(time.monotonic() - started) + 10}s"  # every sample since the stack started
        missing = []
        for panel in dashboard.panels(window):
            for query in panel.queries:
                values = [float(sample["value"][1]) for sample in api.query(query.expr)]
                if not any(math.isfinite(v) for v in values):
                    missing.append(f"{panel.title} [{query.ref_id}] {query.expr} -> {values}")
        assert not missing, "panels without data:\n" + "\n".join(missing)

        out = tmp_path / "dashboard.png"
        rendered = subprocess.run(
            [sys.executable, str(DEPLOY / "render_dashboard.py"), "--prometheus", api.url, "--minutes", "2",
             "--window", window, "--step", "1", "--out", str(out)],
            check=False, capture_output=True, text=True, timeout=60)
        assert rendered.returncode == 0, rendered.stderr
        total = len(dashboard.panels())
        assert f"{total} panels, {total} with data" in rendered.stdout, rendered.stdout
        assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and out.stat().st_size > 50_000
