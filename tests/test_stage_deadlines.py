"""The producer and the detector honour a session's stamped deadline when it is shorter than their own cap, and
clamp it to their cap when it is longer (real Redis, a real replay model). The executor's clamp is the state
machine's (tests/executor/test_session_state.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.connection import connect_async
from eager.common.protocol import DetectionEnd, GenerationEnd, Keys, SessionRequest, decode
from eager.detector.worker import follow
from eager.producer.generation import Generation, model_client
from eager.replay import ReplayServer, SpeedProfile

SILENT_MODEL = SpeedProfile(ttft_s=30.0)  # its first token comes long after any deadline here


def stamped(deadline_s: float) -> SessionRequest:
    request = SessionRequest(session_id=uuid.uuid4().hex, model="m", submitted_ns=now_ns(),
                             messages=[{"role": "user", "content": "go"}])
    return request.stamped(deadline_s)


def generate(settings: Settings, request: SessionRequest) -> GenerationEnd:
    async def scenario() -> GenerationEnd:
        client, model = connect_async(settings), model_client(settings)
        try:
            return await Generation(client, model, Keys(settings.namespace), settings, request).run()
        finally:
            await model.close()
            await client.aclose()

    return asyncio.run(scenario())


@pytest.mark.parametrize(("stamp_s", "cap_s", "allowed_s"), [(0.5, 300.0, 0.5), (1000.0, 0.5, 0.5)])
def test_the_producer_ends_generation_at_the_stamped_deadline_within_its_cap(settings: Settings, stamp_s: float,
                                                                             cap_s: float, allowed_s: float) -> None:
    with ReplayServer({"m": "print(1)\n"}, SILENT_MODEL) as server:
        producer = dataclasses.replace(settings, model_base_url=server.base_url, session_timeout_s=cap_s)
        end = generate(producer, stamped(stamp_s))
    assert end.error == f"session exceeded {allowed_s} s during generation" and end.tokens == 0


@pytest.mark.parametrize(("stamp_s", "cap_s"), [(0.5, 300.0), (1000.0, 0.5)])
def test_the_detector_gives_up_at_the_stamped_deadline_within_its_cap(settings: Settings, stamp_s: float,
                                                                      cap_s: float) -> None:
    """No producer ever takes the session: past the deadline the detector ends detection for the deadline, long
    before it would presume the producer missing (three 1 s leases), which it would if it kept a later deadline."""
    detector = dataclasses.replace(settings, session_timeout_s=cap_s, lease_s=1.0)
    request, keys = stamped(stamp_s), Keys(settings.namespace)

    async def scenario() -> list[tuple[str, dict[str, str]]]:
        client = connect_async(detector)
        try:
            await follow(client, keys, detector, request)
            return await client.xrange(keys.chunks(request.session_id))
        finally:
            await client.aclose()

    (entry,) = asyncio.run(scenario())
    end = decode(entry[1])
    assert isinstance(end, DetectionEnd)
    assert end.generation.error == "no end of generation before the session deadline (producer lost?)"
