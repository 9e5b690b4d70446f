"""The executor process: an RQ forking worker on the session queue.

The forking `Worker` (not `SimpleWorker`) because RQ's stop-job command kills the
work-horse's process group, interpreter included, and only the forking worker honours it.
"""

from __future__ import annotations

import logging

from rq import Queue, Worker

from common.config import Settings
from common.connection import connect
from common.heartbeat import process_name, start_beating
from common.protocol import Keys


def serve(settings: Settings, burst: bool = False) -> None:
    keys = Keys(settings.namespace)
    connection = connect(settings, decode=False)
    queue = Queue(keys.executor_queue, connection=connection)
    name = process_name()
    worker = Worker([queue], connection=connection, name=f"{keys.namespace}-{name}")
    stop_beating = start_beating(connect(settings), keys, "executor", name)
    try:
        worker.work(burst=burst, with_scheduler=False, logging_level=logging.WARNING)
    finally:
        stop_beating.set()
