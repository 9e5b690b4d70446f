"""The `eager` command line: run a session, chunk a file, serve a replay model, run a stage.

One module per command or concept; this one is the group that gathers them.
"""

from __future__ import annotations

import logging

import click

from eager.cli import bench, chunk, config, demo, load, run, servers, stages


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="log what the stages do")
def main(verbose: bool) -> None:
    """Eager: run LLM-written Python while the model is still writing it."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


for command in (run.run, demo.demo, servers.model_server, servers.model_install, bench.bench, load.load, chunk.chunk, servers.replay_server,
                stages.producer, stages.detector, stages.executor, config.config):
    main.add_command(command)
