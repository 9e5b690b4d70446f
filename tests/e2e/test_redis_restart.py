"""Redis restarted under a running session (a private redis-server, so the shared one is never touched):
the client gets a terminal event within a bounded time, and the same stage processes serve the next
session once Redis is back."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from eager.common.config import Settings
from eager.common.connection import ping
from eager.aio import AsyncClient
from eager.common.protocol import Message, Output, SessionStatus, Summary
from eager.client import Client, Session
from eager.replay import SpeedProfile
from tests.helpers import answer_of, collect, eventually

SLOW = answer_of("import time\nprint('one', flush=True)\ntime.sleep(2)\nprint('two')\n")
QUICK = answer_of("print(6 * 7)\n")
TERMINAL_WITHIN_S = 15.0


class PrivateRedis:
    """A redis-server on a unix socket of its own, without persistence, like the shared one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> PrivateRedis:
        self.process = subprocess.Popen(
            [shutil.which("redis-server"), "--port", "0", "--unixsocket", str(self.socket), "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)], stdout=subprocess.DEVNULL)
        settings = Settings(redis_url=self.url)
        eventually(lambda: ping(settings, 0.2), "private redis-server answers")
        return self

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def stack_on_private_redis(replay_stack, tmp_path):
    """(settings, redis-server, stack): the Procfile stages and a replay model on a Redis of their own."""
    redis_server = PrivateRedis(tmp_path).start()
    configured, _ = replay_stack({"slow": SLOW, "quick": QUICK}, SpeedProfile(ttft_s=0.05, tokens_per_s=100.0),
                                 redis_url=redis_server.url, lease_s=1.0)
    yield configured, redis_server, replay_stack.stack
    replay_stack.stop()  # the stages still talk to their Redis on the way out
    if redis_server.process.poll() is None:
        redis_server.kill()


def cut_by(redis_server: PrivateRedis, configured, action) -> tuple[Session, float]:  # type: ignore[no-untyped-def]
    """Run a session, do `action` to Redis at its first output; the session and seconds from then to its end."""
    with Client(configured) as client:
        session = client.submit(messages=[{"role": "user", "content": "go"}], model="slow")
        acted_at = None
        for event in session.events(tokens=False):
            if isinstance(event, Output) and acted_at is None:
                action(redis_server)
                acted_at = time.monotonic()
        return session, time.monotonic() - acted_at


def restart(redis_server: PrivateRedis) -> None:
    redis_server.kill()
    redis_server.start()


@pytest.mark.slow
def test_a_session_cut_by_a_redis_restart_ends_and_the_stages_serve_the_next(stack_on_private_redis):
    configured, redis_server, stack = stack_on_private_redis
    session, took_s = cut_by(redis_server, configured, restart)
    assert took_s < TERMINAL_WITHIN_S
    assert session.summary.status is SessionStatus.FAILED, session.summary
    assert "Redis" in session.summary.detail

    stack.wait_alive()
    with Client(configured) as client:
        _, after = collect(client.submit(messages=[{"role": "user", "content": "go"}], model="quick"))
    assert after.status is SessionStatus.OK and after.stdout == "42\n"
    for name, process in stack.processes.items():
        assert process.poll() is None, f"{name} died:\n{stack.log(name)}"


@pytest.mark.slow
def test_a_client_whose_redis_stays_away_still_gets_a_terminal_event(stack_on_private_redis):
    configured, redis_server, _ = stack_on_private_redis
    session, took_s = cut_by(redis_server, configured, PrivateRedis.kill)
    assert took_s < TERMINAL_WITHIN_S
    assert session.summary.status is SessionStatus.FAILED
    assert "Redis unreachable" in session.summary.detail


@pytest.mark.slow
def test_an_async_client_whose_redis_stays_away_still_gets_a_terminal_event(stack_on_private_redis):
    configured, redis_server, _ = stack_on_private_redis

    async def cut() -> tuple[list[Message], float]:
        async with AsyncClient(configured) as client:
            session = await client.submit(messages=[{"role": "user", "content": "go"}], model="slow")
            events, killed_at = [], None
            async for event in session.events(tokens=False):
                events.append(event)
                if isinstance(event, Output) and killed_at is None:
                    redis_server.kill()
                    killed_at = time.monotonic()
            assert killed_at is not None
            return events, time.monotonic() - killed_at

    events, took_s = asyncio.run(cut())
    assert took_s < TERMINAL_WITHIN_S
    summary = events[-1]
    assert isinstance(summary, Summary) and summary.status is SessionStatus.FAILED
    assert "Redis unreachable" in str(summary.detail)
