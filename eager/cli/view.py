"""How `eager run` shows a session: the human view (the answer as it streams, each batch's output beside it, a
closing summary) or one JSON line per event."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click

from eager.common.protocol import (
    BatchFinished,
    BatchStarted,
    ChunkReady,
    Delta,
    ExecutionError,
    Figure,
    GateAction,
    GateDecision,
    Message,
    Output,
    SessionStarted,
    Summary,
    to_data,
)
from eager.detector.lines import known_line_starts, split_lines
from eager.visible import visible

DEFAULT_FIGURES = "eager-figures"


class HumanView:
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
                print_summary(message)

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


def print_summary(summary: Summary) -> None:
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


def shower(as_json: bool, figures: Path = Path(DEFAULT_FIGURES)) -> Callable[[int, Message], None]:
    """How `eager run` shows each event of turn N: a JSON line (with its turn), or the human view (which writes
    figures as PNG files under `figures`)."""
    view, shown_turn = HumanView(figures), 1

    def show(turn: int, message: Message) -> None:
        nonlocal view, shown_turn
        if as_json:
            data = message.report() if isinstance(message, Summary) else to_data(message)
            click.echo(json.dumps({**data, "turn": turn}))
            return
        if turn != shown_turn:
            view, shown_turn = HumanView(figures, turn), turn
            click.secho(f"\n=== turn {turn}: the error went back to the model ===", bold=True)
        if not isinstance(message, (ChunkReady, SessionStarted)):
            view.show(message)

    return show
