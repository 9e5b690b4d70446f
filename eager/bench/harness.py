"""Runs benchmark tasks through the real stack: a replay model per speed profile, the three stages
as separate processes on Redis, sandboxed interpreters.

Each task's gates run back to back under one profile, serial first, so every gate of a task
sees the same tokens at the same times and the same machine load. A stack's first session pays its cold
start (connections, the openai client's lazily built types: 0.4-0.9 s on 2 cores), which no gate should
be charged with, so one unmeasured session runs before the first task. With a code tool, the replay model
streams each answer's code blocks as that tool's calls instead of markdown, in the tool's API shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from eager.common.config import Settings
from eager.common.protocol import CodeTool, Gate
from eager.bench.measure import Run, record
from eager.bench.profiles import Profile
from eager.bench.tasks import Task
from eager.client import Client
from eager.replay import tokenize_answer
from eager.replay_stack import replay_stack
from eager.replay_tools import code_pieces

PROMPT = [{"role": "user", "content": "Solve the task."}]


def run_profile(settings: Settings, profile: Profile, tasks: Sequence[Task], gates: Sequence[Gate],
                on_run: Callable[[Run], None] = lambda run: None, tool: CodeTool | None = None) -> Iterator[Run]:
    """Every task under every gate at one speed; the stages are this profile's own. `tool`: the code comes
    as its calls."""
    # stages of their own, in a namespace of their own, new per profile and dropped after it
    with replay_stack(settings, {task.id: task.answer for task in tasks}, profile.speed, label="bench") as ready:
        with Client(ready) as client:
            if tasks:
                client.submit(messages=PROMPT, model=tasks[0].id, gate=Gate.SERIAL, tool=tool).result()
            for task in tasks:
                tokens = tokenize_answer(task.answer) if tool is None else code_pieces(task.answer, tool)
                for gate in gates:
                    session = client.submit(messages=PROMPT, model=task.id, gate=gate, tool=tool)
                    events = list(session.events(tokens=False))
                    run = record(task.id, task.suite, profile.name, profile.ttft_s, profile.tokens_per_s, tokens,
                                 events)
                    on_run(run)
                    yield run
