"""Shared fixtures: a private namespace on the real Redis, replay models, and stacks started from the Procfile.

Tests never flush the shared Redis: each gets a namespace of its own and deletes only its keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eager.common.config import Settings
from eager.common.connection import connect
from eager.common.heartbeat import alive
from eager.common.lifetime import die_with_parent
from eager.common.protocol import STAGES, Keys
from eager.replay import Answers, ReplayServer, SpeedProfile
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _cleanup(settings: Settings) -> None:
    client = connect(settings)
    keys = Keys(settings.namespace)
    doomed = list(client.scan_iter(keys.pattern, count=1000))
    doomed += list(client.scan_iter(f"rq:*{keys.executor_queue}*", count=1000))
    doomed += list(client.scan_iter(f"rq:*{settings.namespace}-session-*", count=1000))
    if doomed:
        client.delete(*doomed)
    client.close()


@contextlib.contextmanager
def private_namespace() -> Iterator[Settings]:
    """Settings from the environment in a namespace of their own, whose keys are deleted afterwards."""
    settings = dataclasses.replace(Settings.from_env(), namespace=f"test-{uuid.uuid4().hex[:10]}")
    try:
        yield settings
    finally:
        _cleanup(settings)


@pytest.fixture
def settings() -> Iterator[Settings]:
    with private_namespace() as settings:
        yield settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stage_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.to_env(), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


class ProcfileStack:
    """The stages as separate OS processes, started from the Procfile's own command lines."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}
        self.metrics_ports: dict[str, int] = {}

    def start(self, executors: int = 1) -> ProcfileStack:
        """The stages, with `executors` executors; not the Procfile's local model (tests bring their own model
        endpoint)."""
        for name in STAGES:
            self.spawn(name)
        for n in range(2, executors + 1):
            self.spawn(f"executor-{n}", "executor")
        self.wait_alive()
        return self

    @staticmethod
    def commands() -> dict[str, str]:
        lines = (line for line in (ROOT / "Procfile").read_text().splitlines() if line.strip() and line[0] != "#")
        return {name.strip(): command for name, command in (line.split(":", 1) for line in lines)}

    def spawn(self, name: str, line: str | None = None) -> subprocess.Popen:
        """Start (or start again) the Procfile process `line` (default: `name`) as `name`; as under honcho, it
        serves /metrics on its $PORT."""
        env = stage_env(self.settings)
        del env["EAGER_METRICS_PORT"]
        self.metrics_ports[name] = free_port()
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                shlex.split(self.commands()[line or name]), env={**env, "PORT": str(self.metrics_ports[name])}, cwd=ROOT,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))
        return self.processes[name]

    def wait_alive(self) -> None:
        """Until each process beats under its own name (a killed predecessor's beat does not count)."""
        client, keys = connect(self.settings), Keys(self.settings.namespace)

        def all_beating() -> bool:
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} died:\n{self.log(name)}"
            return all(f"{socket.gethostname()}:{process.pid}" in alive(client, keys, name.split("-")[0])
                       for name, process in self.processes.items())

        eventually(all_beating, "stages beating", 30, every_s=0.05)
        client.close()

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


class ReplayStacks:
    """Starts replay models and Procfile stacks pointed at them; `stack` is the last one started."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.started: list[tuple[ReplayServer, ProcfileStack]] = []

    def __call__(self, answers: Answers, profile: SpeedProfile, executors: int = 1,
                 **settings: Any) -> tuple[Settings, ReplayServer]:
        """`settings` override the stack's (e.g. lease_s=1.0)."""
        server = ReplayServer(answers, profile).start()
        stack = ProcfileStack(dataclasses.replace(self.settings, model_base_url=server.base_url, **settings),
                              self.log_dir)
        self.started.append((server, stack))
        stack.start(executors)
        return stack.settings, server

    @property
    def stack(self) -> ProcfileStack:
        return self.started[-1][1]

    def stop(self) -> None:
        """Every stack and its model; a second call finds nothing left to stop."""
        while self.started:
            server, stack = self.started.pop()
            stack.stop()
            server.stop()


@pytest.fixture
def replay_stack(settings: Settings, tmp_path: Path) -> Iterator[ReplayStacks]:
    """`replay_stack(answers, profile)` starts a replay model serving `answers` and a Procfile stack pointed
    at it, and returns (settings, server)."""
    stacks = ReplayStacks(settings, tmp_path)
    yield stacks
    stacks.stop()

