"""The wire protocol: keys carry the session's hash tag; every message round-trips; bad input is refused."""

import json

import pytest

from common import protocol as p


def test_every_session_key_shares_one_hash_tag():
    keys = p.Keys("ns")
    tags = {key[key.index("{"): key.index("}") + 1] for key in keys.session_keys("abc")}
    assert tags == {"{abc}"}
    assert keys.tokens("abc") == "ns:{abc}:tokens"
    assert {key[key.index("{"): key.index("}") + 1] for key in keys.conversation_keys("c1")} == {"{c1}"}
    assert keys.turns("c1") == "ns:{c1}:turns" and keys.conversation_lease("c1", "client") == "ns:{c1}:lease:client"
    with pytest.raises(p.ProtocolError):
        keys.conversation_lease("c1", "producer")


@pytest.mark.parametrize("bad", ["", "a b", "x}y", "{x}", "a" * 65, "é"])
def test_session_ids_that_would_break_keys_are_refused(bad):
    with pytest.raises(p.ProtocolError):
        p.Keys().tokens(bad)


MESSAGES = [
    p.SessionRequest(session_id="s1", model="m", submitted_ns=1, messages=[{"role": "user", "content": "hi"}]),
    p.SessionRequest(session_id="s1", model="m", submitted_ns=1, prompt="def f():", gate="serial", stop=["```\n"]),
    p.TurnRequest("s2", "batch", 3, batch_chunks=2),
    p.TurnRequest("s3", "eager", 4, timeout_s=2.5, execute=False),
    p.ConversationEnd("closed by the client", 4),
    p.SessionStarted("host", 42, p.Gate.EAGER, 5, warm=True, isolation="netns+uid", turn=2, kept_state=True),
    p.Delta("tëxt\n", 5),
    p.GenerationEnd(p.FinishReason.CANCELLED, 9, 3, first_token_ns=4, cancel_latency_s=0.002),
    p.ChunkReady(0, 1, 2, "x = 1\n", 7, 8, 9),
    p.CodeInvalid(4, "invalid syntax", 3),
    p.DetectionEnd(p.CodeStatus.COMPLETE, 2, p.GenerationEnd(p.FinishReason.STOP, 9, 3), 10),
    p.Cancel("error", "executor", 11),
    p.Output(0, "stdout", "hello\n", 12),
    p.ExecutionError("ZeroDivisionError", "division by zero", 3, "Traceback...", 13),
    p.Summary(p.SessionStatus.OK, p.Gate.EAGER, 1, 20, "out", execution_end_ns=18, generation_end_ns=15),
    p.Summary(p.SessionStatus.ERROR, p.Gate.EAGER, 1, 20, "", turn=3, interpreter_kept=True),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.kind)
def test_messages_round_trip(message):
    assert p.decode(p.encode(message)) == message


def test_unknown_versions_kinds_and_bodies_are_refused():
    fields = p.encode(p.Delta("x", 1))
    with pytest.raises(p.ProtocolError, match="version"):
        p.decode({**fields, "v": "99"})
    with pytest.raises(p.ProtocolError, match="kind"):
        p.decode({**fields, "kind": "nope"})
    with pytest.raises(p.ProtocolError):
        p.decode({**fields, "data": "{not json"})
    with pytest.raises(p.ProtocolError):
        p.decode({**fields, "data": json.dumps({"text": "x"})})  # at_ns missing


@pytest.mark.parametrize("kwargs", [
    {"messages": None, "prompt": None},
    {"messages": [{"role": "user", "content": "a"}], "prompt": "b"},
    {"messages": []},
    {"messages": [{"content": "no role"}]},
    {"messages": [{"role": "user", "content": "a"}], "gate": "sometimes"},
    {"messages": [{"role": "user", "content": "a"}], "stop": "```"},
    {"messages": [{"role": "user", "content": "a"}], "stop": [""]},
    {"messages": [{"role": "user", "content": "a"}], "timeout_s": 0},
    {"messages": [{"role": "user", "content": "a"}], "timeout_s": True},
    {"messages": [{"role": "user", "content": "a"}], "timeout_s": float("inf")},
])
def test_malformed_requests_are_refused_before_sending(kwargs):
    with pytest.raises(ValueError):
        p.SessionRequest(session_id="s", model="m", submitted_ns=1, **kwargs)


def test_summary_latencies_are_derived_from_timestamps():
    s = p.Summary(p.SessionStatus.OK, p.Gate.EAGER, submitted_ns=0, finished_ns=9_000_000_000, stdout="",
                  first_token_ns=300_000_000, generation_end_ns=5_000_000_000, execution_end_ns=5_250_000_000)
    assert (s.ttft_s, s.generation_s, s.e2e_s) == (0.3, 5.0, 5.25)
    assert s.non_overlapped_s == pytest.approx(0.25)
    assert p.Summary(p.SessionStatus.OK, p.Gate.EAGER, 0, 9, "", generation_end_ns=5, execution_end_ns=4).non_overlapped_s == 0
