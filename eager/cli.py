"""The `eager` command line: run a session, chunk a file, serve a replay model, run a stage."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shlex
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import click
import redis

from common.config import Settings
from common.connection import RedisUnavailable
from common.protocol import (
    BatchFinished,
    BatchStarted,
    ChunkReady,
    CodeTool,
    Delta,
    ExecutionError,
    Figure,
    Gate,
    GateAction,
    GateDecision,
    Message,
    Output,
    ProtocolError,
    SessionStarted,
    Summary,
    ToolShape,
    to_data,
)
from detector.lines import known_line_starts, split_lines
from eager.client import Client, Overloaded
from eager.stack import LocalStack, StackError
from eager.visible import visible

REPLAY_MODEL = "replay"
REPLAY_PROMPT = "replay"  # what a replayed session asks: the replay model answers anything with its recording
DEMO_REPAIRS = 2  # a 135M model's code often fails: the demo shows the repair loop at work
DEMO_PROMPT = ("Write a short Python program that prints the squares of the numbers 1 to 5, one per line. "
               "Answer with one ```python code block.")


def _settings() -> Settings:
    from executor_pool.static_gate import Rules

    try:
        settings = Settings.from_env()
        Rules.parse(settings.gate_preset, settings.gate_escapes, settings.gate_hold)  # a typo fails here, not per session
        return settings
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="log what the stages do")
def main(verbose: bool) -> None:
    """Eager: run LLM-written Python while the model is still writing it."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _speed_options(command):  # type: ignore[no-untyped-def]
    command = click.option("--seed", default=0, show_default=True, help="jitter seed (same seed, same timing)")(command)
    command = click.option("--jitter", default=0.0, show_default=True, help="relative jitter of token gaps")(command)
    command = click.option("--tps", default=50.0, show_default=True, help="replay tokens per second")(command)
    command = click.option("--ttft", default=0.3, show_default=True, help="replay time to first token, seconds")(command)
    return command


def _read_answer(path: Path) -> str:
    """A recorded answer exactly as written: no newline translation (read_text would make a lone \\r and \\r\\n
    into \\n, and the replay would no longer be the answer whose line numbers it is meant to reproduce)."""
    with open(path, encoding="utf-8", newline="") as file:
        return file.read()


@contextlib.contextmanager
def _replay(answers: list[str], ttft: float, tps: float, jitter: float, seed: int) -> Iterator[Settings]:
    """Settings for a run; with answers (one per turn), a replay model serves them and the stages use a namespace
    of their own (a shared stack's producer is configured for its own model, not for this replay)."""
    settings = _settings()
    if not answers:
        with _model(settings) as configured:
            yield configured
        return
    from eager.replay import ReplayServer, SpeedProfile

    profile = SpeedProfile(ttft_s=ttft, tokens_per_s=tps, jitter=jitter, seed=seed)
    with ReplayServer({REPLAY_MODEL: answers}, profile) as server:
        yield dataclasses.replace(settings, model_base_url=server.base_url, model=REPLAY_MODEL,
                                  namespace=f"{settings.namespace}-replay-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def _model(settings: Settings, always: bool = False) -> Iterator[Settings]:
    """With no model configured, or `always`, the bundled local model serves this run (`local_model`)."""
    from eager import local_model

    def announce(base_url: str) -> None:
        click.echo(f"(serving the bundled SmolLM2-135M-Instruct with llama.cpp at {base_url})", err=True)

    try:
        with local_model.unless_configured(settings, always, announce) as configured:
            yield configured
    except local_model.LocalModelUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def _stack(settings: Settings, executors: int = 1) -> Iterator[Settings]:
    try:
        with LocalStack(settings, executors=executors) as ready:
            yield ready
    except (RedisUnavailable, StackError) as exc:
        raise click.ClickException(str(exc)) from exc


DEFAULT_FIGURES = "eager-figures"


class _HumanView:
    """Human output: the answer line by line as it streams, each batch's output set off beside it.

    Whole lines only, so a batch's output never lands in the middle of a line of code. The answer's lines end
    where Python's do (a lone \\r too); what the program or the model wrote is shown `visible`, never obeyed
    by the terminal.
    """

    def __init__(self, figures: Path = Path(DEFAULT_FIGURES), turn: int = 1) -> None:
        self._answer = ""
        self._output: dict[str, str] = {}
        self._figures = figures
        self._turn = turn

    def show(self, message: Message) -> None:
        if isinstance(message, Delta):
            self._answer += message.text
            done = max(known_line_starts(self._answer), default=0)
            if done:
                self._print_answer(self._answer[:done])
                self._answer = self._answer[done:]
        elif isinstance(message, BatchStarted):
            click.secho(f"  ▶ running lines {message.start_line}-{message.end_line}", fg="cyan")
        elif isinstance(message, GateDecision):
            if message.action is GateAction.HOLD:
                click.secho(f"  ⏸ holding lines {message.start_line}-{message.end_line}: {visible(message.reason)}", fg="magenta")
            else:
                click.secho(f"  ⋯ lines {message.start_line}-{message.end_line}: {visible(message.reason)}", dim=True)
        elif isinstance(message, Output):
            text = self._output.get(message.stream, "") + message.text
            lines, newline, self._output[message.stream] = text.rpartition("\n")
            if newline:
                self._print_output(message.stream, lines)
        elif isinstance(message, (Figure, BatchFinished, ExecutionError, Summary)):
            for stream, rest in self._output.items():
                if rest:
                    self._print_output(stream, rest)
            self._output.clear()
            if isinstance(message, Figure):
                self._save(message)
            if isinstance(message, ExecutionError):
                click.secho(f"  ✗ {message.type} at line {message.line}: {visible(message.message)}", fg="red",
                            bold=True)
                if message.traceback:
                    for line in visible(message.traceback.rstrip("\n")).split("\n"):
                        click.secho(f"    {line}", fg="red")
            if isinstance(message, Summary):
                if self._answer:
                    self._print_answer(self._answer)
                _print_summary(message)

    def _save(self, figure: Figure) -> None:
        """A terminal cannot show a PNG: the figure goes to a file, and its path stands where it appeared."""
        name = f"figure-{figure.number}.png" if self._turn == 1 else f"turn{self._turn}-figure-{figure.number}.png"
        self._figures.mkdir(parents=True, exist_ok=True)
        path = self._figures / name
        path.write_bytes(figure.image())
        click.secho(f"  🖼 figure {figure.number}: {path}", fg="green")

    @staticmethod
    def _print_answer(text: str) -> None:
        """Lines of the answer, each line end that is not a bare \\n shown (`\\r`) before its break."""
        click.echo("\n".join(visible(line.removesuffix("\n")) for line in split_lines(text)))

    @staticmethod
    def _print_output(stream: str, text: str) -> None:
        for line in text.split("\n"):
            click.secho(f"  │ {visible(line)}", fg="green" if stream == "stdout" else "yellow")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:8.3f} s"


def _print_summary(summary: Summary) -> None:
    click.secho(f"\nsession {summary.status.value} (gate {summary.gate.value})", bold=True)
    if summary.detail:
        click.echo(f"  {visible(summary.detail)}")
    rows = [
        ("time to first token", summary.ttft_s),
        ("generation end", summary.generation_s),
        ("execution end", None if summary.execution_end_ns is None
         else (summary.execution_end_ns - summary.submitted_ns) / 1e9),
        ("non-overlapped execution", summary.non_overlapped_s),
        ("end-to-end", summary.e2e_s),
        ("waiting for an executor", summary.queue_wait_s),
    ]
    for name, value in rows:
        click.echo(f"  {name:<26}{_seconds(value)}")


def _exit_on_sigterm() -> None:
    """A terminated `eager run` unwinds like Ctrl-C: cancels its session, stops its embedded stack."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _shower(as_json: bool, figures: Path = Path(DEFAULT_FIGURES)) -> Callable[[int, Message], None]:
    """How `eager run` shows each event of turn N: a JSON line (with its turn), or the human view (which writes
    figures as PNG files under `figures`)."""
    view, shown_turn = _HumanView(figures), 1

    def show(turn: int, message: Message) -> None:
        nonlocal view, shown_turn
        if as_json:
            data = message.report() if isinstance(message, Summary) else to_data(message)
            click.echo(json.dumps({**data, "turn": turn}))
            return
        if turn != shown_turn:
            view, shown_turn = _HumanView(figures, turn), turn
            click.secho(f"\n=== turn {turn}: the error went back to the model ===", bold=True)
        if not isinstance(message, (ChunkReady, SessionStarted)):
            view.show(message)

    return show


def _solve(settings: Settings, gate: Gate, as_json: bool, prompt: str, repairs: int, model: str | None,
           timeout_s: float | None = None, figures: Path = Path(DEFAULT_FIGURES)) -> bool:
    """The repair loop with every event shown; prints the per-turn report and returns whether it succeeded."""
    with Client(settings) as client:
        report = client.solve(messages=[{"role": "user", "content": prompt}], repairs=repairs, model=model, gate=gate,
                              timeout_s=timeout_s, on_event=_shower(as_json, figures))
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        click.secho("\n=== repair loop ===", bold=True)
        click.echo(visible(report.text()))
    return report.succeeded


def _run_one(settings: Settings, gate: Gate, as_json: bool, prompt: str = REPLAY_PROMPT, raw: bool = False,
             model: str | None = None, timeout_s: float | None = None, batch_chunks: int | None = None,
             batch_wait_ms: int | None = None, figures: Path = Path(DEFAULT_FIGURES),
             tool: CodeTool | None = None) -> Summary:
    """One session; `raw`: a completion request (the answer is bare code), else a chat one (markdown, or the calls
    of `tool`)."""
    with Client(settings) as client:
        limits = {"timeout_s": timeout_s, "batch_chunks": batch_chunks, "batch_wait_ms": batch_wait_ms}
        request = {"prompt": prompt} if raw else {"messages": [{"role": "user", "content": prompt}]}
        session = client.submit(**request, model=model, gate=gate, tool=tool, **limits)
        show = _shower(as_json, figures)
        try:
            for message in session.events():
                show(1, message)
        except BaseException:
            with contextlib.suppress(redis.RedisError):
                session.cancel("the client stopped reading")
            raise
        assert session.summary is not None
        return session.summary


@main.command()
@click.argument("prompt", required=False)
@click.option("--replay", "replay_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="replay this recorded answer instead of asking a model (repeat it with --repair: the k-th file "
              "answers turn k)")
@click.option("--repair", "repairs", default=0, show_default=True, type=click.IntRange(min=0),
              help="when the code fails, send the error, the code that ran and the partial answer back to the "
              "model, up to this many more turns, all in one interpreter")
@click.option("--gate", type=click.Choice([g.value for g in Gate]), default=Gate.EAGER.value, show_default=True)
@click.option("--batch-chunks", type=click.IntRange(min=1), help="gate batch: run at this many chunks "
              "(default: EAGER_GATE_BATCH_CHUNKS)")
@click.option("--batch-wait-ms", type=click.IntRange(min=0), help="gate batch: or after this wait "
              "(default: EAGER_GATE_BATCH_WAIT_MS)")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True),
              help="wall time of the session (each turn, with --repair), at most EAGER_SESSION_TIMEOUT_S")
@click.option("--raw", is_flag=True, help="completion model: the prompt is continued with bare code")
@click.option("--model", help="model name (default: EAGER_MODEL)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per event; the last is the summary")
@click.option("--figures", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_FIGURES, show_default=True,
              help="where the human view writes the figures the program shows (--json carries them base64)")
@click.option("--tool", "tool_spec", metavar="NAME[:ARG]", help="ask for the code as calls of this tool, its string "
              "argument ARG (default code) holding the code; the replay model sends its answer's code blocks so")
@click.option("--tool-api", type=click.Choice([s.value for s in ToolShape]), default=ToolShape.CHAT.value,
              show_default=True, help="with --tool: chat completions tool calls, a Responses API function call, or a "
              "Responses API custom (free-form) tool")
@_speed_options
def run(prompt: str | None, replay_files: tuple[Path, ...], repairs: int, gate: str, batch_chunks: int | None,
        batch_wait_ms: int | None, timeout_s: float | None, raw: bool, model: str | None, as_json: bool,
        figures: Path, tool_spec: str | None, tool_api: str, ttft: float, tps: float, jitter: float, seed: int) -> None:
    """Generate code for PROMPT (or replay a recorded answer) and execute it as it is written."""
    if (prompt is None) == (not replay_files):
        raise click.UsageError("give a PROMPT or --replay FILE (one of them)")
    if repairs and (raw or batch_chunks or batch_wait_ms is not None):
        raise click.UsageError("--repair talks to a chat model with the executor's batch limits: no --raw, "
                               "--batch-chunks or --batch-wait-ms")
    try:
        tool = None if tool_spec is None else CodeTool.parse(tool_spec, tool_api)
    except ProtocolError as exc:
        raise click.UsageError(f"--tool: {exc}") from exc
    if tool is not None and (raw or repairs):
        raise click.UsageError("--tool asks a chat model for one session: no --raw or --repair")
    _exit_on_sigterm()
    with _replay([_read_answer(path) for path in replay_files], ttft, tps, jitter, seed) as settings, \
            _stack(settings) as ready:
        try:
            if repairs:
                ok = _solve(ready, Gate(gate), as_json, prompt or REPLAY_PROMPT, repairs, model, timeout_s, figures)
            else:
                ok = _run_one(ready, Gate(gate), as_json, prompt or REPLAY_PROMPT, raw, model=model,
                              timeout_s=timeout_s, batch_chunks=batch_chunks, batch_wait_ms=batch_wait_ms,
                              figures=figures, tool=tool).status.value == "ok"
        except ProtocolError as exc:
            raise click.UsageError(str(exc)) from exc
        except Overloaded as exc:
            raise click.ClickException(str(exc)) from exc
    sys.exit(0 if ok else 1)


@main.command()
@_speed_options
def demo(ttft: float, tps: float, jitter: float, seed: int) -> None:
    """Replay the bundled example answer through the whole stack, serial then eager, and compare."""
    answer = resources.files("eager").joinpath("examples/answer.md").read_text()
    _exit_on_sigterm()
    results: dict[Gate, Summary] = {}
    with _replay([answer], ttft, tps, jitter, seed) as settings, _stack(settings) as ready:
        for gate in (Gate.SERIAL, Gate.EAGER):
            click.secho(f"\n=== gate {gate.value} ===", bold=True)
            results[gate] = _run_one(ready, gate, as_json=False)
    serial, eager = results[Gate.SERIAL], results[Gate.EAGER]
    click.secho("\n=== eager vs serial (same replay) ===", bold=True)
    click.echo(f"  {'':<26}{'serial':>10}{'eager':>10}")
    for name, s, e in [("end-to-end", serial.e2e_s, eager.e2e_s),
                       ("non-overlapped execution", serial.non_overlapped_s, eager.non_overlapped_s)]:
        click.echo(f"  {name:<26}{s:>9.3f}s{e:>9.3f}s")
    click.echo(f"  same output: {'yes' if serial.stdout == eager.stdout else 'NO'}; "
               f"end-to-end eager/serial = {eager.e2e_s / serial.e2e_s:.2f}")
    click.secho(f"\n=== a real model on this machine: SmolLM2-135M-Instruct (llama.cpp) ===\n{DEMO_PROMPT}", bold=True)
    with _model(_settings(), always=True) as settings, _stack(settings) as ready:
        _solve(ready, Gate.EAGER, as_json=False, prompt=DEMO_PROMPT, repairs=DEMO_REPAIRS, model=None)


@main.command("model-server")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, help="the default EAGER_MODEL_BASE_URL's port")
def model_server(host: str, port: int) -> None:
    """Serve the bundled local model (SmolLM2-135M-Instruct, llama.cpp) as an OpenAI-compatible endpoint."""
    from eager import local_model

    try:
        argv = local_model.command(host, port)
    except local_model.LocalModelUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    os.execv(argv[0], argv)


@main.command()
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
@click.option("--repair", is_flag=True, help="the repair loop instead: each answer broken part way, then repaired; "
              "time until a working program, serial and eager (no --gate); writes repair.md and repair.json")
def bench(suites: tuple[str, ...], profiles: tuple[str, ...], gates: tuple[str, ...], per_suite: int | None,
          quick: bool, out: Path, repair: bool) -> None:
    """Replay benchmark answers through the stack under each speed profile and gate; report vs serial and ideal."""
    from eager.bench import suite

    _exit_on_sigterm()
    settings = suite.interpreter_for(_settings())
    if repair:
        if click.get_current_context().get_parameter_source("gates") is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--repair always runs the serial and eager gates: no --gate")
        _bench_repair(settings, suites, profiles, per_suite, quick, out)
        return
    chosen = suite.plan(settings, suites, profiles, [Gate(g) for g in {"serial", *gates}], per_suite, quick)
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


@main.command()
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
@_speed_options
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
    _exit_on_sigterm()
    settings = _settings()
    with click.progressbar(length=sessions * len(counts), label=f"{sessions} sessions x {len(counts)} point(s)",
                           file=sys.stderr) as progress:
        try:
            if running:
                reports = [loading.run_running(settings, sessions, concurrency, model=model, gate=Gate(gate),
                                               on_done=lambda _: progress.update(1))]
            else:
                profile = SpeedProfile(ttft_s=ttft, tokens_per_s=tps, jitter=jitter, seed=seed)
                reports = loading.sweep(settings, _read_answer(answer_file) if answer_file else loading.ANSWER, profile,
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


@main.command()
@click.option("--deltas", "deltas_file", type=click.File("r"), required=True,
              help="one JSON string per line: the answer's deltas in order")
@click.option("--raw", is_flag=True, help="the answer is bare code (completion model), not markdown")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per chunk")
def chunk(deltas_file, raw: bool, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """Run the pure detector over recorded deltas and print the chunks it emits."""
    from detector import _events as events
    from detector.core import NEED_DATA, Detector

    detector = Detector(raw=raw)

    def drain() -> None:
        while (event := detector.next_event()) is not NEED_DATA:
            if isinstance(event, events.Chunk):
                if as_json:
                    click.echo(json.dumps(dataclasses.asdict(event)))
                else:
                    click.secho(f"--- chunk {event.seq}: lines {event.start_line}-{event.end_line} "
                                f"(emitted at char {event.emitted_at})", fg="cyan")
                    click.echo(event.code, nl=False)
            elif isinstance(event, events.CodeInvalid):
                click.secho(f"syntax error at line {event.line}: {event.message}", fg="red", err=True)
                sys.exit(1)

    for number, line in enumerate(deltas_file, 1):
        if not line.strip():
            continue
        try:
            delta = json.loads(line)
        except json.JSONDecodeError as exc:
            raise click.UsageError(f"line {number} of the deltas file is not JSON: {exc}") from exc
        if not isinstance(delta, str):
            raise click.UsageError(f"line {number} of the deltas file is not a JSON string")
        detector.receive_data(delta)
        drain()
    detector.receive_eof()
    drain()


@main.command("replay-server")
@click.option("--answer", "answers", multiple=True, required=True,
              help="NAME=FILE (or FILE, named by its stem); the request's model picks the answer; repeat a NAME to "
              "script a conversation (a chat with k assistant messages gets that NAME's answer k)")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8081, show_default=True)
@_speed_options
def replay_server(answers: tuple[str, ...], host: str, port: int, ttft: float, tps: float, jitter: float,
                  seed: int) -> None:
    """Serve recorded answers as an OpenAI-compatible streaming model."""
    from eager.replay import SpeedProfile, run_server

    named: dict[str, list[str]] = {}
    for spec in answers:
        name, _, path = spec.rpartition("=")
        named.setdefault(name or Path(path).stem, []).append(_read_answer(Path(path)))
    run_server(named, SpeedProfile(ttft_s=ttft, tokens_per_s=tps, jitter=jitter, seed=seed), host=host, port=port,
               on_ready=lambda url: click.echo(f"replay model serving {', '.join(named)} at {url}"))


@main.command()
def producer() -> None:
    """Run a producer: call the model for each session and publish its deltas."""
    from producer.worker import serve

    serve(_settings())


@main.command()
def detector() -> None:
    """Run a detector: turn each session's deltas into chunks."""
    from detector.worker import serve

    serve(_settings())


@main.command()
@click.option("--burst", is_flag=True, help="exit when the queue is empty")
def executor(burst: bool) -> None:
    """Run an executor: an RQ worker that executes sessions' chunks in sandboxed interpreters."""
    from executor_pool.worker import serve

    serve(_settings(), burst=burst)


@main.command()
def config() -> None:
    """Print every setting, its environment variable and default, and the sandbox layers this host gives."""
    for env, default, doc in Settings.table():
        click.echo(f"{env:<48} {default:<32} {doc}")
    click.echo(f"\nsandbox isolation on this host: {_isolation(_settings())}")


def _isolation(settings: Settings) -> str:
    """The layers an interpreter started here really gets (read back from the running child, as each session's
    `started` event reports them), or why none starts."""
    from executor_pool.interpreter import InterpreterError
    from executor_pool.pool import new_interpreter

    interpreter = new_interpreter(settings)
    try:
        interpreter.start()
        return interpreter.isolation
    except InterpreterError as exc:
        return f"none, no interpreter starts: {exc}"
    finally:
        interpreter.close()
