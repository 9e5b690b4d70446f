"""Runs benchmark tasks through the real stack: a replay model per speed profile, the three stages
as separate processes on Redis, sandboxed interpreters.

Each task's gates run back to back under one profile, serial first, so every gate of a task
sees the same tokens at the same times and the same machine load.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator, Sequence

from common.config import Settings
from common.protocol import Gate
from eager.bench.measure import Run, record
from eager.bench.profiles import Profile
from eager.bench.tasks import Task
from eager.client import Client
from eager.replay import ReplayServer, tokenize_answer
from eager.stack import LocalStack

PROMPT = [{"role": "user", "content": "Solve the task."}]


def run_profile(settings: Settings, profile: Profile, tasks: Sequence[Task], gates: Sequence[Gate],
                on_run: Callable[[Run], None] = lambda run: None) -> Iterator[Run]:
    """Every task under every gate at one speed; the stages are this profile's own."""
    with ReplayServer({task.id: task.answer for task in tasks}, profile.speed) as server:
        # stages of their own, in a namespace of their own, new per profile and dropped after it
        configured = dataclasses.replace(settings, model_base_url=server.base_url,
                                         namespace=f"{settings.namespace}-bench-{uuid.uuid4().hex[:8]}")
        with LocalStack(configured, forget=True) as ready, Client(ready) as client:
            for task in tasks:
                tokens = tokenize_answer(task.answer)
                for gate in gates:
                    session = client.submit(messages=PROMPT, model=task.id, gate=gate)
                    events = list(session.events(tokens=False))
                    run = record(task.id, task.suite, profile.name, profile.ttft_s, profile.tokens_per_s, tokens,
                                 events)
                    on_run(run)
                    yield run
