"""`eager chunk`: the pure detector alone, over recorded deltas."""

from __future__ import annotations

import dataclasses
import json
import sys

import click


@click.command()
@click.option("--deltas", "deltas_file", type=click.File("r"), required=True,
              help="one JSON string per line: the answer's deltas in order")
@click.option("--raw", is_flag=True, help="the answer is bare code (completion model), not markdown")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per chunk")
def chunk(deltas_file, raw: bool, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """Run the pure detector over recorded deltas and print the chunks it emits."""
    from eager.detector import _events as events
    from eager.detector.core import NEED_DATA, Detector

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
