"""What a warm interpreter's preload (EAGER_PRELOAD) does to DS-1000 tasks, serial and eager, in one run.

Each configuration gets a stack of its own (the same replay speed, the same tasks, the same gates, one
after the other in this run): preload on (the default, numpy and pandas) and off. Printed per gate: the
median execution time (the interpreter busy with the program's batches), end-to-end latency, and the
per-task ratio of on to off.

    .venv/bin/python benchmarks/preload.py --tasks 12 --profile api-fast
"""

from __future__ import annotations

import dataclasses
import statistics

import click

from eager.common.config import Settings
from eager.common.protocol import Gate
from eager.bench.harness import run_profile
from eager.bench.measure import Run
from eager.bench.profiles import PROFILES
from eager.bench.suite import interpreter_for
from eager.bench.tasks import load, spread

GATES = (Gate.SERIAL, Gate.EAGER)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@click.command()
@click.option("--tasks", "count", default=12, show_default=True, help="DS-1000 tasks, spread over the set")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="api-fast", show_default=True)
def main(count: int, profile: str) -> None:
    settings = interpreter_for(Settings.from_env())
    tasks = spread(load("ds1000"), count)
    preload = settings.preload or "numpy,pandas"
    runs: dict[str, dict[tuple[str, str], Run]] = {}
    for label, value in (("on", preload), ("off", "")):
        configured = dataclasses.replace(settings, preload=value)
        runs[label] = {(run.task, run.gate): run for run in run_profile(configured, PROFILES[profile], tasks, GATES)}
    click.echo(f"{len(tasks)} DS-1000 tasks, profile {profile}, preload {preload!r} on vs off (medians)")
    click.echo("| gate | execution, off | execution, on | on/off (per task) | e2e, off | e2e, on | on/off (per task) |")
    click.echo("|---|---|---|---|---|---|---|")
    for gate in GATES:
        keys = [key for key in runs["off"] if key[1] == gate.value and key in runs["on"]
                and runs["off"][key].status == runs["on"][key].status == "ok"]
        on, off = [runs["on"][key] for key in keys], [runs["off"][key] for key in keys]
        exec_ratio = _median([a.exec_s / b.exec_s for a, b in zip(on, off) if b.exec_s > 0])
        e2e_ratio = _median([a.e2e_s / b.e2e_s for a, b in zip(on, off)])
        click.echo(f"| {gate.value} | {_median([r.exec_s for r in off]):.3f} s | {_median([r.exec_s for r in on]):.3f} s"
                   f" | {exec_ratio:.2f} | {_median([r.e2e_s for r in off]):.3f} s | {_median([r.e2e_s for r in on]):.3f} s"
                   f" | {e2e_ratio:.2f} |")
    differ = [key for key in runs["off"] if key in runs["on"] and runs["off"][key].stdout != runs["on"][key].stdout]
    click.echo(f"outputs that differ between on and off: {len(differ)} {differ[:5]}")


if __name__ == "__main__":
    main()
