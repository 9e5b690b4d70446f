"""How long a published chunk waits before it starts to run on an idle executor, warm pool vs none.

Runs sessions through a real local stack (Redis, the three stages as processes, a replay
model) and reads the timestamps the stages publish: a chunk's `detected_ns` (the detector
publishes it right after) and its batch's `started_ns` (taken in the interpreter as the
code starts). "First chunk" is where a warm interpreter matters: the model is fast to its
first token, so without a pool the chunk waits for the work horse to start an interpreter.

    .venv/bin/python benchmarks/dispatch.py --sessions 30
"""

from __future__ import annotations

import dataclasses
import statistics

import click

from eager.common.config import Settings
from eager.common.protocol import BatchFinished, BatchStarted, ChunkReady, Gate, Summary
from eager.client import Client
from eager.replay import ReplayServer, SpeedProfile
from eager.replay_stack import on_replay
from eager.stack import LocalStack

PROGRAM = "".join(f"value_{i} = {i} * 2\n" for i in range(8)) + "print(value_7)\n"
ANSWER = f"```python\n{PROGRAM}```\n"


def _quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"p50 {statistics.median(ordered):7.2f} ms   p90 {p90:7.2f} ms   (n={len(ordered)})"


def measure(settings: Settings, sessions: int) -> dict[str, list[float]]:
    """Per session: the first chunk's wait, and the waits of later chunks that found the executor idle."""
    first: list[float] = []
    idle: list[float] = []
    with LocalStack(settings) as ready, Client(ready) as client:
        for _ in range(sessions):
            session = client.submit(messages=[{"role": "user", "content": "bench"}], model="bench", gate=Gate.EAGER)
            chunks: dict[int, ChunkReady] = {}
            started: dict[int, BatchStarted] = {}
            previous_end = 0
            for event in session.events(tokens=False):
                if isinstance(event, ChunkReady):
                    chunks[event.seq] = event
                elif isinstance(event, BatchStarted):
                    started[event.batch] = event
                elif isinstance(event, BatchFinished):
                    batch = started[event.batch]
                    trigger = chunks[batch.first_seq]
                    wait_ms = (event.started_ns - trigger.detected_ns) / 1e6
                    if batch.first_seq == 0:
                        first.append(wait_ms)
                    elif trigger.detected_ns > previous_end and batch.first_seq == batch.last_seq:
                        idle.append(wait_ms)
                    previous_end = event.finished_ns
                elif isinstance(event, Summary) and event.status.value != "ok":
                    raise click.ClickException(f"session ended {event.status.value}: {event.detail}")
    return {"first": first, "idle": idle}


@click.command()
@click.option("--sessions", default=30, show_default=True)
@click.option("--ttft", default=0.005, show_default=True, help="replay model's time to first token (s)")
@click.option("--tps", default=50.0, show_default=True, help="replay model's tokens per second")
def main(sessions: int, ttft: float, tps: float) -> None:
    base = Settings.from_env()
    with ReplayServer({"bench": ANSWER}, SpeedProfile(ttft_s=ttft, tokens_per_s=tps)) as server:
        for warm in (0, base.warm_interpreters):
            settings = on_replay(dataclasses.replace(base, warm_interpreters=warm), server, "bench", label="bench")
            waits = measure(settings, sessions)
            click.echo(f"warm interpreters: {warm}")
            click.echo(f"  first chunk, published -> running:       {_quantiles(waits['first'])}")
            click.echo(f"  later chunks on an idle executor:         {_quantiles(waits['idle'])}")


if __name__ == "__main__":
    main()
