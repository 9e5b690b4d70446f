"""The asyncio client against the Procfile stack: the same typed events, a cancel from another task."""

from __future__ import annotations

import asyncio

import pytest

from eager.common.protocol import ChunkReady, Delta, Output, ProtocolError, SessionStatus, Summary
from eager.aio import AsyncClient
from eager.replay import SpeedProfile
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
