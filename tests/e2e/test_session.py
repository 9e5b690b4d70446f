"""Whole sessions through the stages as separate OS processes (started from the Procfile) on the real Redis."""

from __future__ import annotations

import json
import time

import psutil
import pytest

from eager.common.clock import now_ns
from eager.common.connection import SOCKET_TIMEOUT_S, connect
from eager.common.protocol import (
    BatchFinished,
    ChunkReady,
    ExecutionError,
    Gate,
    Keys,
    Output,
    ProtocolError,
    SessionRequest,
    SessionSpec,
    SessionStarted,
    SessionStatus,
    Summary,
    decode,
    encode,
)
from eager.client import Client, Session
from eager.replay import SpeedProfile
from tests.helpers import answer_of, collect, run_with_python

SLOW_PROGRAM = '''import time


def work(n):
    time.sleep(0.3)
    return n * n


a = work(1)
print("a =", a)
b = work(2)
print("b =", b)
c = work(3)
print("c =", c)
print("total", a + b + c)
'''

TEN_STATEMENTS = "".join(
    f'value_{i} = {i} * 10  # statement {i} of ten, padded so that generation takes a while\n'
    if i != 3 else "value_3 = value_1 / (value_2 - 20)\n"
    for i in range(1, 11)
)

MIDDLE_SYNTAX_ERROR = 'print("before")\nx = (1 +\ny = 2\nprint("after")\n'

ANSWERS = {
    "slow": answer_of(SLOW_PROGRAM),
    "ten": answer_of(TEN_STATEMENTS),
    "prose": "I cannot write code for that, but here is an explanation in words only.\n",
    "syntax": answer_of(MIDDLE_SYNTAX_ERROR),
}


@pytest.fixture
def stack(replay_stack):
    return replay_stack(ANSWERS, SpeedProfile(ttft_s=0.2, tokens_per_s=60.0))


def run(settings, model: str, gate: Gate = Gate.EAGER):
    with Client(settings) as client:
        return collect(client.submit(messages=[{"role": "user", "content": "go"}], model=model, gate=gate))


def test_eager_prints_what_python_prints_overlaps_generation_and_beats_serial(stack, tmp_path):
    settings, _ = stack
    events, eager = run(settings, "slow", Gate.EAGER)
    _, serial = run(settings, "slow", Gate.SERIAL)

    expected = run_with_python(SLOW_PROGRAM, tmp_path).stdout
    assert eager.status is SessionStatus.OK, eager
    assert eager.stdout == expected == serial.stdout
    assert "".join(e.text for e in events if isinstance(e, Output) and e.stream == "stdout") == expected

    chunks = [e for e in events if isinstance(e, ChunkReady)]
    assert "".join(c.code for c in chunks) == SLOW_PROGRAM
    first_batch = next(e for e in events if isinstance(e, BatchFinished))
    assert first_batch.finished_ns < eager.generation_end_ns, "the first chunk ran while the model was still writing"
    assert eager.batches > 1 and serial.batches == 1
    assert eager.e2e_s < serial.e2e_s
    assert eager.non_overlapped_s < serial.non_overlapped_s


def test_an_error_in_the_third_of_ten_statements_stops_the_model(stack):
    settings, server = stack
    events, summary = run(settings, "ten")
    assert summary.status is SessionStatus.ERROR
    errors = [e for e in events if isinstance(e, ExecutionError)]
    assert len(errors) == 1
    assert (errors[0].type, errors[0].line) == ("ZeroDivisionError", 3)
    assert "value_3 = value_1 / (value_2 - 20)" in errors[0].traceback
    assert summary.error["line"] == 3
    assert summary.finish_reason == "cancelled"
    record = server.ended("ten")
    assert record["disconnected"] and record["tokens_sent"] < record["tokens_total"], record


@pytest.mark.parametrize("gate", list(Gate))
def test_a_syntax_error_mid_program_is_reported_at_its_line(stack, gate):
    settings, _ = stack
    events, summary = run(settings, "syntax", gate)
    assert summary.status is SessionStatus.SYNTAX_ERROR
    assert summary.error["type"] == "SyntaxError" and summary.error["line"] == 2
    assert "after" not in summary.stdout
    # The one honest difference: serial runs nothing; eager may have run the valid prefix
    # (batch too, if its wait ran out before the error was found).
    assert summary.stdout in {Gate.EAGER: {"before\n"}, Gate.SERIAL: {""}, Gate.BATCH: {"", "before\n"}}[gate]


def test_an_answer_without_code_ends_with_no_code(stack):
    settings, _ = stack
    _, summary = run(settings, "prose")
    assert summary.status is SessionStatus.NO_CODE
    assert summary.chunks == 0 and summary.finish_reason == "stop"


def test_a_malformed_request_is_refused_by_the_client_before_anything_is_sent(stack):
    settings, _ = stack
    with Client(settings) as client, pytest.raises(ProtocolError):
        client.submit(messages=[], model="slow")


def test_a_malformed_request_on_the_wire_ends_its_session_as_rejected(stack):
    """A request written by something other than our client, with a schema version nobody speaks."""
    settings, _ = stack
    keys = Keys(settings.namespace)
    request = SessionRequest(session_id="wire-bad-1", model="slow", submitted_ns=now_ns(),
                             messages=[{"role": "user", "content": "x"}])
    with Client(settings) as client:
        client._queue.enqueue("eager.executor_pool.session.run_session", request.session_id, "eager", request.submitted_ns,
                              job_id=keys.executor_job_id(request.session_id))
        fields = {**encode(request), "v": "999"}
        connect(settings).xadd(keys.requests, fields)
        summary = Session(client, request).result()
    assert summary.status is SessionStatus.REJECTED
    assert "schema version" in summary.detail


def test_a_client_cancel_closes_the_model_stream_while_no_token_is_arriving(replay_stack):
    settings, server = replay_stack({"late": answer_of("print(1)\n")}, SpeedProfile(ttft_s=30.0, tokens_per_s=50.0))
    with Client(settings) as client:
        session = client.submit(messages=[{"role": "user", "content": "x"}], model="late")
        started = next(e for e in session.events(tokens=False))  # the executor is up and waiting
        assert started.kind == "started"
        session.cancel()
        summary = session.result()
    assert summary.status is SessionStatus.CANCELLED
    assert summary.e2e_s < 10
    tokens = connect(settings).xrange(Keys(settings.namespace).tokens(session.id))
    end = json.loads(tokens[-1][1]["data"])
    assert end["finish_reason"] == "cancelled" and end["tokens"] == 0
    assert end["cancel_latency_s"] < 1.0


@pytest.mark.slow
def test_a_model_slower_to_first_token_than_the_redis_socket_timeout_still_completes(replay_stack):
    """Every blocking read must wait less than the socket timeout, or a slow model kills the session."""
    ttft_s = SOCKET_TIMEOUT_S + 1.0
    settings, _ = replay_stack({"slow-start": answer_of('print("late but fine")\n')},
                               SpeedProfile(ttft_s=ttft_s, tokens_per_s=60.0))
    _, summary = run(settings, "slow-start")
    assert summary.status is SessionStatus.OK, summary
    assert summary.stdout == "late but fine\n"
    assert summary.ttft_s >= ttft_s


def test_sessions_get_warm_interpreters_that_do_not_outlive_them(stack):
    """The worker hands each session a pre-started interpreter and kills it when the session is over."""
    settings, _ = stack
    pids = []
    for _ in range(2):
        events, summary = run(settings, "slow")
        assert summary.status is SessionStatus.OK
        started = next(e for e in events if isinstance(e, SessionStarted))
        assert started.warm
        pids.append(started.interpreter_pid)
    assert pids[0] != pids[1]
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.slow
def test_a_session_s_own_timeout_applies_but_never_past_the_deployment_s(replay_stack):
    sleeper = answer_of("import time\nprint('sleeping', flush=True)\ntime.sleep(60)\n")
    settings, _ = replay_stack({"sleeper": sleeper}, SpeedProfile(ttft_s=0.05, tokens_per_s=400.0),
                               session_timeout_s=4.0)
    with Client(settings) as client:
        own = client.submit(messages=[{"role": "user", "content": "go"}], model="sleeper", timeout_s=1.0).result()
        clamped = client.submit(messages=[{"role": "user", "content": "go"}], model="sleeper", timeout_s=100).result()
        with pytest.raises(ProtocolError, match="timeout_s"):
            client.submit(messages=[{"role": "user", "content": "go"}], model="sleeper", timeout_s=0)
    assert own.status is SessionStatus.TIMEOUT and own.stdout == "sleeping\n"
    assert "1.0" in own.detail and own.e2e_s < 4.0  # its own second, not the deployment's four
    assert clamped.status is SessionStatus.TIMEOUT and "4.0" in clamped.detail


@pytest.mark.slow
def test_a_reader_that_falls_behind_still_gets_the_summary_the_executor_published(replay_stack):
    """Past the executor's end (its lease released), a late reader must read all that is there before it
    presumes the executor lost: more than one read's worth of tokens may stand before the summary."""
    answer = answer_of("print(1)\n", after="\n" + "word " * 3000 + "\n")
    settings, _ = replay_stack({"m": answer}, SpeedProfile(ttft_s=0.05, tokens_per_s=1500.0), lease_s=1.0)
    with Client(settings) as client:
        session = client.submit(messages=[{"role": "user", "content": "go"}], model="m")
        events = session.events()
        first = next(events)
        time.sleep(5)  # the scenario, not a wait: a consumer that pauses (a slow UI) while the session ends
        rest = list(events)
    assert first is not None and rest[-1].status is SessionStatus.OK
    assert sum(isinstance(event, Summary) for event in rest) == 1


def test_the_executor_job_carries_one_versioned_session_spec(settings):
    """The job's one argument is the protocol's SessionSpec, with the session's own limits in it."""
    from rq.job import Job

    with Client(settings) as client:
        timed = client.submit(messages=[{"role": "user", "content": "go"}], timeout_s=5, batch_chunks=3)
        job = Job.fetch(Keys(settings.namespace).executor_job_id(timed.id), connection=connect(settings, decode=False))
        assert job.kwargs == {} and len(job.args) == 1
        spec = decode(job.args[0])
        assert isinstance(spec, SessionSpec)
        assert (spec.first.session_id, spec.first.timeout_s, spec.first.batch_chunks, spec.max_turns) == (timed.id, 5, 3, 1)