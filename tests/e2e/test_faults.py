"""Stage processes killed mid-session (Procfile stages on the real Redis): the client still gets a
terminal event, and the stack serves the next session."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import time

import psutil
import pytest
from rq.job import Job, JobStatus

from eager.common.config import Settings
from eager.common.protocol import BatchStarted, ChunkReady, Output, SessionStarted, SessionStatus, Summary, decode
from eager.client import Client
from eager.replay import SpeedProfile
from tests.helpers import answer_of, assert_session_keys_expire, collect, eventually, run_with_python

SLEEPER = answer_of("import time\nprint('started', flush=True)\ntime.sleep(60)\nprint('never')\n")
QUICK = answer_of("print(6 * 7)\n")
LONG = answer_of("".join(f"value_{i} = {i}  # a statement among many, so generation takes seconds\n" for i in range(60)))
TERMINAL_WITHIN_S = 10.0  # with 1 s leases; the session deadline (300 s) is what this must beat


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Short leases, so a lost stage is noticed within a second or two."""
    return dataclasses.replace(settings, lease_s=1.0)


def work_horses(executor: psutil.Process) -> list[psutil.Process]:
    """RQ forks a horse per job: a child with the executor's own command line (interpreters have another)."""
    return [child for child in executor.children() if child.cmdline() == executor.cmdline()]


@pytest.mark.slow
def test_a_killed_work_horse_ends_its_session_failed_and_stops_the_model(replay_stack):
    settings, server = replay_stack({"sleeper": SLEEPER + "x" * 2000, "quick": QUICK},
                                    SpeedProfile(ttft_s=0.05, tokens_per_s=200.0))
    executor = psutil.Process(replay_stack.stack.processes["executor"].pid)
    with Client(settings) as client:
        session = client.submit(messages=[{"role": "user", "content": "go"}], model="sleeper")
        events = []
        for event in session.events(tokens=False):
            events.append(event)
            if isinstance(event, Output) and sum(isinstance(e, Output) for e in events) == 1:  # mid-batch
                (horse,) = work_horses(executor)
                os.kill(horse.pid, signal.SIGKILL)
        summary = events[-1]
        assert isinstance(summary, Summary)
        assert summary.status is SessionStatus.FAILED and "work horse died" in summary.detail
        assert_session_keys_expire(settings, session.id)
        started = next(e for e in events if isinstance(e, SessionStarted))
        with contextlib.suppress(psutil.NoSuchProcess):  # the worker retires the horse's interpreter
            psutil.Process(started.interpreter_pid).wait(timeout=10)
        assert not psutil.pid_exists(started.interpreter_pid)
        record = server.ended("sleeper")
        assert record["tokens_sent"] < record["tokens_total"], "the model was not stopped"

        _, after = collect(client.submit(messages=[{"role": "user", "content": "go"}], model="quick"))
        assert after.status is SessionStatus.OK and after.stdout == "42\n"


@pytest.mark.slow
def test_a_killed_producer_ends_its_session_within_a_lease_and_a_new_one_serves_the_next(replay_stack):
    settings, _ = replay_stack({"long": LONG, "quick": QUICK}, SpeedProfile(ttft_s=0.05, tokens_per_s=100.0))
    stack = replay_stack.stack
    with Client(settings) as client:
        session = client.submit(messages=[{"role": "user", "content": "go"}], model="long")
        killed_at = None
        for event in session.events(tokens=False):
            if isinstance(event, ChunkReady) and killed_at is None:  # mid-generation
                stack.processes["producer"].send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
        summary = session.summary
        assert time.monotonic() - killed_at < TERMINAL_WITHIN_S
        assert summary.status is SessionStatus.MODEL_ERROR
        assert "producer stopped renewing its lease" in summary.detail
        assert_session_keys_expire(settings, session.id)

        stack.spawn("producer")
        stack.wait_alive()
        _, after = collect(client.submit(messages=[{"role": "user", "content": "go"}], model="quick"))
        assert after.status is SessionStatus.OK and after.stdout == "42\n"


@pytest.mark.slow
def test_a_killed_executor_ends_its_session_failed_stops_the_model_and_a_new_one_serves_the_next(replay_stack):
    settings, server = replay_stack({"sleeper": SLEEPER + "x" * 2000, "quick": QUICK},
                                    SpeedProfile(ttft_s=0.05, tokens_per_s=200.0))
    stack = replay_stack.stack
    executor = psutil.Process(stack.processes["executor"].pid)
    with Client(settings) as client:
        session = client.submit(messages=[{"role": "user", "content": "go"}], model="sleeper")
        killed_at, started = None, None
        for event in session.events(tokens=False):
            started = event if isinstance(event, SessionStarted) else started
            if isinstance(event, Output) and killed_at is None:  # mid-batch: worker and horse at once
                for process in [*work_horses(executor), executor]:
                    process.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
        summary = session.summary
        assert time.monotonic() - killed_at < TERMINAL_WITHIN_S
        assert summary.status is SessionStatus.FAILED and "executor stopped renewing its lease" in summary.detail
        stored = [decode(fields) for _, fields in client.redis.xrange(client.keys.events(session.id))]
        assert [e.status for e in stored if isinstance(e, Summary)] == [SessionStatus.FAILED]  # for every reader
        assert_session_keys_expire(settings, session.id)
        record = server.ended("sleeper")
        assert record["tokens_sent"] < record["tokens_total"], "the model was not stopped"
        with contextlib.suppress(psutil.NoSuchProcess):  # the interpreter dies with the worker that started it
            psutil.Process(started.interpreter_pid).wait(timeout=10)
        assert not psutil.pid_exists(started.interpreter_pid)

        stack.spawn("executor")
        stack.wait_alive()
        _, after = collect(client.submit(messages=[{"role": "user", "content": "go"}], model="quick"))
        assert after.status is SessionStatus.OK and after.stdout == "42\n"


PRINTS = "".join(f"print('line {i}')  # one statement of many, so generation takes a few seconds\n" for i in range(40))


@pytest.mark.slow
def test_a_killed_detector_is_taken_over_and_every_chunk_runs_exactly_once(replay_stack, tmp_path):
    settings, _ = replay_stack({"prints": answer_of(PRINTS)}, SpeedProfile(ttft_s=0.05, tokens_per_s=150.0))
    stack = replay_stack.stack
    stack.spawn("detector-2", "detector")
    stack.wait_alive()
    with Client(settings) as client:
        session = client.submit(messages=[{"role": "user", "content": "go"}], model="prints")
        events, killed = [], None
        for event in session.events(tokens=False):
            events.append(event)
            if isinstance(event, Output) and killed is None:
                owner = client.redis.get(client.keys.lease(session.id, "detector"))
                killed = next(name for name, process in stack.processes.items()
                              if owner == f"{socket.gethostname()}:{process.pid}")
                stack.processes[killed].send_signal(signal.SIGKILL)
        summary = session.summary
        stream = [decode(fields) for _, fields in client.redis.xrange(client.keys.chunks(session.id))]
    published = [m.seq for m in stream if isinstance(m, ChunkReady)]
    assert published == list(range(summary.chunks))  # the successor published only what was missing
    assert killed in ("detector", "detector-2")
    assert summary.status is SessionStatus.OK, summary
    assert summary.stdout == run_with_python(PRINTS, tmp_path).stdout  # nothing lost, nothing twice
    ran = sorted(seq for e in events if isinstance(e, BatchStarted) for seq in range(e.first_seq, e.last_seq + 1))
    assert ran == list(range(summary.chunks))


@pytest.mark.slow
def test_a_killed_interpreter_ends_its_session_and_the_worker_serves_the_next(replay_stack):
    settings, _ = replay_stack({"sleeper": SLEEPER, "quick": QUICK}, SpeedProfile(ttft_s=0.05, tokens_per_s=200.0))
    with Client(settings) as client:
        session = client.submit(messages=[{"role": "user", "content": "go"}], model="sleeper")
        started, killed = None, False
        for event in session.events(tokens=False):
            started = event if isinstance(event, SessionStarted) else started
            if isinstance(event, Output) and not killed:  # the program is in its sleep: output may come in pieces
                os.kill(started.interpreter_pid, signal.SIGKILL)
                killed = True
        assert session.summary.status is SessionStatus.INTERPRETER_DIED, session.summary
        assert "SIGKILL" in session.summary.detail
        assert_session_keys_expire(settings, session.id)
        _, after = collect(client.submit(messages=[{"role": "user", "content": "go"}], model="quick"))
        assert after.status is SessionStatus.OK and after.stdout == "42\n"


@pytest.mark.slow
def test_an_executor_that_outlives_its_lease_does_not_end_the_session_a_second_time(replay_stack):
    """Racing enders: the horse is frozen (alive, lease lapsing), the client ends the session, the horse thaws
    and finishes the program, and the worker observes the job: the events stream still holds one Summary."""
    settings, _ = replay_stack({"napper": answer_of("import time\nprint('started', flush=True)\ntime.sleep(2)\n"
                                                    "print('woke')\n")}, SpeedProfile(ttft_s=0.05, tokens_per_s=400.0))
    with Client(settings) as client:
        session = client.submit(messages=[{"role": "user", "content": "go"}], model="napper")
        horse = None
        for event in session.events(tokens=False):
            if isinstance(event, Output) and horse is None:
                owner = client.redis.get(client.keys.lease(session.id, "executor"))
                horse = psutil.Process(int(owner.rpartition(":")[2]))
                horse.suspend()
        summary = session.summary
        assert summary.status is SessionStatus.FAILED and "executor stopped renewing its lease" in summary.detail
        horse.resume()
        job = Job.fetch(client.keys.executor_job_id(session.id), connection=client._queue.connection)
        eventually(lambda: job.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED),
                   "the thawed horse finishes its job", within_s=30)
        stored = [decode(fields) for _, fields in client.redis.xrange(client.keys.events(session.id))]
        assert "".join(e.text for e in stored if isinstance(e, Output)) == "started\nwoke\n", "it did not run on"
        assert [e.detail for e in stored if isinstance(e, Summary)] == [summary.detail]
        assert session.result() is summary
