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
              type=click.Choice(["ds1000", "humaneval", "humaneval-full"]),
              help="task sets (benchmarks/tasks/; humaneval-full: all 164, the --live default)")
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
@click.option("--repair", type=click.IntRange(1), is_flag=False, flag_value=1, default=None, metavar="[N]",
              help="the repair loop instead: each answer broken part way, then repaired; time until a working "
              "program, serial and eager (no --gate); writes repair.md and repair.json. With --live: up to N "
              "repairs of each task whose first answer failed")
@click.option("--live", is_flag=True, help="ask a real model (the local one unless EAGER_MODEL_BASE_URL is set) the "
              "tasks' prompts at temperature 0: pass@1, latency on the recorded streams replayed to both gates, "
              "generation speed beside running code; writes live.md and live.json")
@click.option("--budget", type=click.FloatRange(0, min_open=True), default=120.0, show_default=True,
              help="--live --repair: the wall-clock budget a task's repair loop counts as success within, seconds")
def bench(suites: tuple[str, ...], profiles: tuple[str, ...], gates: tuple[str, ...], per_suite: int | None,
          quick: bool, out: Path, tool_api: str | None, repair: int | None, live: bool, budget: float) -> None:
    """Replay benchmark answers through the stack under each speed profile and gate; report vs serial and ideal."""
    from eager.bench import suite

    exit_on_sigterm()
    settings = suite.interpreter_for(load_settings())
    source = click.get_current_context().get_parameter_source
    if tool_api is not None and (live or repair):
        raise click.UsageError("--live and --repair ask for markdown answers: no --tool-api")
    if live:
        if source("gates") is not click.core.ParameterSource.DEFAULT or source("profiles") is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--live runs serial and eager at the model's own speed: no --gate or --profile")
        chosen_suites = ("humaneval-full",) if source("suites") is click.core.ParameterSource.DEFAULT else suites
        _bench_live(settings, chosen_suites, per_suite, out, repair or 0, budget)
        return
    if repair is not None and repair != 1:
        raise click.UsageError("the replay repair benchmark repairs once (its second answer is the reference): "
                               "--repair N is for --live")
    if repair:
        if source("gates") is not click.core.ParameterSource.DEFAULT:
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


def _bench_live(settings: Settings, suites: tuple[str, ...], per_suite: int | None, out: Path, repairs: int,
                budget: float) -> None:
    """`eager bench --live`: the live model, then its recordings replayed, then repairs (eager/bench/live.py)."""
    from eager.bench import live, tasks
    from eager.cli.shared import model, stack

    chosen = [live.live_task(task) for name in suites for task in tasks.spread(tasks.load(name), per_suite)]
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    results: dict[str, live.TaskResult] = {}
    with model(settings) as configured, stack(configured) as ready:
        name = ready.model
        say(f"live: {len(chosen)} tasks, serial then eager, on {name} at {ready.model_base_url}")
        recordings = live.run_live(ready, chosen, results, live.MAX_TOKENS, say)
        if repairs:
            live.run_repair(ready, chosen, results, repairs, live.MAX_TOKENS, say)
    live.run_replay(settings, chosen, recordings, results, say)
    written = live.write(list(results.values()), out, name, shlex.join(["eager", *sys.argv[1:]]), repairs, budget)
    click.echo(written[0].read_text())
    click.echo("wrote " + ", ".join(str(path) for path in written))
