"""`eager bench`: the benchmark task sets through the stack, eager vs serial vs batch, or the repair loop."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from eager.common.config import Settings
from eager.common.protocol import CodeTool, Gate, ToolShape
from eager.cli.shared import exit_on_sigterm, load_settings


@click.command()
@click.option("--suite", "suites", multiple=True, default=("ds1000", "humaneval"), show_default=True,
              type=click.Choice(["ds1000", "humaneval"]), help="task sets (benchmarks/tasks/)")
@click.option("--profile", "profiles", multiple=True, default=("api-fast", "served-mid", "local-slow"),
              show_default=True, type=click.Choice(["api-fast", "served-mid", "local-slow"]),
              help="speed profiles (README, Benchmarks)")
@click.option("--gate", "gates", multiple=True, default=("serial", "eager", "batch"), show_default=True,
              type=click.Choice([g.value for g in Gate]), help="serial always runs: the rest are measured against it")
@click.option("--tasks", "per_suite", type=click.IntRange(1), help="tasks per set, spread over it (default: all)")
@click.option("--quick", is_flag=True, help="3 ds1000 tasks and 1 humaneval task, profiles api-fast and served-mid")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmarks/results"),
              show_default=True)
@click.option("--tool-api", "tool_api", type=click.Choice([s.value for s in ToolShape]),
              help="stream each answer's code as calls of a `python` tool (its `code` argument) in this API shape "
              "(chat tool_calls, Responses function calls, Responses custom tool input) instead of markdown")
@click.option("--repair", is_flag=True, help="the repair loop instead: each answer broken part way, then repaired; "
              "time until a working program, serial and eager (no --gate); writes repair.md and repair.json")
def bench(suites: tuple[str, ...], profiles: tuple[str, ...], gates: tuple[str, ...], per_suite: int | None,
          quick: bool, out: Path, tool_api: str | None, repair: bool) -> None:
    """Replay benchmark answers through the stack under each speed profile and gate; report vs serial and ideal."""
    from eager.bench import suite

    exit_on_sigterm()
    settings = suite.interpreter_for(load_settings())
    if repair:
        if tool_api is not None:
            raise click.UsageError("--repair replays markdown answers: no --tool-api")
        if click.get_current_context().get_parameter_source("gates") is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--repair always runs the serial and eager gates: no --gate")
        _bench_repair(settings, suites, profiles, per_suite, quick, out)
        return
    tool = None if tool_api is None else CodeTool(shape=ToolShape(tool_api))
    chosen = suite.plan(settings, suites, profiles, [Gate(g) for g in {"serial", *gates}], per_suite, quick, tool)
    for task_id, missing in sorted(chosen.skipped.items()):
        click.echo(f"skipped {task_id}: the interpreter lacks {', '.join(sorted(missing))} "
                   "(deploy/setup.sh --bench installs them)", err=True)
    if not chosen.tasks:
        raise click.UsageError("no task can run with this interpreter")
    with click.progressbar(length=chosen.runs, label=f"{len(chosen.tasks)} tasks x {len(chosen.profiles)} profiles "
                           f"x {len(chosen.gates)} gates", file=sys.stderr) as progress:
        runs = suite.run(settings, chosen, lambda _: progress.update(1))
    written = suite.write(runs, out)
    click.echo(written[0].read_text())
    click.echo("wrote " + ", ".join(str(path) for path in written))


def _bench_repair(settings: Settings, suites: tuple[str, ...], profiles: tuple[str, ...], per_suite: int | None,
                  quick: bool, out: Path) -> None:
    """`eager bench --repair`: each task's answer broken, then repaired, under serial and eager (eager/bench/repair.py)."""
    from eager.bench import repair

    chosen = repair.plan(settings, suites, profiles, per_suite, quick)
    for task_id, why in sorted(chosen.skipped.items()):
        click.echo(f"skipped {task_id}: {why}", err=True)
    if not chosen.broken:
        raise click.UsageError("no task can run: each one was skipped (above)")
    with click.progressbar(length=chosen.runs, label=f"{len(chosen.broken)} tasks x {len(chosen.profiles)} profiles "
                           f"x {len(repair.GATES)} gates, repair loops", file=sys.stderr) as progress:
        runs = repair.run(settings, chosen, lambda _: progress.update(1))
    written = repair.write(runs, out, shlex.join(["eager", *sys.argv[1:]]), repair.parameters(chosen, per_suite, quick))
    click.echo(written[0].read_text())
    click.echo("wrote " + ", ".join(str(path) for path in written))
