"""The executor process: an RQ forking worker on the session queue, with warm interpreters.

The forking `Worker` (not `SimpleWorker`) because RQ's stop-job command kills the
work-horse's process group, and only the forking worker honours it. The worker keeps
a pool of started interpreters and hands one to each job's horse (see `pool`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis
from rq import Queue, Worker
from rq.worker import WorkerStatus
from rq.job import JobStatus

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.connection import connect
from eager.common.heartbeat import process_name, start_beating
from eager.common.metrics import serve_metrics
from eager.common.protocol import Keys, Message, ProtocolError, SessionStatus, Summary, TurnRequest, decode
from eager.common.streams import end_abandoned
from eager.executor_pool import metrics, session  # session: imported once here, not in every forked horse
from eager.executor_pool.pool import InterpreterPool, hand_off, new_interpreter

log = logging.getLogger(__name__)

POOL_FILL_TIMEOUT_S = 30.0


class PoolWorker(Worker):
    """Hands the next job's horse a warm interpreter, and retires it once the horse is gone."""

    pool: InterpreterPool
    settings: Settings
    client: redis.Redis

    def execute_job(self, job: Any, queue: Queue) -> None:
        with contextlib.suppress(ProtocolError):  # unreadable: the job refuses it at once, in its default time
            job.timeout = session.job_timeout_s(session.spec_of(tuple(job.args), dict(job.kwargs)), self.settings,
                                                now_ns())
        interpreter = self.pool.take()
        hand_off(interpreter)
        try:
            super().execute_job(job, queue)
        except redis.RedisError:
            # RQ watches the horse through Redis (heartbeats, the job's status once it exits): with Redis away
            # that raises, and would end this worker, maybe with the horse still running. The horse has its own
            # lease and deadline: wait for it, and observe the job as after any other
            log.exception("job %s: Redis failed while RQ watched its horse; waiting for the horse", job.id)
            if self.horse_pid:
                self.wait_for_horse()
            self._set_state_locally_at_least(WorkerStatus.IDLE)
        finally:
            hand_off(None)
            if interpreter is not None:
                self.pool.retire(interpreter)
            # busy until the job is observed: a warm stop (SIGTERM) that comes meanwhile is then recorded, and
            # the loop stops before the next job, instead of RQ raising StopRequested inside the observation
            # (which would cut it short, be swallowed with its errors, and leave the worker serving until killed)
            state = self.get_state()
            self._set_state_locally_at_least(WorkerStatus.BUSY)
            try:
                self._after_job(job)
            finally:
                self._set_state_locally_at_least(state)

    def _set_state_locally_at_least(self, state: str) -> None:
        """RQ's state, which decides how a stop request is taken, even when Redis cannot record it: the worker
        outlives a Redis that is away (RQ sets its own copy before it writes the one in Redis)."""
        with contextlib.suppress(redis.RedisError):
            self.set_state(state)

    def _after_job(self, job: Any) -> None:
        """Observe each session the job ran (a conversation's turns too) from its streams, and end any it left
        without a summary. Never raises: the worker outlives whatever a session left behind."""
        keys = Keys(self.settings.namespace)
        try:
            spec = session.spec_of(tuple(job.args), dict(job.kwargs))
            turns = [spec.first]
            if spec.conversation is not None:
                turns += [m for m in self._read(keys.turns(spec.conversation)) if isinstance(m, TurnRequest)]
            returned = job.get_status(refresh=True) == JobStatus.FINISHED  # run_session published its own end
        except Exception:
            log.exception("job %s: could not read its sessions after its horse exited", job.id)
            return
        for number, turn in enumerate(turns, 1):
            try:
                self._after_session(keys, turn, number, returned)
            except Exception:
                log.exception("session %s: could not read or end it after its horse exited", turn.session_id)

    def _after_session(self, keys: Keys, turn: TurnRequest, number: int, returned: bool) -> None:
        chunks = self._read(keys.chunks(turn.session_id))
        events = self._read(keys.events(turn.session_id))
        if not any(isinstance(event, Summary) for event in events):  # read first: most sessions ended themselves
            events.append(self._end_orphan(keys, turn, number, returned))
        metrics.observe_session(chunks, events)

    def _read(self, key: str) -> list[Message]:
        """The stream's messages; an entry this build cannot read is logged and skipped."""
        messages = []
        for entry_id, fields in self.client.xrange(key):
            try:
                messages.append(decode(fields))
            except ProtocolError as exc:
                log.warning("%s %s: skipped an unreadable entry: %s", key, entry_id, exc)
        return messages

    def _end_orphan(self, keys: Keys, turn: TurnRequest, number: int, returned: bool) -> Summary:
        """Nothing will publish this session's end: stop the model and give the client its terminal event."""
        detail = ("the executor's work horse died before the session ended" if not returned
                  else "its conversation ended before this turn was taken (closed, idle past EAGER_TURN_IDLE_S, "
                  "or at its turn limit)" if number > 1
                  else "the executor ended without publishing the session's end")
        summary = Summary(status=SessionStatus.FAILED, gate=turn.gate, submitted_ns=turn.submitted_ns,
                          finished_ns=now_ns(), stdout="", detail=detail, turn=number)
        return end_abandoned(self.client, keys, turn.session_id, summary, "executor", self.settings.key_ttl_s)


def serve(settings: Settings, burst: bool = False) -> None:
    keys = Keys(settings.namespace)
    connection = connect(settings, decode=False)
    queue = Queue(keys.executor_queue, connection=connection)
    name = process_name()
    worker = PoolWorker([queue], connection=connection, name=f"{keys.namespace}-{name}")
    worker.settings = settings
    worker.client = connect(settings)
    worker.pool = InterpreterPool(settings.warm_interpreters, lambda: new_interpreter(settings, warm=True)).start()
    metrics.watch(worker.pool.ready, lambda: queue.count)
    serve_metrics(settings)
    if not worker.pool.wait_filled(POOL_FILL_TIMEOUT_S):  # beat only once warm: the first session starts warm too
        log.warning("warm pool not filled after %.0f s; serving anyway", POOL_FILL_TIMEOUT_S)
    stop_beating = start_beating(connect(settings), keys, "executor", name)
    try:
        worker.work(burst=burst, with_scheduler=False, logging_level=logging.WARNING)
    finally:
        stop_beating.set()
        worker.pool.close()
