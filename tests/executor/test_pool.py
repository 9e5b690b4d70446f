"""The warm pool with real sandboxed interpreters: what it hands out is started and alive, and it refills."""

from __future__ import annotations

import os
import select

import psutil
import pytest

from eager.common.config import Settings
from eager.executor_pool.pool import InterpreterPool, hand_off, handed_off, new_interpreter

START_S = 30.0


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def pool():
    settings = Settings.from_env()
    pools: list[InterpreterPool] = []

    def make(size: int) -> InterpreterPool:
        created = InterpreterPool(size, lambda: new_interpreter(settings)).start()
        pools.append(created)
        return created

    yield make
    for created in pools:
        created.close()


def test_take_hands_out_a_started_interpreter_and_the_pool_refills(pool):
    warm = pool(1)
    assert warm.wait_filled(START_S)
    interpreter = warm.take()
    assert interpreter is not None and interpreter.alive
    try:
        outputs: list[str] = []
        assert interpreter.run("print(2 + 2)", 1, lambda stream, text: outputs.append(text), timeout=10).ok
        assert "".join(outputs) == "4\n"
        assert warm.wait_filled(START_S)
        replacement = warm.take()
        assert replacement is not None and replacement.pid != interpreter.pid
        replacement.close()
    finally:
        interpreter.close()


def test_an_interpreter_that_died_while_waiting_is_not_handed_out(pool):
    warm = pool(1)
    assert warm.wait_filled(START_S)
    victim = warm._ready[0]
    pid = victim.pid
    assert pid is not None
    exited = os.pidfd_open(pid)  # readable once the process has exited: an event to wait on
    psutil.Process(pid).kill()
    assert select.select([exited], [], [], 10)[0]
    os.close(exited)
    assert warm.take() is None
    assert warm.wait_filled(START_S)
    fresh = warm.take()
    assert fresh is not None and fresh.alive and fresh.pid != pid
    fresh.close()


def test_close_kills_the_waiting_interpreters_and_removes_their_directories(pool):
    warm = pool(2)
    assert warm.wait_filled(START_S)
    waiting = [(it.pid, it.host_workdir) for it in warm._ready]
    warm.close()
    for pid, workdir in waiting:
        assert pid is not None and gone(pid)
        assert workdir is not None and not os.path.exists(workdir)


def test_a_pool_of_size_zero_hands_out_nothing(pool):
    assert pool(0).take() is None


def test_the_handed_off_interpreter_is_taken_once():
    marker = object()
    hand_off(marker)  # type: ignore[arg-type]
    assert handed_off() is marker
    assert handed_off() is None
