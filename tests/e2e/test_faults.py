"""Stage processes killed mid-session (Procfile stages on the real Redis): the client still gets a
terminal event, and the stack serves the next session."""

from __future__ import annotations

import contextlib
import os
import signal

import psutil
import pytest

from common.protocol import Output, SessionStarted, SessionStatus, Summary
from eager.client import Client
from eager.replay import SpeedProfile
from tests.helpers import answer_of, collect

SLEEPER = answer_of("import time\nprint('started', flush=True)\ntime.sleep(60)\nprint('never')\n")
QUICK = answer_of("print(6 * 7)\n")


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
        started = next(e for e in events if isinstance(e, SessionStarted))
        with contextlib.suppress(psutil.NoSuchProcess):  # the worker retires the horse's interpreter
            psutil.Process(started.interpreter_pid).wait(timeout=10)
        assert not psutil.pid_exists(started.interpreter_pid)
        record = server.ended("sleeper")
        assert record["tokens_sent"] < record["tokens_total"], "the model was not stopped"

        _, after = collect(client.submit(messages=[{"role": "user", "content": "go"}], model="quick"))
        assert after.status is SessionStatus.OK and after.stdout == "42\n"
