"""`eager load`: many sessions at once through a stack, per executor count."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from eager.common.connection import RedisUnavailable
from eager.common.protocol import Gate
from eager.cli.shared import exit_on_sigterm, load_settings, read_answer, speed_options
from eager.stack import StackError


@click.command()
@click.option("--sessions", default=40, show_default=True, type=click.IntRange(1), help="sessions in all, per point")
@click.option("--concurrency", type=click.IntRange(1), help="sessions in flight at once (default: twice the most "
              "executors)")
@click.option("--executors", default=2, show_default=True, type=click.IntRange(1), help="executors of the stack")
@click.option("--sweep", help="comma list of executor counts (e.g. 1,2,4,8): the same load for each, a table, and "
              "load.md, load.json, load.png in --out")
@click.option("--answer", "answer_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the recorded answer to replay (default: a few statements, about 1 s of CPU; eager/load.py)")
@click.option("--gate", type=click.Choice([g.value for g in Gate]), default=Gate.EAGER.value, show_default=True)
@click.option("--running", is_flag=True, help="load the stack running in EAGER_NAMESPACE and its model (no replay, "
              "no stack of its own, its executors as they run)")
@click.option("--model", help="with --running: the model name (default: EAGER_MODEL)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmarks/results"),
              show_default=True, help="where --sweep writes")
@click.option("--json", "as_json", is_flag=True, help="the reports as a JSON list")
@speed_options
def load(sessions: int, concurrency: int | None, executors: int, sweep: str | None, answer_file: Path | None,
         gate: str, running: bool, model: str | None, out: Path, as_json: bool, ttft: float, tps: float,
         jitter: float, seed: int) -> None:
    """Run many sessions at once through a stack with M executors: sessions/s, latency percentiles, errors.
    Exits 1 if a session that was accepted did not end ok."""
    from eager import load as loading
    from eager.replay import SpeedProfile

    try:
        counts = loading.executor_counts(sweep, executors)
        if running and (sweep or answer_file):
            raise ValueError("--running loads the stack as it runs: no --sweep, no --answer")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    exit_on_sigterm()
    settings = load_settings()
    with click.progressbar(length=sessions * len(counts), label=f"{sessions} sessions x {len(counts)} point(s)",
                           file=sys.stderr) as progress:
        try:
            if running:
                reports = [loading.run_running(settings, sessions, concurrency, model=model, gate=Gate(gate),
                                               on_done=lambda _: progress.update(1))]
            else:
                profile = SpeedProfile(ttft_s=ttft, tokens_per_s=tps, jitter=jitter, seed=seed)
                reports = loading.sweep(settings, read_answer(answer_file) if answer_file else loading.ANSWER, profile,
                                        counts, sessions, concurrency or 2 * max(counts), gate=Gate(gate),
                                        on_done=lambda _: progress.update(1))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        except (RedisUnavailable, StackError) as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps([report.to_json() for report in reports], indent=2))
    else:
        click.echo("\n".join(loading.text(report) for report in reports))
    if sweep:
        click.echo("\n" + loading.sweep_summary(reports))
        parameters = {"command": "eager " + " ".join(sys.argv[1:]), "sessions": sessions,
                      "concurrency": reports[0].concurrency, "executors": counts, "gate": gate, "ttft_s": ttft,
                      "tokens_per_s": tps, "jitter": jitter, "seed": seed,
                      "answer": str(answer_file) if answer_file else "eager/load.py ANSWER"}
        written = loading.write(reports, out, parameters)
        click.echo("wrote " + ", ".join(str(path) for path in written))
    sys.exit(0 if all(report.ok == report.accepted for report in reports) else 1)
