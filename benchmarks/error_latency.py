"""How soon a program's exception reaches the events stream, and what the session's end waits for after it.

The program fails at its third statement while the model still has many lines to write. The executor publishes
the ExecutionError the moment the failing batch returns, and the cancel beside it; the Summary comes only after
the cancel's round trip (producer stops the model, the detector ends detection, the executor reads that end).
Measured from the failing batch's end in the interpreter (`BatchFinished.finished_ns`, the exception's moment):

- error published: `ExecutionError.at_ns`, taken by the executor as it publishes;
- error read: when this client's `events()` yields it (the latency a repair loop sees);
- summary: `Summary.finished_ns`, which does include the cancel round trip.

    .venv/bin/python benchmarks/error_latency.py --sessions 20
"""

from __future__ import annotations

import statistics

import click

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.protocol import BatchFinished, ExecutionError, Gate, SessionStatus, Summary
from eager.client import Client
from eager.replay import SpeedProfile
from eager.replay_stack import replay_stack

PROGRAM = "values = [1, 2, 3]\nprint(sum(values))\nprint(values[10])\n" + "".join(
    f"total_{i} = sum(values) * {i}  # the model writes on after the error\n" for i in range(40))
ANSWER = f"Here it is:\n\n```python\n{PROGRAM}```\n"


def _row(label: str, values_ms: list[float]) -> str:
    ordered = sorted(values_ms)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"| {label} | {statistics.median(ordered):.2f} | {p90:.2f} | {len(ordered)} |"


def measure(settings: Settings, sessions: int) -> dict[str, list[float]]:
    published, read, ended = [], [], []
    with Client(settings) as client:
        for _ in range(sessions):
            session = client.submit(messages=[{"role": "user", "content": "bench"}], model="bench", gate=Gate.EAGER)
            failed_at = error_read_ns = None
            error = summary = None
            for event in session.events(tokens=False):
                if isinstance(event, BatchFinished) and not event.ok:
                    failed_at = event.finished_ns
                elif isinstance(event, ExecutionError):
                    error, error_read_ns = event, now_ns()
                elif isinstance(event, Summary):
                    summary = event
            if summary is None or summary.status is not SessionStatus.ERROR or error is None or failed_at is None:
                raise click.ClickException(f"session did not end with the program's error: {summary}")
            published.append((error.at_ns - failed_at) / 1e6)
            read.append((error_read_ns - failed_at) / 1e6)
            ended.append((summary.finished_ns - failed_at) / 1e6)
    return {"error published": published, "error read by the client": read, "summary (after the cancel)": ended}


@click.command()
@click.option("--sessions", default=20, show_default=True)
@click.option("--ttft", default=0.05, show_default=True, help="replay model's time to first token (s)")
@click.option("--tps", default=50.0, show_default=True, help="replay model's tokens per second")
def main(sessions: int, ttft: float, tps: float) -> None:
    with replay_stack(Settings.from_env(), {"bench": ANSWER}, SpeedProfile(ttft_s=ttft, tokens_per_s=tps),
                      model="bench", label="error-latency") as settings:
        results = measure(settings, sessions)
    click.echo(f"from the exception (failing batch's end), {tps:g} tokens/s model, ms")
    click.echo("| | p50 | p90 | n |\n|---|---|---|---|")
    for label, values in results.items():
        click.echo(_row(label, values))


if __name__ == "__main__":
    main()
