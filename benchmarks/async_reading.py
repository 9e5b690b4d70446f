"""How the asyncio client reads many sessions at once: the delay from an event's publication to its read, and
the wall time, as the number of concurrent sessions grows.

Each level submits that many sessions at once through one `AsyncClient` (one event loop) and reads every one to
its Summary. A replay model streams the same short answer to each. For every delta and chunk, on one host's
clock:

- read delay: from its XADD (the Redis entry id's millisecond, a Redis-side time) to the moment `events()`
  yields it: what the reading adds;
- upstream: from its stamp (a delta's arrival at the producer, a chunk's proof at the detector) to its XADD:
  what the producer and detector add, which grows when their one process each is short of CPU.

Wall times run from the first submit: "all detected" until every session's DetectionEnd was read (the model, the
producer and the detector serve all sessions at once), "all ended" until every Summary was read (that also
waits for the executors, which run sessions one at a time each, so it grows with the level by design). The
program imports nothing, so the executors' warm interpreters preload nothing (`EAGER_PRELOAD=""`).

`--form threads` reads the old way instead, the sync client's `events()` stepped in the loop's default thread
pool, one `asyncio.to_thread` per event, for comparison.

    .venv/bin/python benchmarks/async_reading.py --levels 1,25,50,100,200
    .venv/bin/python benchmarks/async_reading.py --levels 1,25,50,100,200 --form threads
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import click

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.protocol import ChunkReady, Delta, DetectionEnd, Message, SessionStatus, Summary, decode
from eager.aio import AsyncClient
from eager.client import Client
from eager.quantiles import quantile
from eager.replay import SpeedProfile
from eager.replay_stack import replay_stack

PROGRAM = "squares = [n * n for n in range(8)]\ntotal = sum(squares)\nprint(total)\n"
ANSWER = f"Here it is:\n\n```python\n{PROGRAM}```\n"
TASK = [{"role": "user", "content": "bench"}]


@dataclass
class Level:
    sessions: int
    read_ms: list[float] = field(default_factory=list)
    upstream_ms: list[float] = field(default_factory=list)
    detected_s: float = 0.0
    ended_s: float = 0.0
    client_cpu_s: float = 0.0  # this process's CPU time over the level: the reading itself, and submitting
    not_ok: Counter[str] = field(default_factory=Counter)  # status: detail, of the sessions that did not end ok

    def row(self) -> str:
        def p(values: list[float], q: float) -> str:
            return f"{quantile(values, q):.1f}" if values else "-"

        return (f"| {self.sessions} | {p(self.read_ms, 0.5)} | {p(self.read_ms, 0.95)} | {p(self.read_ms, 1.0)} | "
                f"{p(self.upstream_ms, 0.5)} | {p(self.upstream_ms, 0.95)} | {len(self.read_ms)} | "
                f"{self.detected_s:.1f} | {self.ended_s:.1f} | {self.client_cpu_s:.1f} | "
                f"{sum(self.not_ok.values())} |")


@dataclass
class Reads:
    """When one session's deltas and chunks were read, by their own stamp (unique within a session)."""

    session_id: str
    deltas: dict[int, int] = field(default_factory=dict)  # Delta.at_ns -> read ns
    chunks: dict[int, int] = field(default_factory=dict)  # ChunkReady.seq -> read ns


def _published_ms(entries: list[Any]) -> list[tuple[int, Message]]:
    return [(int(entry_id.partition("-")[0]), decode(fields)) for entry_id, fields in entries]


async def _delays(client: AsyncClient, reads: Reads, level: Level) -> None:
    """Match each read with its entry in the streams: its XADD time is the entry id's millisecond."""
    tokens = _published_ms(await client.redis.xrange(client.keys.tokens(reads.session_id)))
    chunks = _published_ms(await client.redis.xrange(client.keys.chunks(reads.session_id)))
    for published_ms, message in tokens + chunks:
        if isinstance(message, Delta) and message.at_ns in reads.deltas:
            read_ns, stamp_ns = reads.deltas[message.at_ns], message.at_ns
        elif isinstance(message, ChunkReady) and message.seq in reads.chunks:
            read_ns, stamp_ns = reads.chunks[message.seq], message.detected_ns
        else:
            continue
        level.read_ms.append(read_ns / 1e6 - published_ms)
        level.upstream_ms.append(published_ms - stamp_ns / 1e6)


async def _in_threads(client: Client) -> tuple[str, AsyncIterator[Message]]:
    """The old asyncio form: a sync session's events, each one fetched by a worker thread."""
    session = client.submit(messages=TASK, model="bench")

    async def events() -> AsyncIterator[Message]:
        iterator = session.events()
        while (event := await asyncio.to_thread(next, iterator, None)) is not None:
            yield event

    return session.id, events()


async def _native(client: AsyncClient) -> tuple[str, AsyncIterator[Message]]:
    session = await client.submit(messages=TASK, model="bench")
    return session.id, session.events()


async def measure(settings: Settings, sessions: int, form: str) -> Level:
    level = Level(sessions)
    async with AsyncClient(settings) as client:
        start, cpu = time.monotonic(), time.process_time()

        async def read(started: Awaitable[tuple[str, AsyncIterator[Message]]]) -> Reads:
            session_id, events = await started
            reads = Reads(session_id)
            async for event in events:
                if isinstance(event, Delta):
                    reads.deltas[event.at_ns] = now_ns()
                elif isinstance(event, ChunkReady):
                    reads.chunks[event.seq] = now_ns()
                elif isinstance(event, DetectionEnd):
                    level.detected_s = max(level.detected_s, time.monotonic() - start)
                elif isinstance(event, Summary):
                    level.ended_s = max(level.ended_s, time.monotonic() - start)
                    if event.status is not SessionStatus.OK:
                        level.not_ok[f"{event.status.value}: {event.detail}"] += 1
            return reads

        if form == "native":
            read_all = await asyncio.gather(*(read(_native(client)) for _ in range(sessions)))
        else:
            with Client(settings) as sync_client:
                read_all = await asyncio.gather(*(read(_in_threads(sync_client)) for _ in range(sessions)))
        level.client_cpu_s = time.process_time() - cpu
        for reads in read_all:
            await _delays(client, reads, level)
    return level


@click.command()
@click.option("--levels", default="1,25,50,100,200", show_default=True, help="concurrent sessions, comma-separated")
@click.option("--form", type=click.Choice(["native", "threads"]), default="native", show_default=True)
@click.option("--tps", default=5.0, show_default=True, help="replay model's tokens per second, per session")
@click.option("--executors", default=2, show_default=True)
def main(levels: str, form: str, tps: float, executors: int) -> None:
    profile = SpeedProfile(ttft_s=0.05, tokens_per_s=tps)
    rows, not_ok = [], Counter[str]()
    # the program imports nothing: warm interpreters preloading numpy and pandas would only spend the cores
    quiet = dataclasses.replace(Settings.from_env(), preload="")
    with replay_stack(quiet, {"bench": ANSWER}, profile, model="bench", label="async-reading",
                      executors=executors) as settings:
        for sessions in (int(n) for n in levels.split(",")):
            level = asyncio.run(measure(settings, sessions, form))
            rows.append(level.row())
            not_ok.update(level.not_ok)
            click.echo(rows[-1], err=True)
    click.echo(f"{form} reading, replay model at {tps:g} tokens/s per session, {executors} executors; delays of "
               "deltas and chunks in ms, times in s")
    click.echo("| sessions | read p50 | read p95 | read max | upstream p50 | upstream p95 | events | all detected "
               "| all ended | client CPU | not ok |\n|---|---|---|---|---|---|---|---|---|---|---|")
    click.echo("\n".join(rows))
    for outcome, count in not_ok.most_common():
        click.echo(f"not ok: {count} x {outcome}")


if __name__ == "__main__":
    main()
