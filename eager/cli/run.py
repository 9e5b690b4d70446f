"""`eager run`: one session, or a repair loop, shown as it streams."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click
import redis

from eager.common.config import Settings
from eager.common.protocol import CodeTool, Gate, ProtocolError, Summary, ToolShape
from eager.cli.shared import REPLAY_PROMPT, exit_on_sigterm, read_answer, replay, speed_options, stack
from eager.cli.view import DEFAULT_FIGURES, shower
from eager.client import Client, Overloaded
from eager.visible import visible


def solve(settings: Settings, gate: Gate, as_json: bool, prompt: str, repairs: int, model: str | None,
          timeout_s: float | None = None, figures: Path = Path(DEFAULT_FIGURES), tool: CodeTool | None = None) -> bool:
    """The repair loop with every event shown; prints the per-turn report and returns whether it succeeded."""
    with Client(settings) as client:
        report = client.solve(messages=[{"role": "user", "content": prompt}], repairs=repairs, model=model, gate=gate,
                              timeout_s=timeout_s, tool=tool, on_event=shower(as_json, figures))
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        click.secho("\n=== repair loop ===", bold=True)
        click.echo(visible(report.text()))
    return report.succeeded


def run_one(settings: Settings, gate: Gate, as_json: bool, prompt: str = REPLAY_PROMPT, raw: bool = False,
            model: str | None = None, timeout_s: float | None = None, batch_chunks: int | None = None,
            batch_wait_ms: int | None = None, figures: Path = Path(DEFAULT_FIGURES),
            tool: CodeTool | None = None) -> Summary:
    """One session; `raw`: a completion request (the answer is bare code), else a chat one (markdown, or the calls
    of `tool`)."""
    with Client(settings) as client:
        limits = {"timeout_s": timeout_s, "batch_chunks": batch_chunks, "batch_wait_ms": batch_wait_ms}
        request = {"prompt": prompt} if raw else {"messages": [{"role": "user", "content": prompt}]}
        session = client.submit(**request, model=model, gate=gate, tool=tool, **limits)
        show = shower(as_json, figures)
        try:
            for message in session.events():
                show(1, message)
        except BaseException:
            with contextlib.suppress(redis.RedisError):
                session.cancel("the client stopped reading")
            raise
        assert session.summary is not None
        return session.summary


@click.command()
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
@speed_options
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
    if tool is not None and raw:
        raise click.UsageError("--tool asks a chat model: no --raw")
    exit_on_sigterm()
    with replay([read_answer(path) for path in replay_files], ttft, tps, jitter, seed) as settings, \
            stack(settings) as ready:
        try:
            if repairs:
                ok = solve(ready, Gate(gate), as_json, prompt or REPLAY_PROMPT, repairs, model, timeout_s, figures, tool)
            else:
                ok = run_one(ready, Gate(gate), as_json, prompt or REPLAY_PROMPT, raw, model=model,
                             timeout_s=timeout_s, batch_chunks=batch_chunks, batch_wait_ms=batch_wait_ms,
                             figures=figures, tool=tool).status.value == "ok"
        except ProtocolError as exc:
            raise click.UsageError(str(exc)) from exc
        except Overloaded as exc:
            raise click.ClickException(str(exc)) from exc
    sys.exit(0 if ok else 1)
