"""Shared fixtures: a private namespace on the real Redis, replay models, and stacks started from the Procfile.

Tests never flush the shared Redis: each gets a namespace of its own and deletes only its keys.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config import Settings
from common.connection import connect
from common.heartbeat import alive
from common.lifetime import die_with_parent
from common.protocol import STAGES, Keys
from eager.replay import ReplayServer, SpeedProfile

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _cleanup(settings: Settings) -> None:
    client = connect(settings)
    keys = Keys(settings.namespace)
    doomed = list(client.scan_iter(f"{settings.namespace}:*", count=1000))
    doomed += list(client.scan_iter(f"rq:*{keys.executor_queue}*", count=1000))
    doomed += list(client.scan_iter(f"rq:*{settings.namespace}-session-*", count=1000))
    if doomed:
        client.delete(*doomed)
    client.close()


@pytest.fixture
def settings() -> Iterator[Settings]:
    base = Settings.from_env()
    settings = dataclasses.replace(base, namespace=f"test-{uuid.uuid4().hex[:10]}")
    yield settings
    _cleanup(settings)


def stage_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.to_env(), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


class ProcfileStack:
    """The stages as separate OS processes, started from the Procfile's own command lines."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self) -> ProcfileStack:
        env = stage_env(self.settings)
        for line in (ROOT / "Procfile").read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            name, command = line.split(":", 1)
            log = open(self.log_dir / f"{name}.log", "wb")
            self.processes[name] = subprocess.Popen(shlex.split(command), env=env, cwd=ROOT, stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=True,
                                                    preexec_fn=die_with_parent(signal.SIGTERM))
        client = connect(self.settings)
        deadline = time.monotonic() + 30
        while not all(alive(client, Keys(self.settings.namespace), stage) for stage in STAGES):
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} died:\n{self.log(name)}"
            assert time.monotonic() < deadline, "stages did not start beating"
            time.sleep(0.05)
        client.close()
        return self

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def replay_stack(settings: Settings, tmp_path: Path):
    """Start a replay model serving `answers` and a Procfile stack pointed at it; yields (settings, server)."""
    started: list[tuple[ReplayServer, ProcfileStack]] = []

    def start(answers: dict[str, str], profile: SpeedProfile) -> tuple[Settings, ReplayServer]:
        server = ReplayServer(answers, profile).start()
        configured = dataclasses.replace(settings, model_base_url=server.base_url)
        stack = ProcfileStack(configured, tmp_path)
        started.append((server, stack))
        stack.start()
        return configured, server

    yield start
    for server, stack in started:
        stack.stop()
        server.stop()

