"""`eager config`: every setting, and the sandbox layers this host gives."""

from __future__ import annotations

import click

from eager.common.config import Settings
from eager.cli.shared import load_settings


@click.command()
def config() -> None:
    """Print every setting, its environment variable and default, and the sandbox layers this host gives."""
    for env, default, doc in Settings.table():
        click.echo(f"{env:<48} {default:<32} {doc}")
    click.echo(f"\nsandbox isolation on this host: {_isolation(load_settings())}")


def _isolation(settings: Settings) -> str:
    """The layers an interpreter started here really gets (read back from the running child, as each session's
    `started` event reports them), or why none starts."""
    from eager.executor_pool.interpreter import InterpreterError
    from eager.executor_pool.pool import new_interpreter

    interpreter = new_interpreter(settings)
    try:
        interpreter.start()
        return interpreter.isolation
    except InterpreterError as exc:
        return f"none, no interpreter starts: {exc}"
    finally:
        interpreter.close()
