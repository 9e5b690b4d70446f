"""The public client: submit a session, iterate its events, get its summary.

Submitting enqueues the executor job first, then publishes the request, so the
executor's fork and interpreter start overlap the model's time to first token.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator

from redis import RedisError
from rq import Queue

from common.clock import now_ns
from common.config import Settings
from common.connection import MAX_BLOCK_MS, connect
from common.lease import RENEWALS_PER_PERIOD, Watch
from common.protocol import Cancel, Gate, Keys, Message, SessionRequest, SessionStatus, Summary, encode
from common.streams import decode_entries, end_abandoned, publish

# How long past the session timeout a client waits for the executor's terminal event.
TERMINAL_GRACE_S = 15.0
REDIS_GIVE_UP_LEASES = 3  # Redis unreachable this many lease periods: the session's end cannot be learnt
REDIS_RETRY_S = 0.2


class Overloaded(RuntimeError):
    """The admission limit refused a session: `EAGER_MAX_QUEUED` sessions already wait for an executor.
    Nothing was enqueued or published; the caller may retry later (or the deployment add executors)."""

    def __init__(self, queued: int, limit: int) -> None:
        super().__init__(f"overloaded: {queued} sessions already wait for an executor (EAGER_MAX_QUEUED={limit}); "
                         "nothing was submitted: retry later or add executors")
        self.queued = queued
        self.limit = limit


class Session:
    def __init__(self, client: Client, request: SessionRequest) -> None:
        self._client = client
        self.request = request
        self.summary: Summary | None = None

    @property
    def id(self) -> str:
        return self.request.session_id

    def events(self, tokens: bool = True) -> Iterator[Message]:
        """Every event of the session in arrival order (deltas, chunks, batches, output, errors), ending
        with its Summary. The caller always gets a terminal event: if the executor running the session
        stops renewing its lease, a `failed` Summary is published here (and the model stopped); if none
        arrives by the session deadline, a TIMEOUT summary is made here."""
        keys, redis, settings = self._client.keys, self._client.redis, self._client.settings
        streams = [keys.chunks(self.id), keys.events(self.id)] + ([keys.tokens(self.id)] if tokens else [])
        cursors = {key: "0-0" for key in streams}
        deadline_ns = self.request.submitted_ns + int((settings.session_timeout_s + TERMINAL_GRACE_S) * 1e9)
        executor = Watch(self.request.submitted_ns, grace_s=math.inf)  # queued is not lost: only a lapsed lease is
        check_every_ns, checked_ns = int(settings.lease_s / RENEWALS_PER_PERIOD * 1e9), 0

        def read(block_ms: int | None) -> Iterator[Message]:
            for key, entry_id, message in decode_entries(redis.xread(cursors, count=512, block=block_ms)):
                cursors[key] = entry_id
                if isinstance(message, Summary):
                    self.summary = message
                yield message
                if self.summary is not None:
                    return

        reached_ns, unreachable = now_ns(), None
        while self.summary is None:
            now = now_ns()
            if now >= deadline_ns:
                self.summary = self._terminal(SessionStatus.TIMEOUT, "no terminal event from the executor in time")
            elif now - reached_ns > REDIS_GIVE_UP_LEASES * settings.lease_s * 1e9:
                self.summary = self._terminal(SessionStatus.FAILED, f"Redis unreachable for "
                                              f"{REDIS_GIVE_UP_LEASES * settings.lease_s} s ({unreachable})")
            if self.summary is not None:
                yield self.summary
                return
            try:
                if now - checked_ns >= check_every_ns:
                    checked_ns = now
                    if executor.lost(bool(redis.exists(keys.lease(self.id, "executor"))), now):
                        yield from read(None)  # the executor's summary precedes its lease's release
                        if self.summary is None:
                            self.summary = self._end_abandoned()
                            yield self.summary
                        return
                yield from read(min((deadline_ns - now) // 1_000_000, check_every_ns // 1_000_000, MAX_BLOCK_MS) or 1)
                reached_ns = now_ns()
            except RedisError as exc:  # Redis away or restarting: retry, and give up only after a while
                unreachable = f"{type(exc).__name__}: {exc}"
                time.sleep(min(REDIS_RETRY_S, settings.lease_s))

    def _terminal(self, status: SessionStatus, detail: str) -> Summary:
        return Summary(status=status, gate=self.request.gate, submitted_ns=self.request.submitted_ns,
                       finished_ns=now_ns(), stdout="", detail=detail)

    def _end_abandoned(self) -> Summary:
        """The executor died mid-session: stop the model, and record the end where every reader sees it."""
        settings = self._client.settings
        summary = self._terminal(SessionStatus.FAILED, f"the executor stopped renewing its lease for "
                                 f"{settings.lease_s} s (killed or lost) before the session ended")
        return end_abandoned(self._client.redis, self._client.keys, self.id, summary, "client", settings.key_ttl_s)

    def result(self) -> Summary:
        """Wait for the end of the session."""
        if self.summary is None:
            for _ in self.events(tokens=False):
                pass
        assert self.summary is not None
        return self.summary

    def cancel(self, reason: str = "cancelled by client") -> None:
        publish(self._client.redis, self._client.keys.cancel(self.id), Cancel(reason, "client", now_ns()),
                self._client.settings.key_ttl_s)


class Client:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.keys = Keys(self.settings.namespace)
        self.redis = connect(self.settings)
        self._queue = Queue(self.keys.executor_queue, connection=connect(self.settings, decode=False))

    def submit(
        self,
        *,
        messages: list[dict[str, str]] | None = None,
        prompt: str | None = None,
        model: str | None = None,
        gate: Gate | str = Gate.EAGER,
        max_tokens: int | None = None,
        temperature: float | None = None,
        batch_chunks: int | None = None,
        batch_wait_ms: int | None = None,
    ) -> Session:
        """Start a session; raises ProtocolError (a ValueError) for a malformed request, and Overloaded when
        `EAGER_MAX_QUEUED` sessions already wait for an executor, before anything is sent.
        `batch_chunks` and `batch_wait_ms` tune the `batch` gate for this session (default: the executor's settings)."""
        request = SessionRequest(
            session_id=uuid.uuid4().hex, model=model or self.settings.model, submitted_ns=now_ns(), gate=Gate(gate),
            messages=messages, prompt=prompt, max_tokens=max_tokens, temperature=temperature,
            batch_chunks=batch_chunks, batch_wait_ms=batch_wait_ms,
        )
        fields = encode(request)  # refuses an oversized request before anything is enqueued
        # checked, then enqueued: clients submitting at the same instant may pass the limit by a few
        if self.settings.max_queued > 0 and (queued := self._queue.count) >= self.settings.max_queued:
            raise Overloaded(queued, self.settings.max_queued)
        self._queue.enqueue(
            "executor_pool.session.run_session", request.session_id, request.gate.value, request.submitted_ns,
            request.batch_chunks, request.batch_wait_ms,
            job_id=self.keys.executor_job_id(request.session_id),
            job_timeout=int(self.settings.session_timeout_s + 60),
            result_ttl=self.settings.key_ttl_s, failure_ttl=self.settings.key_ttl_s, ttl=self.settings.key_ttl_s,
        )
        self.redis.xadd(self.keys.requests, fields, maxlen=100_000, approximate=True)
        return Session(self, request)

    def close(self) -> None:
        self.redis.close()
        self._queue.connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
