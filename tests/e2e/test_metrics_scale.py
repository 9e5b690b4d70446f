"""Metrics of many sessions through the Procfile stack: nothing recorded in RQ's forked work horses is
lost, and the executor's /metrics does not grow with the number of jobs it has run."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from eager.common.protocol import Gate, SessionStatus
from eager.client import Client
from eager.replay import SpeedProfile
from tests.helpers import answer_of, collect, eventually

QUICK = answer_of("total = sum(range(10))\nprint(total)\nprint(total * 2)\n")


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: dict[tuple[str, tuple], float], name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def scrape_once_observed(port: int, sessions: int) -> dict[tuple[str, tuple], float]:
    """The worker observes a session once its horse has exited, just after the client saw the summary."""
    def observed() -> dict[tuple[str, tuple], float] | None:
        samples = scrape(port)
        return samples if total(samples, "eager_executor_sessions_total") >= sessions else None

    return eventually(observed, f"{sessions} sessions counted by the executor")


def run_sessions(settings, count: int) -> None:
    with Client(settings) as client:
        for n in range(count):
            gate = Gate.SERIAL if n % 2 else Gate.EAGER
            _, summary = collect(client.submit(messages=[{"role": "user", "content": "go"}], model="quick", gate=gate))
            assert summary.status is SessionStatus.OK, summary


@pytest.mark.slow
def test_every_session_is_counted_and_the_scrape_stays_flat(replay_stack):
    configured, server = replay_stack({"quick": QUICK}, SpeedProfile(ttft_s=0.01, tokens_per_s=2000.0))
    ports = replay_stack.stack.metrics_ports
    run_sessions(configured, 6)
    early = scrape_once_observed(ports["executor"], 6)
    run_sessions(configured, 34)
    late = scrape_once_observed(ports["executor"], 40)

    assert total(late, "eager_executor_sessions_total") == 40
    ok = {(name, labels): value for (name, labels), value in late.items()
          if name == "eager_executor_sessions_total" and value}
    assert ok == {("eager_executor_sessions_total", (("gate", "eager"), ("status", "ok"))): 20,
                  ("eager_executor_sessions_total", (("gate", "serial"), ("status", "ok"))): 20}
    assert total(late, "eager_executor_end_to_end_seconds_count") == 40
    assert total(late, "eager_executor_batch_seconds_count") >= 40  # at least one batch per session
    assert total(late, "eager_executor_job_start_seconds_count") == 40
    # 34 more jobs, 34 more horses: the same series, only their values moved
    assert late.keys() == early.keys()

    detector, producer = scrape(ports["detector"]), scrape(ports["producer"])
    assert total(detector, "eager_detector_sessions_total") == 40
    assert total(detector, "eager_detector_lag_seconds_count") == 40 * 3
    assert total(producer, "eager_producer_generations_total") == 40
    assert total(producer, "eager_producer_tokens_total") == sum(r["tokens_sent"] for r in server.replays().values())
