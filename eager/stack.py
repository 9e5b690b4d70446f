"""A stack for the duration of one command: use the running one, start what is missing.

`eager run` must work on a machine where nothing runs yet (the embedded default) and
must not start duplicates where a stack already runs; stage heartbeats tell which.
If no Redis answers, a private redis-server on a unix socket in a temporary directory
serves the run, so nothing listens on the network and nothing outlives the command.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eager.common.config import Settings
from eager.common.connection import RedisUnavailable, connect, ping
from eager.common.heartbeat import alive
from eager.common.lifetime import die_with_parent
from eager.common.protocol import STAGES, Keys
from eager.common.errors import EagerError

START_TIMEOUT_S = 30.0


class StackError(EagerError, RuntimeError):
    """A stage could not be started; the message carries the tail of its log."""


def _wait(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


class LocalStack:
    """Context manager yielding the settings to use (the Redis URL may be a private one)."""

    def __init__(self, settings: Settings, executors: int = 1, forget: bool = False) -> None:
        """`forget`: the namespace is this stack's alone; delete its keys once its stages have stopped."""
        self.settings = settings
        self.executors = executors
        self.forget = forget
        self._dir = Path(tempfile.mkdtemp(prefix="eager-stack-"))
        self._processes: list[tuple[str, subprocess.Popen]] = []
        self._redis: subprocess.Popen | None = None
        self.started: list[str] = []

    def __enter__(self) -> Settings:
        try:
            self._ensure_redis()
            self._ensure_stages()
        except BaseException:
            self.close()
            raise
        return self.settings

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self._dir / f"{name}.log", "wb")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=self._dir, preexec_fn=die_with_parent(signal.SIGTERM))
        log.close()
        self._processes.append((name, process))
        self.started.append(name)
        return process

    def _log_tail(self, name: str) -> str:
        path = self._dir / f"{name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def _ensure_redis(self) -> None:
        if ping(self.settings):
            return
        server = shutil.which("redis-server")
        if server is None:
            raise RedisUnavailable(
                f"no Redis answers at {self.settings.redis_url} and redis-server is not installed: "
                "install it (apt-get install -y redis-server) or point EAGER_REDIS_URL at a running Redis"
            )
        socket_path = self._dir / "redis.sock"
        self._redis = self._spawn("redis", [server, "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
                              "--save", "", "--appendonly", "no", "--dir", str(self._dir)])
        self.settings = dataclasses.replace(self.settings, redis_url=f"unix://{socket_path}")
        _wait(lambda: ping(self.settings, 0.2), START_TIMEOUT_S, "the private redis-server")

    def _ensure_stages(self) -> None:
        client, keys = connect(self.settings), Keys(self.settings.namespace)
        env = {**os.environ, **self.settings.to_env(), "EAGER_METRICS_PORT": "0"}  # a run's own stages serve no /metrics
        missing = [stage for stage in STAGES if not alive(client, keys, stage)]
        for stage in missing:
            for n in range(self.executors if stage == "executor" else 1):
                self._spawn(f"{stage}-{n}", [sys.executable, "-m", "eager", stage], env)

        def all_alive() -> bool:
            for name, process in self._processes:
                if process.poll() is not None:
                    raise StackError(f"{name} exited with {process.returncode}:\n{self._log_tail(name)}")
            return all(alive(client, keys, stage) for stage in missing)

        try:
            _wait(all_alive, START_TIMEOUT_S, f"stages {', '.join(missing)} to beat")
        finally:
            client.close()

    def close(self) -> None:
        """Stages first (they still talk to Redis on the way out), then Redis."""
        stages = [process for _, process in self._processes if process is not self._redis]
        _stop_all(stages)
        if self.forget and self._redis is None and ping(self.settings):
            client = connect(self.settings)
            client.delete(*client.scan_iter(Keys(self.settings.namespace).pattern, count=1000))
            client.close()
        _stop_all([self._redis] if self._redis else [])
        self._processes.clear()
        shutil.rmtree(self._dir, ignore_errors=True)


def _stop_all(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
