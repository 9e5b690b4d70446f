"""The stages, one command each, as the Procfile runs them."""

from __future__ import annotations

import click

from eager.cli.shared import load_settings


@click.command()
def producer() -> None:
    """Run a producer: call the model for each session and publish its deltas."""
    from eager.producer.worker import serve

    serve(load_settings())


@click.command()
def detector() -> None:
    """Run a detector: turn each session's deltas into chunks."""
    from eager.detector.worker import serve

    serve(load_settings())


@click.command()
@click.option("--burst", is_flag=True, help="exit when the queue is empty")
def executor(burst: bool) -> None:
    """Run an executor: an RQ worker that executes sessions' chunks in sandboxed interpreters."""
    from eager.executor_pool.worker import serve

    serve(load_settings(), burst=burst)
