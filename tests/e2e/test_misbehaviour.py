"""Hostile programs through the whole stack (Procfile stages on the real Redis), on one executor.

Each misbehaviour must end its session with a typed status, and the next session on the
same worker must succeed: the sandbox, not the worker, takes the damage.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from eager.common.config import Settings
from eager.common.protocol import SessionStarted, SessionStatus, Summary
from eager.client import Client
from eager.replay import SpeedProfile
from eager.executor_pool.sandbox import LAYERS
from tests.helpers import answer_of, collect

MISBEHAVIOURS = {
    "fork-bomb": ("import os\nwhile True:\n    os.fork()\n", SessionStatus.ERROR),
    "infinite-loop": ("print('spinning', flush=True)\nwhile True:\n    pass\n", SessionStatus.TIMEOUT),
    "os-exit": ("import os\nprint('bye', flush=True)\nos._exit(3)\n", SessionStatus.INTERPRETER_DIED),
    "segfault": ("import ctypes\nctypes.string_at(0)\n", SessionStatus.INTERPRETER_DIED),
}
WELL_BEHAVED = "import os\nprint('fine', os.listdir('.'))\n"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared fixture's private namespace, with limits short enough for a quick suite."""
    return dataclasses.replace(settings, batch_timeout_s=1.0, sandbox_cpu_s=10, sandbox_processes=32,
                               sandbox_memory_mb=1024, warm_interpreters=1)


def run(settings: Settings, model: str) -> tuple[SessionStarted, Summary]:
    with Client(settings) as client:
        events, summary = collect(client.submit(messages=[{"role": "user", "content": "go"}], model=model))
    started = next(e for e in events if isinstance(e, SessionStarted))
    return started, summary


def test_each_misbehaviour_ends_typed_and_the_next_session_on_the_worker_works(replay_stack):
    answers = {name: answer_of(code) for name, (code, _) in MISBEHAVIOURS.items()}
    settings, _ = replay_stack({**answers, "fine": answer_of(WELL_BEHAVED)},
                               SpeedProfile(ttft_s=0.05, tokens_per_s=400.0))
    workers = set()
    for name, (_, status) in MISBEHAVIOURS.items():
        started, summary = run(settings, name)
        assert summary.status is status, (name, summary)
        if os.geteuid() == 0:
            assert started.isolation == "+".join(LAYERS)
        if name == "fork-bomb":
            assert summary.error["type"] == "BlockingIOError" and summary.error["line"] == 3
        if name == "infinite-loop":
            assert summary.stdout == "spinning\n" and "ran longer than" in summary.detail
            assert summary.e2e_s >= settings.batch_timeout_s  # the killed batch's time counts in the latency
        if name == "os-exit":
            assert summary.stdout == "bye\n" and "exited with status 3" in summary.detail
        if name == "segfault":
            assert "SIGSEGV" in summary.detail
        started, after = run(settings, "fine")
        assert after.status is SessionStatus.OK, (name, after)
        assert after.stdout == "fine ['program.py']\n"  # a fresh working directory: only the program's own file
        workers.add(started.worker)
    assert len(workers) == 1
