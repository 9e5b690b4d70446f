"""The wire protocol: keys carry the session's hash tag; every message round-trips; bad input is refused."""

import base64
import dataclasses
import json

import pytest

from eager.common import protocol as p
from eager.common.protocol import Cancel, Gate, ProtocolError, SessionRequest, SessionSpec, TurnRequest, decode, encode
from eager.executor_pool.session import JOB_MARGIN_S, job_timeout_s, spec_of
from eager.common.config import Settings


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


def test_a_long_text_is_clipped_head_and_tail_around_a_marker():
    assert p.clip("short") == "short"
    text = "a" * 30_000 + "z" * 30_000
    clipped = p.clip(text)
    assert clipped == "a" * 10_000 + "\n[eager: 40000 characters cut]\n" + "z" * 10_000


@pytest.mark.parametrize("stdout", ["x" * p.MAX_OUTPUT_BYTES, "\x01" * p.MAX_OUTPUT_BYTES, "🙂é" * 1_000_000],
                         ids=["plain", "control characters", "non-ascii"])
def test_a_summary_is_sent_whole_if_it_fits_else_with_as_much_stdout_as_fits(stdout):
    error = {"type": "Exception", "message": p.clip("\x00" * 4_000_000), "line": 1,
             "traceback": p.clip("\x00" * 4_000_000)}
    summary = p.Summary(p.SessionStatus.ERROR, p.Gate.EAGER, 1, 2, stdout, error=error, detail="why")
    sent = p.decode(p.encode(p.fitting(summary)))  # encodes: under the body limit
    assert sent.status is p.SessionStatus.ERROR and sent.error == error
    if len(json.dumps(stdout)) < p.MAX_BODY_CHARS - 500_000:
        assert sent == summary
        return
    kept, marker = sent.stdout.split("\n[eager: stdout cut here")
    assert stdout.startswith(kept) and len(kept) > 100_000
    assert marker == " to fit the summary; the output events carry all of it]\n"
    assert sent.detail == (f"why; the summary's stdout is cut to fit one message of {p.MAX_BODY_CHARS} characters; "
                           "the output events carry all of it")
    one_more = dataclasses.replace(sent, stdout=stdout[:len(kept) + 1] + "\n[eager: stdout cut here" + marker)
    with pytest.raises(p.ProtocolError, match="over the limit"):  # as much as fits: one more character does not
        p.encode(one_more)


def test_the_output_cap_is_at_most_what_one_summary_carries():
    assert Settings().sandbox_output_bytes == p.MAX_OUTPUT_BYTES
    assert Settings.from_env({"EAGER_SANDBOX_OUTPUT_BYTES": "1000"}).sandbox_output_bytes == 1000
    with pytest.raises(ValueError, match="EAGER_SANDBOX_OUTPUT_BYTES=8000000: expected 0 to 3000000"):
        Settings.from_env({"EAGER_SANDBOX_OUTPUT_BYTES": "8000000"})


def test_the_largest_output_figure_and_error_events_fit_one_message():
    """The executor publishes output as it reads it, at most READ_SIZE bytes at a time, a figure of at most
    MAX_FIGURE_BYTES, and cuts an error's texts: even escaped six-fold (control characters), none is over the
    body limit."""
    from eager.executor_pool._runner import MAX_FIGURE_BYTES
    from eager.executor_pool.interpreter import READ_SIZE, truncation_marker

    p.encode(p.Output(0, "stdout", "\x01" * READ_SIZE + truncation_marker(p.MAX_OUTPUT_BYTES), 1))
    p.encode(p.Figure(0, 1, base64.b64encode(b"\xff" * MAX_FIGURE_BYTES).decode("ascii"), 1))
    p.encode(p.ExecutionError("E" * 100, p.clip("\x01" * 5_000_000), 1, p.clip("\x01" * 5_000_000), 1))


def test_an_executor_job_reads_its_session_spec_or_an_older_clients_arguments() -> None:
    spec = SessionSpec(TurnRequest("s1", Gate.BATCH, 7, 2, None, 3.0), conversation="c1", setup="x = 1",
                       max_turns=4)
    assert spec_of((encode(spec),), {}) == spec
    older = spec_of(("s1", "eager", 7, None, None), {"conversation": "c1", "max_turns": 4, "timeout_s": 2.0})
    assert (older.conversation, older.max_turns, older.first) == ("c1", 4, TurnRequest("s1", Gate.EAGER, 7,
                                                                                       timeout_s=2.0))


@pytest.mark.parametrize("args, kwargs", [
    ((), {}),
    (({"v": "999", "kind": "session_spec", "data": "{}"},), {}),
    ((encode(Cancel("r", "client", 1)),), {}),
    (("s1", "eager", 7), {"shiny_new_option": True}),
    (("s1", "eager", 7, None, None, "extra"), {}),
    (("bad id!", "eager", 7), {}),
    (({"v": "1", "kind": "session_spec", "data": '{"first": "s1"}'},), {}),
])
def test_an_unreadable_executor_job_is_refused_clearly(args, kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError):
        spec_of(args, kwargs)


S = 1_000_000_000


def test_the_executor_sizes_its_job_s_timeout_from_the_spec_and_its_own_caps() -> None:
    caps = dataclasses.replace(Settings(), session_timeout_s=100.0, turn_idle_s=20.0)
    lone = SessionSpec(TurnRequest("s1", Gate.EAGER, 10 * S, deadline_ns=40 * S))
    assert job_timeout_s(lone, caps, now=10 * S) == 30 + JOB_MARGIN_S  # the stamp, not the cap
    greedy = SessionSpec(TurnRequest("s1", Gate.EAGER, 10 * S, deadline_ns=10_000 * S))
    assert job_timeout_s(greedy, caps, now=10 * S) == 100 + JOB_MARGIN_S  # clamped to this executor's cap
    conversation = SessionSpec(TurnRequest("s1", Gate.EAGER, 10 * S), conversation="c1", max_turns=3)
    assert job_timeout_s(conversation, caps, now=10 * S) == 100 + 2 * (20 + 100) + JOB_MARGIN_S


def test_a_request_carries_one_deadline_stamped_at_submit_and_each_stage_clamps_it() -> None:
    request = SessionRequest(session_id="s", model="m", submitted_ns=10 * S, prompt="p", timeout_s=5.0).stamped(300.0)
    assert request.deadline_ns == 15 * S
    assert request.deadline_within(300.0) == 15 * S  # a stage with a larger cap honours the stamp
    assert request.deadline_within(2.0) == 12 * S  # one with a smaller cap clamps it
    assert request.turn().deadline_ns == 15 * S
    assert request.allowance_s(2.0) == 2.0
    later = request.resubmitted(100 * S)
    assert (later.submitted_ns, later.deadline_ns) == (100 * S, 105 * S)


def test_a_request_without_a_stamp_decodes_and_falls_back_to_its_timeout_or_the_cap() -> None:
    old = SessionRequest(session_id="s", model="m", submitted_ns=10 * S, prompt="p", timeout_s=5.0)
    fields = encode(old)
    body = json.loads(fields["data"])
    del body["deadline_ns"]  # as a client from before the stamp wrote it
    decoded = decode({**fields, "data": json.dumps(body)})
    assert isinstance(decoded, SessionRequest) and decoded.deadline_ns is None
    assert decoded.deadline_within(300.0) == 15 * S and decoded.deadline_within(2.0) == 12 * S
    untimed = SessionRequest(session_id="s", model="m", submitted_ns=10 * S, prompt="p")
    assert untimed.deadline_within(300.0) == 310 * S


@pytest.mark.parametrize("deadline_ns", [10 * S, 9 * S, 11.5 * S, "soon"])
def test_a_deadline_is_a_time_after_the_submission(deadline_ns) -> None:
    with pytest.raises(ProtocolError, match="deadline_ns"):
        TurnRequest("s", Gate.EAGER, 10 * S, deadline_ns=deadline_ns)
