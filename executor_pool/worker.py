"""The executor process: an RQ forking worker on the session queue, with warm interpreters.

The forking `Worker` (not `SimpleWorker`) because RQ's stop-job command kills the
work-horse's process group, and only the forking worker honours it. The worker keeps
a pool of started interpreters and hands one to each job's horse (see `pool`).
"""

from __future__ import annotations

import logging
from typing import Any

from rq import Queue, Worker

from common.config import Settings
from common.connection import connect
from common.heartbeat import process_name, start_beating
from common.protocol import Keys
from executor_pool import session  # noqa: F401  imported once here, not in every forked work horse
from executor_pool.pool import InterpreterPool, hand_off, new_interpreter

log = logging.getLogger(__name__)

POOL_FILL_TIMEOUT_S = 30.0


class PoolWorker(Worker):
    """Hands the next job's horse a warm interpreter, and retires it once the horse is gone."""

    pool: InterpreterPool

    def execute_job(self, job: Any, queue: Queue) -> None:
        interpreter = self.pool.take()
        hand_off(interpreter)
        try:
            super().execute_job(job, queue)
        finally:
            hand_off(None)
            if interpreter is not None:
                self.pool.retire(interpreter)


def serve(settings: Settings, burst: bool = False) -> None:
    keys = Keys(settings.namespace)
    connection = connect(settings, decode=False)
    queue = Queue(keys.executor_queue, connection=connection)
    name = process_name()
    worker = PoolWorker([queue], connection=connection, name=f"{keys.namespace}-{name}")
    worker.pool = InterpreterPool(settings.warm_interpreters, lambda: new_interpreter(settings)).start()
    if not worker.pool.wait_filled(POOL_FILL_TIMEOUT_S):  # beat only once warm: the first session starts warm too
        log.warning("warm pool not filled after %.0f s; serving anyway", POOL_FILL_TIMEOUT_S)
    stop_beating = start_beating(connect(settings), keys, "executor", name)
    try:
        worker.work(burst=burst, with_scheduler=False, logging_level=logging.WARNING)
    finally:
        stop_beating.set()
        worker.pool.close()
