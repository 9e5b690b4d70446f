"""The asyncio client against the Procfile stack: the same typed events, a cancel from another task, many
sessions read at once by one loop without a thread, and a killed executor's session ended for every reader."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from eager.common.protocol import ChunkReady, Delta, Output, ProtocolError, SessionStatus, Summary, decode
from eager.aio import AsyncClient
from eager.client import ClientClosed
from eager.replay import SpeedProfile
from tests.e2e.test_faults import TERMINAL_WITHIN_S, work_horses
from tests.helpers import answer_of

PROGRAM = "total = 0\nfor i in range(4):\n    total += i\nprint(total)\nprint(total * 2)\n"
SLEEPER = answer_of("import time\nprint('started', flush=True)\ntime.sleep(60)\n")


@pytest.mark.slow
def test_an_async_session_streams_typed_events_and_can_be_cancelled_from_another_task(replay_stack):
    settings, _ = replay_stack({"program": answer_of(PROGRAM), "sleeper": SLEEPER},
                               SpeedProfile(ttft_s=0.05, tokens_per_s=300.0))

    async def scenario() -> tuple[list, Summary, Summary]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async with AsyncClient(settings) as client:
            ticker = asyncio.create_task(tick())
            session = await client.submit(messages=[{"role": "user", "content": "go"}], model="program")
            events = [event async for event in session.events()]
            ticker.cancel()
            assert ticks >= 5  # the loop ran other tasks while the session streamed (about 0.3 s)

            sleeper = await client.submit(messages=[{"role": "user", "content": "go"}], model="sleeper")

            async def cancel_at_first_output() -> Summary:
                async for event in sleeper.events(tokens=False):
                    if isinstance(event, Output):
                        await sleeper.cancel("enough")
                return await sleeper.result()

            cancelled = await cancel_at_first_output()
            with pytest.raises(ProtocolError):
                await client.submit(messages=[], model="program")
            return events, events[-1], cancelled

    events, summary, cancelled = asyncio.run(scenario())
    assert any(isinstance(e, Delta) for e in events) and any(isinstance(e, ChunkReady) for e in events)
    assert isinstance(summary, Summary) and summary.status is SessionStatus.OK and summary.stdout == "6\n12\n"
    assert cancelled.status is SessionStatus.CANCELLED and "enough" in cancelled.detail


@pytest.mark.slow
def test_an_async_conversation_keeps_names_across_turns_and_the_async_repair_loop_repairs(replay_stack):
    failing, fixing = answer_of("n = 5\nprint(m)\n"), answer_of("print(n * 2)\n")
    settings, _ = replay_stack({"turns": [failing, fixing]}, SpeedProfile(ttft_s=0.05, tokens_per_s=300.0))
    task = [{"role": "user", "content": "go"}]

    async def scenario():
        async with AsyncClient(settings) as client:
            async with await client.conversation(model="turns") as conversation:
                first = await (await conversation.send(messages=task)).result()
                second = await (await conversation.send(messages=[*task, {"role": "assistant", "content": "."},
                                                                  {"role": "user", "content": "fix it"}])).result()
            return first, second, await client.solve(messages=task, model="turns")

    first, second, report = asyncio.run(scenario())
    assert first.status is SessionStatus.ERROR and second.stdout == "10\n" and second.turn == 2
    assert report.succeeded and [t.status for t in report.turns] == ["error", "ok"] and report.stdout == "10\n"


class NoThreads(concurrent.futures.ThreadPoolExecutor):
    """A loop's default executor that refuses work: whatever asks it for a thread fails the test."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        raise AssertionError(f"a thread was asked for: {fn!r}")


@pytest.mark.slow
def test_many_async_sessions_are_read_at_once_by_one_loop_without_a_thread(replay_stack):
    sessions = 24  # four times the default thread pool of a 2-core machine
    settings, _ = replay_stack({f"square-{n}": answer_of(f"print({n} * {n})\n") for n in range(sessions)},
                               SpeedProfile(ttft_s=0.05, tokens_per_s=100.0), executors=2)

    async def scenario() -> list[list[Any]]:
        async with AsyncClient(settings) as client:
            submitted = [await client.submit(messages=[{"role": "user", "content": "go"}], model=f"square-{n}")
                         for n in range(sessions)]
            asyncio.get_running_loop().set_default_executor(NoThreads())

            async def read(session: Any) -> list[Any]:
                return [event async for event in session.events()]

            read_all = await asyncio.gather(*(read(session) for session in submitted))
            asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor())
        with pytest.raises(ClientClosed):
            await client.submit(messages=[{"role": "user", "content": "go"}], model="square-0")
        return read_all

    read_all = asyncio.run(scenario())
    outputs = []
    for events in read_all:
        assert isinstance(events[-1], Summary) and events[-1].status is SessionStatus.OK
        assert sum(isinstance(event, Summary) for event in events) == 1
        assert any(isinstance(event, Delta) for event in events) and any(isinstance(e, ChunkReady) for e in events)
        outputs.append(events[-1].stdout)
    assert outputs == [f"{n * n}\n" for n in range(sessions)]  # each session read its own events


@pytest.mark.slow
def test_an_async_session_whose_executor_is_killed_ends_failed_once_for_every_reader(replay_stack):
    sleeper = answer_of("import time\nprint('started', flush=True)\ntime.sleep(60)\n") + "x" * 2000
    settings, server = replay_stack({"sleeper": sleeper}, SpeedProfile(ttft_s=0.05, tokens_per_s=200.0),
                                    lease_s=1.0)
    executor = psutil.Process(replay_stack.stack.processes["executor"].pid)

    async def scenario() -> tuple[Summary | None, float, list[Any]]:
        async with AsyncClient(settings) as client:
            session = await client.submit(messages=[{"role": "user", "content": "go"}], model="sleeper")
            killed_at = None
            async for event in session.events(tokens=False):
                if isinstance(event, Output) and killed_at is None:  # mid-batch: worker and horse at once
                    for process in [*work_horses(executor), executor]:
                        process.send_signal(signal.SIGKILL)
                    killed_at = time.monotonic()
            assert killed_at is not None
            stored = [decode(fields) for _, fields in await client.redis.xrange(client.keys.events(session.id))]
            return session.summary, time.monotonic() - killed_at, stored

    summary, ended_after_s, stored = asyncio.run(scenario())
    assert ended_after_s < TERMINAL_WITHIN_S
    assert summary is not None and summary.status is SessionStatus.FAILED
    assert "executor stopped renewing its lease" in str(summary.detail)
    assert [e.status for e in stored if isinstance(e, Summary)] == [SessionStatus.FAILED]
    record = server.ended("sleeper")
    assert record["tokens_sent"] < record["tokens_total"], "the model was not stopped"
