"""`eager demo`: the bundled answer replayed serial then eager, then the local model solving a task, with repairs."""

from __future__ import annotations

from importlib import resources

import click

from eager.common.protocol import Gate, Summary
from eager.cli.run import run_one, solve
from eager.cli.shared import exit_on_sigterm, load_settings, model, replay, speed_options, stack

DEMO_REPAIRS = 2  # when the model's first program fails, the demo shows the repair loop at work
DEMO_PROMPT = ("Write a Python program that finds the first 10 prime numbers and prints them, then prints their sum, "
               "then builds a pandas DataFrame with columns `prime` and `square` and prints it. "
               "Answer with one ```python code block.")


@click.command()
@speed_options
def demo(ttft: float, tps: float, jitter: float, seed: int) -> None:
    """Replay the bundled example answer through the whole stack, serial then eager, and compare."""
    answer = resources.files("eager").joinpath("examples/answer.md").read_text()
    exit_on_sigterm()
    results: dict[Gate, Summary] = {}
    with replay([answer], ttft, tps, jitter, seed) as settings, stack(settings) as ready:
        for gate in (Gate.SERIAL, Gate.EAGER):
            click.secho(f"\n=== gate {gate.value} ===", bold=True)
            results[gate] = run_one(ready, gate, as_json=False)
    serial, eager = results[Gate.SERIAL], results[Gate.EAGER]
    click.secho("\n=== eager vs serial (same replay) ===", bold=True)
    click.echo(f"  {'':<26}{'serial':>10}{'eager':>10}")
    for name, s, e in [("end-to-end", serial.e2e_s, eager.e2e_s),
                       ("non-overlapped execution", serial.non_overlapped_s, eager.non_overlapped_s)]:
        click.echo(f"  {name:<26}{s:>9.3f}s{e:>9.3f}s")
    click.echo(f"  same output: {'yes' if serial.stdout == eager.stdout else 'NO'}; "
               f"end-to-end eager/serial = {eager.e2e_s / serial.e2e_s:.2f}")
    click.secho(f"\n=== a real model on this machine (the local one, llama.cpp) ===\n{DEMO_PROMPT}", bold=True)
    with model(load_settings(), always=True) as settings, stack(settings) as ready:
        solve(ready, Gate.EAGER, as_json=False, prompt=DEMO_PROMPT, repairs=DEMO_REPAIRS, model=None)
