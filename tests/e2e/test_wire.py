"""Hostile or broken requests written straight onto the request stream (not through our client), against
the Procfile stack: each session ends with a clear status, no request is retried forever, and the
stages survive to serve the next session."""

from __future__ import annotations

import dataclasses
import json

import pytest

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.connection import connect
from eager.common.protocol import (
    DETECTOR_GROUP,
    MAX_BODY_CHARS,
    PRODUCER_GROUP,
    Keys,
    ProtocolError,
    SessionRequest,
    SessionStatus,
)
from eager.client import Client, Session
from eager.replay import SpeedProfile
from tests.helpers import answer_of, collect


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Short leases: a session whose request never arrives ends after three of them."""
    return dataclasses.replace(settings, lease_s=1.0)


def raw_session(client: Client, session_id: str, fields: dict) -> Session:
    """Enqueue the executor job as our client would, then publish `fields` as the request."""
    request = SessionRequest(session_id=session_id, model="quick", submitted_ns=now_ns(),
                             messages=[{"role": "user", "content": "x"}])
    client._queue.enqueue("eager.executor_pool.session.run_session", session_id, "eager", request.submitted_ns,
                          job_id=client.keys.executor_job_id(session_id))
    if fields:
        client.redis.xadd(client.keys.requests, fields)
    return Session(client, request)


def body(session_id: str, **changes: object) -> dict:
    data = {"session_id": session_id, "model": "quick", "submitted_ns": now_ns(),
            "messages": [{"role": "user", "content": "x"}], **changes}
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.slow
def test_broken_requests_end_clearly_are_not_retried_and_leave_the_stages_serving(replay_stack):
    settings, _ = replay_stack({"quick": answer_of("print(6 * 7)\n")}, SpeedProfile(ttft_s=0.02, tokens_per_s=500.0))
    keys = Keys(settings.namespace)
    cases = {
        "wire-version": ({"v": "999", "kind": "request", "data": json.dumps(body("wire-version"))}, "schema version"),
        "wire-missing": ({"v": "1", "kind": "request", "data": json.dumps(body("wire-missing", model=None))},
                         "model"),
        "wire-not-json": ({"v": "1", "kind": "request", "data": '{"session_id": "wire-not-json", "model": '},
                          None),  # no session id can be read back: nothing to end but the executor's own wait
        "wire-huge": ({"v": "1", "kind": "request", "data": json.dumps(body(
            "wire-huge", messages=[{"role": "user", "content": "y" * MAX_BODY_CHARS}]))}, "over the limit"),
    }
    with Client(settings) as client:
        for session_id, (fields, detail) in cases.items():
            if detail is None:
                continue
            summary = raw_session(client, session_id, fields).result()
            assert summary.status is SessionStatus.REJECTED, (session_id, summary)
            assert detail in summary.detail, (session_id, summary.detail)

        # bytes that are not UTF-8 inside a request: read as replacement characters, and the session runs
        garbled = json.dumps(body("wire-bytes")).encode().replace(b'"x"', b'"\xff\xfe"')
        summary = raw_session(client, "wire-bytes", {b"v": b"1", b"kind": b"request", b"data": garbled}).result()
        assert summary.status is SessionStatus.OK and summary.stdout == "42\n"

        # a job whose request never came (lost, or unreadable down to its session id): ended, not waited for
        summary = raw_session(client, "wire-lost", {}).result()
        assert summary.status is SessionStatus.FAILED and "no detector held the session" in summary.detail

        # an unreadable request without a readable session id is acknowledged and dropped, not retried
        client.redis.xadd(keys.requests, cases["wire-not-json"][0])
        client.redis.xadd(keys.requests, {b"v": b"\xff", b"kind": b"\xfe\xff", b"data": b"\x80"})

        with pytest.raises(ProtocolError, match="over the limit"):  # our own client refuses before sending
            client.submit(messages=[{"role": "user", "content": "y" * MAX_BODY_CHARS}], model="quick")

        _, after = collect(client.submit(messages=[{"role": "user", "content": "go"}], model="quick"))
        assert after.status is SessionStatus.OK and after.stdout == "42\n"
        redis = connect(settings)
        for group in (PRODUCER_GROUP, DETECTOR_GROUP):
            assert redis.xpending(keys.requests, group)["pending"] == 0, group
    for name, process in replay_stack.stack.processes.items():
        assert process.poll() is None, f"{name} died:\n{replay_stack.stack.log(name)}"
