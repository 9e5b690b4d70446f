"""The detector process: follow each session's token stream, publish chunks the moment they are final.

All the judgement is in the pure core (`detector.core.Detector`); this shell only moves
deltas in and chunks out, and relays how generation ended so the executor learns it from
the one stream it reads.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import redis.asyncio

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.connection import MAX_BLOCK_MS, connect_async
from eager.common.consumer import serve_requests
from eager.common.lease import UPSTREAM_GRACE_LEASES, Watch, lapsed_async
from eager.common.metrics import serve_metrics
from eager.common.protocol import (
    DETECTOR_GROUP,
    ChunkReady,
    CodeInvalid,
    CodeStatus,
    Delta,
    DetectionEnd,
    FinishReason,
    GenerationEnd,
    Keys,
    Message,
    SessionRequest,
    decode,
)
from eager.common.streams import decode_entries, publish_async
from eager.detector import _events as events
from eager.detector import metrics
from eager.detector.core import NEED_DATA, Detector


class SessionDetection:
    """Turns one session's deltas into chunk-stream messages; no I/O, so the shell stays thin."""

    def __init__(self, raw: bool) -> None:
        self.detector = Detector(raw=raw)
        self.received_chars = 0
        self.chunks = 0
        self.invalid = False

    def receive(self, message: Message) -> list[Message]:
        if isinstance(message, Delta):
            self.detector.receive_data(message.text)
            self.received_chars += len(message.text)
            return self._drain(message.at_ns)
        if isinstance(message, GenerationEnd):
            out: list[Message] = []
            if message.finish_reason in (FinishReason.STOP, FinishReason.LENGTH):
                self.detector.receive_eof()
                out = self._drain(message.at_ns)
            return [*out, DetectionEnd(self._status(message), self.chunks, message, now_ns())]
        raise ValueError(f"unexpected {message.kind} on a token stream")

    def _status(self, end: GenerationEnd) -> CodeStatus:
        if self.invalid:
            return CodeStatus.INVALID
        if end.finish_reason is FinishReason.ERROR:
            return CodeStatus.GENERATION_FAILED
        if end.finish_reason is FinishReason.CANCELLED:
            return CodeStatus.CANCELLED
        return CodeStatus.COMPLETE if self.chunks else CodeStatus.NO_CODE

    def _drain(self, delta_ns: int) -> list[Message]:
        out: list[Message] = []
        while (event := self.detector.next_event()) is not NEED_DATA:
            if isinstance(event, events.Chunk):
                self.chunks += 1
                out.append(ChunkReady(event.seq, event.start_line, event.end_line, event.code, event.emitted_at,
                                      delta_ns, now_ns()))
            elif isinstance(event, events.CodeInvalid):
                self.invalid = True
                out.append(CodeInvalid(event.line, event.message, now_ns(), event.error_type))
        return out


@dataclass
class Published:
    """What the session's chunk stream already holds: after a takeover, detection starts over from the
    first token (the detector is deterministic) and publishes only what its predecessor did not."""

    chunks: set[int]
    invalid: bool
    ended: bool

    def fresh(self, messages: list[Message]) -> list[Message]:
        return [m for m in messages if not (isinstance(m, ChunkReady) and m.seq in self.chunks
                                            or isinstance(m, CodeInvalid) and self.invalid)]


async def published(client: redis.asyncio.Redis, keys: Keys, session_id: str) -> Published:
    messages = [decode(fields) for _, fields in await client.xrange(keys.chunks(session_id))]
    return Published({m.seq for m in messages if isinstance(m, ChunkReady)},
                     any(isinstance(m, CodeInvalid) for m in messages),
                     any(isinstance(m, DetectionEnd) for m in messages))


async def follow(client: redis.asyncio.Redis, keys: Keys, settings: Settings, request: SessionRequest) -> None:
    session_id = request.session_id
    detection = SessionDetection(raw=request.raw)
    before = await published(client, keys, session_id)
    if before.ended:
        return
    cursor = "0-0"
    deadline_ns = request.deadline_within(settings.session_timeout_s)
    producer = Watch.upstream(request.submitted_ns, settings.lease_s)
    while True:
        remaining_ms = (deadline_ns - now_ns()) // 1_000_000
        block_ms = max(1, min(remaining_ms, MAX_BLOCK_MS))
        response = await client.xread({keys.tokens(session_id): cursor}, count=512, block=block_ms)
        if not response:
            why = await _why_silent(client, keys, settings, session_id, producer, remaining_ms)
            if why is None:
                continue
            # a producer publishes its end before it releases its lease: read once more before giving up
            response = await client.xread({keys.tokens(session_id): cursor}, count=512)
        if not response:
            end = GenerationEnd(finish_reason=FinishReason.ERROR, at_ns=now_ns(), tokens=0, error=why)
            out = before.fresh(detection.receive(end))
            await publish_async(client, keys.chunks(session_id), out, settings.key_ttl_s)
            metrics.observe_published(out, now_ns())
            return
        producer.confirm(now_ns())  # tokens: a producer took the session
        out: list[Message] = []
        finished = False
        for _, entry_id, message in decode_entries(response):
            cursor = entry_id
            started = time.perf_counter()
            out.extend(detection.receive(message))
            metrics.DELTA.observe(time.perf_counter() - started)
            finished = isinstance(message, GenerationEnd)
            if finished:
                break
        out = before.fresh(out)
        if out:
            await publish_async(client, keys.chunks(session_id), out, settings.key_ttl_s)
            metrics.observe_published(out, now_ns())
        if finished:
            return


async def _why_silent(client: redis.asyncio.Redis, keys: Keys, settings: Settings, session_id: str,
                      producer: Watch, remaining_ms: int) -> str | None:
    """Why no token will come any more, or None while one still may."""
    if remaining_ms <= MAX_BLOCK_MS:  # the producer owns the deadline: silent past it, it is gone
        return "no end of generation before the session deadline (producer lost?)"
    if not await lapsed_async(client, keys.lease(session_id, "producer"), producer, now_ns()):
        return None
    if producer.seen:
        return f"the producer stopped renewing its lease for {settings.lease_s} s (killed or lost) mid-generation"
    return f"no producer took the session within {UPSTREAM_GRACE_LEASES * settings.lease_s} s (none running?)"


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    keys = Keys(settings.namespace)
    client = connect_async(settings)

    async def handle(request: SessionRequest) -> None:
        await follow(client, keys, settings, request)

    async def reject(session_id: str, why: str) -> None:
        end = GenerationEnd(finish_reason=FinishReason.ERROR, at_ns=now_ns(), tokens=0, error=why)
        message = DetectionEnd(CodeStatus.REJECTED, 0, end, now_ns())
        await publish_async(client, keys.chunks(session_id), [message], settings.key_ttl_s)
        metrics.observe_published([message], now_ns())

    try:
        await serve_requests(settings, "detector", DETECTOR_GROUP, handle, reject, stop, resume=True)
    finally:
        await client.aclose()


def serve(settings: Settings) -> None:
    serve_metrics(settings)
    asyncio.run(run(settings))
