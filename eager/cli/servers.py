"""The model servers: the bundled local model, and a replay model serving recorded answers."""

from __future__ import annotations

import os
from pathlib import Path

import click

from eager.cli.shared import read_answer, speed_options


@click.command("model-server")
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


@click.command("replay-server")
@click.option("--answer", "answers", multiple=True, required=True,
              help="NAME=FILE (or FILE, named by its stem); the request's model picks the answer; repeat a NAME to "
              "script a conversation (a chat with k assistant messages gets that NAME's answer k)")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8081, show_default=True)
@speed_options
def replay_server(answers: tuple[str, ...], host: str, port: int, ttft: float, tps: float, jitter: float,
                  seed: int) -> None:
    """Serve recorded answers as an OpenAI-compatible streaming model."""
    from eager.replay import SpeedProfile, run_server

    named: dict[str, list[str]] = {}
    for spec in answers:
        name, _, path = spec.rpartition("=")
        named.setdefault(name or Path(path).stem, []).append(read_answer(Path(path)))
    run_server(named, SpeedProfile(ttft_s=ttft, tokens_per_s=tps, jitter=jitter, seed=seed), host=host, port=port,
               on_ready=lambda url: click.echo(f"replay model serving {', '.join(named)} at {url}"))
