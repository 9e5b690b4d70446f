"""What the commands share: the settings, the replay model's speed options, recorded answers, and the model and
stack a command runs on (a ClickException, not a traceback, when either cannot be had)."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from eager.common.config import Settings
from eager.common.connection import RedisUnavailable
from eager.stack import LocalStack, StackError

REPLAY_MODEL = "replay"
REPLAY_PROMPT = "replay"  # what a replayed session asks: the replay model answers anything with its recording


def load_settings() -> Settings:
    """The settings from the environment, the gate's rules parsed once, so a typo fails here, not per session."""
    from eager.executor_pool.static_gate import Rules

    try:
        settings = Settings.from_env()
        Rules.parse(settings.gate_preset, settings.gate_escapes, settings.gate_hold)  # a typo fails here, not per session
        return settings
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def speed_options(command):  # type: ignore[no-untyped-def]
    command = click.option("--seed", default=0, show_default=True, help="jitter seed (same seed, same timing)")(command)
    command = click.option("--jitter", default=0.0, show_default=True, help="relative jitter of token gaps")(command)
    command = click.option("--tps", default=50.0, show_default=True, help="replay tokens per second")(command)
    command = click.option("--ttft", default=0.3, show_default=True, help="replay time to first token, seconds")(command)
    return command


def read_answer(path: Path) -> str:
    """A recorded answer exactly as written: no newline translation (read_text would make a lone \\r and \\r\\n
    into \\n, and the replay would no longer be the answer whose line numbers it is meant to reproduce)."""
    with open(path, encoding="utf-8", newline="") as file:
        return file.read()


@contextlib.contextmanager
def replay(answers: list[str], ttft: float, tps: float, jitter: float, seed: int) -> Iterator[Settings]:
    """Settings for a run; with answers (one per turn), a replay model serves them and the stages use a namespace
    of their own (a shared stack's producer is configured for its own model, not for this replay)."""
    settings = load_settings()
    if not answers:
        with model(settings) as configured:
            yield configured
        return
    from eager.replay import SpeedProfile
    from eager.replay_stack import replay_model

    profile = SpeedProfile(ttft_s=ttft, tokens_per_s=tps, jitter=jitter, seed=seed)
    with replay_model(settings, {REPLAY_MODEL: answers}, profile, model=REPLAY_MODEL) as configured:
        yield configured


@contextlib.contextmanager
def model(settings: Settings, always: bool = False) -> Iterator[Settings]:
    """With no model configured, or `always`, the local model (EAGER_LOCAL_MODEL) serves this run (`local_model`)."""
    from eager import local_model

    def announce(base_url: str, served: local_model.LocalModel) -> None:
        click.echo(f"(serving the local model {served.title} with llama.cpp at {base_url})", err=True)

    try:
        with local_model.unless_configured(settings, always, announce) as configured:
            yield configured
    except local_model.LocalModelUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def stack(settings: Settings, executors: int = 1) -> Iterator[Settings]:
    """The running stack, or one started for the command (`LocalStack`); why not, as a ClickException."""
    try:
        with LocalStack(settings, executors=executors) as ready:
            yield ready
    except (RedisUnavailable, StackError) as exc:
        raise click.ClickException(str(exc)) from exc


def exit_on_sigterm() -> None:
    """A terminated `eager run` unwinds like Ctrl-C: cancels its session, stops its embedded stack."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
