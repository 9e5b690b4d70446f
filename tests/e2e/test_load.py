"""Load and backpressure through real stages on the real Redis: many sessions at once, more sessions than
executors (they wait in the queue, and the wait is in their Summary), and an admission limit that refuses
with a typed error and loses nothing it accepted."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess

import pytest
from rq import Queue

from eager.common.connection import connect
from eager.common.protocol import Keys, SessionStarted, SessionStatus, Summary
from eager import load
from eager.client import Client, Overloaded
from eager.replay import ReplayServer, SpeedProfile
from eager.common.lease import UPSTREAM_GRACE_LEASES
from tests.conftest import BIN, stage_env
from tests.helpers import answer_of

QUICK = "total = sum(range(200_000))\nprint(total)\nsquares = [n * n for n in range(50_000)]\nprint(len(squares))\n"
QUICK_STDOUT = f"{sum(range(200_000))}\n50000\n"
# Mostly waiting, so a session holds its executor for a while without loading the machine.
SLOW = "import time\nprint('start')\ntime.sleep(1.5)\nprint('done')\n"
FAST_MODEL = SpeedProfile(ttft_s=0.05, tokens_per_s=400.0)
PROMPT = [{"role": "user", "content": "go"}]


@pytest.fixture
def replay():
    """`replay(code)` serves an answer with `code` as the model `load`, and returns its base URL."""
    servers: list[ReplayServer] = []

    def start(code: str) -> str:
        servers.append(ReplayServer({load.REPLAY_MODEL: answer_of(code)}, FAST_MODEL).start())
        return servers[-1].base_url

    yield start
    for server in servers:
        server.stop()


def model(settings, base_url: str):
    return dataclasses.replace(settings, model_base_url=base_url, model=load.REPLAY_MODEL)


def until_started(session) -> None:
    for message in session.events(tokens=False):
        if isinstance(message, SessionStarted):
            return
        assert not isinstance(message, Summary), message
    raise AssertionError("the session ended without starting")


@pytest.mark.slow
def test_a_small_load_ends_every_session_ok_and_counts_them(settings, replay):
    samples: list[load.Sample] = []
    report = load.run_point(model(settings, replay(QUICK)), executors=2, sessions=12, concurrency=6,
                            on_done=samples.append)
    assert report.statuses == {"ok": 12}, [s.detail for s in samples if s.status != "ok"]
    assert report.sessions == report.accepted == report.ok == len(samples) == 12
    assert report.executors == 2 and report.concurrency == 6 and report.errors == {}
    assert len({s.submitted_ns for s in samples}) == 12 and all(s.started_ns and s.finished_ns for s in samples)
    first, last = min(s.submitted_ns for s in samples), max(s.done_ns for s in samples)
    assert report.wall_s == pytest.approx((last - first) / 1e9)
    assert report.throughput == pytest.approx(12 / report.wall_s)
    e2e = sorted(s.e2e_s for s in samples)
    assert report.e2e_s == load.Percentiles(e2e[5], e2e[10], e2e[11])  # nearest rank of 12: 6th, 11th, 12th
    assert report.e2e_s.p50 <= report.e2e_s.p90 <= report.e2e_s.p99 <= report.wall_s
    assert report.queue_wait_s is not None and report.ttft_s is not None and 0 < report.cpu_busy <= 1
    # six in flight, two executors: at no moment do more than two sessions run
    events = sorted([(s.started_ns, 1) for s in samples] + [(s.finished_ns, -1) for s in samples])
    running = [sum(step for _, step in events[:n + 1]) for n in range(len(events))]
    assert max(running) == 2


@pytest.mark.slow
def test_fifty_sessions_at_once_lose_nothing(settings):
    """Fifty sessions submitted at once, all generating together (about 2.5 s each, 7500 tokens/s in all) while
    two executors work through them: every one ends ok. One producer and one detector carry all fifty streams,
    each with its lease, cancel watch and token publishing on one Redis connection pool."""
    code = "".join(f"value_{n} = sum(range({n} * 1000))  # step {n} of the warm-up\nprint(value_{n})\n" for n in range(12))
    with ReplayServer({load.REPLAY_MODEL: answer_of(code)}, SpeedProfile(ttft_s=0.05, tokens_per_s=150.0)) as server:
        samples: list[load.Sample] = []
        report = load.run_point(model(settings, server.base_url), executors=2, sessions=50, concurrency=50,
                                on_done=samples.append)
    assert report.statuses == {"ok": 50}, sorted({s.detail for s in samples if s.status != "ok"})
    assert len(samples) == 50 and all(s.started_ns and s.finished_ns for s in samples)
    assert report.queue_wait_s.p99 > report.queue_wait_s.p50  # they did queue

@pytest.mark.slow
def test_more_sessions_than_executors_wait_in_the_queue_and_all_end_ok(settings, replay):
    """One executor, four sessions at once: they run one after another, each later one waits for the ones
    before it, and the wait shows in its Summary. The last waits longer than an executor gives a session whose
    detector is gone (it finished long ago), so a queued session must not be taken for an abandoned one."""
    configured = dataclasses.replace(model(settings, replay(SLOW)), lease_s=1.0)
    samples: list[load.Sample] = []
    report = load.run_point(configured, executors=1, sessions=4, concurrency=4, on_done=samples.append)
    assert report.statuses == {"ok": 4}, [s.detail for s in samples if s.status != "ok"]
    by_start = sorted(samples, key=lambda s: s.started_ns)
    for before, after in itertools.pairwise(by_start):
        assert after.started_ns >= before.finished_ns  # one at a time
        assert after.queue_wait_s >= (before.finished_ns - after.submitted_ns) / 1e9 > 0
    waits = [s.queue_wait_s for s in by_start]
    assert waits == sorted(waits) and waits[-1] > 3 * 1.5  # behind three sessions of 1.5 s of sleep at least
    assert waits[-1] > UPSTREAM_GRACE_LEASES * configured.lease_s
    assert report.queue_wait_s.p99 == pytest.approx(waits[-1])


@pytest.mark.slow
def test_the_admission_limit_refuses_with_a_typed_error_and_loses_nothing(replay_stack):
    """EAGER_MAX_QUEUED=1: with one session running and one waiting, the next submit is refused before
    anything is sent; each accepted session ends ok; once the queue drains, sessions are accepted again."""
    ready, _ = replay_stack({load.REPLAY_MODEL: answer_of(SLOW)}, FAST_MODEL)  # the Procfile stack, one executor
    limited = dataclasses.replace(ready, max_queued=1)
    keys, redis = Keys(limited.namespace), connect(limited)
    queue = Queue(keys.executor_queue, connection=connect(limited, decode=False))
    with Client(limited) as client:
        running = client.submit(messages=PROMPT)
        until_started(running)  # the executor is busy with it for 1.5 s
        waiting = client.submit(messages=PROMPT)  # the queue held none: accepted, and now it holds one
        with pytest.raises(Overloaded) as refused:
            client.submit(messages=PROMPT)
        assert refused.value.queued == 1 and refused.value.limit == 1
        assert "EAGER_MAX_QUEUED=1" in str(refused.value) and "nothing was submitted" in str(refused.value)
        # the load generator counts refusals as such, and goes on
        samples = load.run_sessions(limited, sessions=3, concurrency=1, backoff_s=0)
        assert [s.status for s in samples] == [load.OVERLOADED] * 3
        assert redis.xlen(keys.requests) == 2  # nothing of the refused ones was published...
        assert queue.count == 1  # ...or enqueued: only the waiting session is in the queue
        assert running.result().status is SessionStatus.OK
        until_started(waiting)
        again = client.submit(messages=PROMPT)  # the queue drained: accepted again
        summaries = [running.result(), waiting.result(), again.result()]
    redis.close()
    queue.connection.close()
    assert [s.status for s in summaries] == [SessionStatus.OK] * 3
    assert all(s.stdout == "start\ndone\n" for s in summaries)
    assert summaries[1].queue_wait_s > 1.0  # it waited for the running one
    assert summaries[1].started_ns >= summaries[0].finished_ns


@pytest.mark.slow
def test_eager_load_sweep_writes_its_table_and_eager_run_shows_the_queue_wait(settings, tmp_path):
    answer = tmp_path / "answer.md"
    answer.write_text(answer_of(QUICK))
    env = stage_env(settings)
    common = ["--answer", str(answer), "--ttft", "0.05", "--tps", "400"]
    result = subprocess.run([str(BIN / "eager"), "load", "--sweep", "1,2", "--sessions", "4", "--concurrency", "2",
                             "--out", str(tmp_path / "out"), *common], capture_output=True, text=True, env=env,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| executors |" in result.stdout and "ok 4 of 4 accepted" in result.stdout
    data = json.loads((tmp_path / "out" / "load.json").read_text())
    assert [p["executors"] for p in data["points"]] == [1, 2]
    assert all(p["statuses"] == {"ok": 4} and p["concurrency"] == 2 for p in data["points"])
    assert data["parameters"]["command"].startswith("eager load --sweep 1,2")
    table = (tmp_path / "out" / "load.md").read_text().splitlines()
    assert [line[:14] for line in table if line.startswith(("| 1 | 4 |", "| 2 | 4 |"))] == ["| 1 | 4 | 2 | ", "| 2 | 4 | 2 | "]
    assert "| executors | detector | executor | load generator | producer | rest of the machine | all |" in table
    assert (tmp_path / "out" / "load.png").stat().st_size > 10_000

    result = subprocess.run([str(BIN / "eager"), "run", "--replay", str(answer), "--json", *common[2:]],
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["stdout"] == QUICK_STDOUT
    assert 0 < summary["queue_wait_s"] < summary["e2e_s"] and summary["started_ns"] > summary["submitted_ns"]


@pytest.mark.slow
def test_eager_load_running_loads_the_procfile_stack(replay_stack):
    ready, _ = replay_stack({load.REPLAY_MODEL: answer_of(QUICK)}, FAST_MODEL)
    result = subprocess.run([str(BIN / "eager"), "load", "--running", "--sessions", "6", "--concurrency", "3",
                             "--json"], capture_output=True, text=True, env=stage_env(ready), timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    [report] = json.loads(result.stdout)
    assert report["executors"] == 1 and report["statuses"] == {"ok": 6} and report["concurrency"] == 3
    assert report["queue_wait_s"]["p99"] > 0 and report["throughput"] > 0
