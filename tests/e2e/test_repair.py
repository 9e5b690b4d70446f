"""The repair loop and conversations against the Procfile stack and the replay model, with scripted turns.

The replay model answers a chat with k assistant messages with its k-th scripted answer, so a test can
write the failing first answer and the fixing second one, and read what the model was told in between.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from eager.common.connection import connect
from eager.common.protocol import Keys, Output, SessionStatus
from eager.client import Client, ConversationClosed
from eager.replay import SpeedProfile
from tests.conftest import ROOT, stage_env
from tests.helpers import answer_of, collect, eventually

FAST = SpeedProfile(ttft_s=0.05, tokens_per_s=400.0)
# The first answer fails on its third line, long before the model is done writing: eager stops it there.
FAILING = answer_of("data = [3, 1, 2]\nprint('sorted', sorted(data))\ntotal = sum(dat)\n"
                    + "".join(f"print('step {i}', total + {i})\n" for i in range(40)))
FIXING = answer_of("total = sum(data)\nprint('total', total)\n")  # `data` is only defined by the first turn
TASK = [{"role": "user", "content": "Sort the data and print its total."}]


def released(redis, keys: Keys, conversation_id: str, within_s: float, why: str) -> None:  # type: ignore[no-untyped-def]
    """Wait, to a deadline, for the executor to let the conversation go: its lease key disappears."""
    eventually(lambda: not redis.exists(keys.conversation_lease(conversation_id, "executor")), why, within_s)


def _requests_for(server, model: str) -> list[dict]:
    records = server.replays().values()
    return sorted((r for r in records if r["model"] == model), key=lambda r: int(r["id"].rsplit("-", 1)[1]))


@pytest.mark.slow
@pytest.mark.parametrize("gate", ["eager", "serial"])
def test_a_scripted_second_answer_repairs_the_first_in_the_same_interpreter(replay_stack, gate):
    settings, server = replay_stack({"fixer": [FAILING, FIXING]}, FAST)
    with Client(settings) as client:
        report = client.solve(messages=TASK, model="fixer", gate=gate, repairs=2)

    assert report.succeeded and report.stopped_because == "succeeded"
    first, second = report.turns
    assert first.status == "error" and first.error.startswith("NameError at line 3")
    assert second.status == "ok" and second.kept_state  # `data` from turn 1 was still there
    assert report.stdout == "total 6\n"
    assert report.wall_s >= first.e2e_s + second.e2e_s * 0.9

    requests = _requests_for(server, "fixer")
    assert len(requests) == 2
    if gate == "eager":  # early error interruption: the first answer was cut at the error
        assert first.cut_early and requests[0]["tokens_sent"] < requests[0]["tokens_total"]
    else:
        assert not first.cut_early and requests[0]["tokens_sent"] == requests[0]["tokens_total"]
    told = requests[1]["messages"]
    assert [m["role"] for m in told] == ["user", "assistant", "user"]
    assert told[1]["content"].startswith("Here is the program:")  # the (partial) answer went back
    feedback = told[2]["content"]
    assert "NameError at line 3: name 'dat' is not defined" in feedback
    assert "data = [3, 1, 2]\nprint('sorted', sorted(data))\ntotal = sum(dat)\n" in feedback
    assert "sorted [1, 2, 3]" in feedback and "still running" in feedback
    assert "step 0" not in feedback  # what never ran is not reported as run


@pytest.mark.slow
def test_the_loop_stops_at_its_turn_limit_and_on_failures_no_answer_can_fix(replay_stack):
    settings, server = replay_stack({"stubborn": [FAILING], "unknown-to-the-server": "unused"}, FAST)
    with Client(settings) as client:
        limited = client.solve(messages=TASK, model="stubborn", repairs=1)
        model_error = client.solve(messages=TASK, model="no-such-model", repairs=3)
    assert not limited.succeeded and limited.stopped_because == "turn limit"
    assert [t.status for t in limited.turns] == ["error", "error"]
    assert len(_requests_for(server, "stubborn")) == 2
    assert model_error.stopped_because == "not repairable: model_error" and len(model_error.turns) == 1


@pytest.mark.slow
def test_a_dead_interpreter_is_replaced_with_setup_rerun_and_the_model_is_told(replay_stack):
    crash = answer_of("x = 41\nimport os\nos._exit(3)\n")
    check = answer_of("print('x' in globals(), helper())\n")
    settings, server = replay_stack({"crasher": [crash, check]}, FAST)
    with Client(settings) as client:
        report = client.solve(messages=TASK, model="crasher", setup="def helper():\n    return 'helped'\n")
    assert [t.status for t in report.turns] == ["interpreter_died", "ok"]
    assert not report.turns[1].kept_state
    assert report.stdout == "False helped\n"  # x is gone; the setup ran again in the new interpreter
    assert "interpreter was restarted" in _requests_for(server, "crasher")[1]["messages"][2]["content"]


@pytest.mark.slow
def test_conversation_turns_share_names_and_a_closed_conversation_frees_its_executor(replay_stack):
    settings, _ = replay_stack({"steps": [answer_of("a = 20\n"), answer_of("print(a + 22)\n")]}, FAST)
    keys = Keys(settings.namespace)
    redis = connect(settings)
    with Client(settings) as client:
        with client.conversation(model="steps", max_turns=3) as conversation:
            _, first = collect(conversation.send(messages=TASK))
            _, second = collect(conversation.send(messages=[*TASK, {"role": "assistant", "content": "x"},
                                                                 {"role": "user", "content": "go on"}]))
            assert first.status is SessionStatus.OK and first.interpreter_kept and first.turn == 1
            assert second.stdout == "42\n" and second.turn == 2
            assert redis.exists(keys.conversation_lease(conversation.id, "executor"))
        with pytest.raises(ConversationClosed):
            conversation.send(messages=TASK)
        # closed: the executor lets the interpreter go and takes the next session at once
        _, lone = collect(client.submit(messages=TASK, model="steps"))
        assert lone.status is SessionStatus.OK
        assert not redis.exists(keys.conversation_lease(conversation.id, "executor"))


@pytest.mark.slow
def test_a_turn_that_only_talks_runs_none_of_its_code(replay_stack):
    answers = [answer_of("a = 5\n"), answer_of("a = 99\nprint('talk ran')\n"), answer_of("print(a)\n")]
    settings, _ = replay_stack({"m": answers}, FAST)
    history = list(TASK)
    with Client(settings) as client, client.conversation(model="m") as conversation:
        summaries = []
        for execute in (True, False, True):
            events, summary = collect(conversation.send(messages=history, execute=execute))
            summaries.append((events, summary))
            history = [*history, {"role": "assistant", "content": "."}, {"role": "user", "content": "next"}]
    (_, first), (talk_events, talk), (_, third) = summaries
    assert first.status is SessionStatus.OK
    assert talk.status is SessionStatus.OK and talk.batches == 0 and talk.chunks == 2
    assert not any(isinstance(e, Output) for e in talk_events)
    assert third.stdout == "5\n"  # the talk's `a = 99` never ran


@pytest.mark.slow
def test_a_failing_setup_ends_the_turn_failed_and_no_turn_runs_with_half_of_it(replay_stack):
    settings, _ = replay_stack({"steps": answer_of("print('x' in globals())\n")}, FAST)
    with Client(settings) as client, client.conversation(model="steps", setup="x = 1\n1 / 0\n") as conversation:
        _, first = collect(conversation.send(messages=TASK))
        _, second = collect(conversation.send(messages=TASK))
    assert first.status is SessionStatus.FAILED and not first.interpreter_kept
    assert "setup code raised ZeroDivisionError at line 2" in first.detail
    assert second.status is SessionStatus.FAILED and "setup code raised" in second.detail  # ran again, failed again


@pytest.mark.slow
def test_a_turn_sent_before_the_previous_one_was_read_gets_its_own_time(replay_stack):
    """send() waits for the previous turn; the new turn's clock starts after that wait, not before it."""
    slow, quick = answer_of("import time\ntime.sleep(3)\nprint('one')\n"), answer_of("print('two')\n")
    settings, _ = replay_stack({"m": [slow, quick]}, FAST, lease_s=1.0)
    with Client(settings) as client, client.conversation(model="m", timeout_s=4) as conversation:
        first = conversation.send(messages=TASK)
        second = conversation.send(messages=[*TASK, {"role": "assistant", "content": "."},
                                             {"role": "user", "content": "more"}])
        assert first.result().status is SessionStatus.OK
        assert second.result().status is SessionStatus.OK and second.result().stdout == "two\n"


@pytest.mark.slow
def test_closing_a_conversation_cancels_the_turn_it_is_running(replay_stack):
    settings, _ = replay_stack({"m": answer_of("print('started', flush=True)\n"
                                               + "".join(f"print({i})\n" for i in range(400)))},
                               SpeedProfile(ttft_s=0.05, tokens_per_s=100.0))
    keys, redis = Keys(settings.namespace), connect(settings)
    with Client(settings) as client:
        conversation = client.conversation(model="m")
        turn = conversation.send(messages=TASK)
        next(e for e in turn.events() if isinstance(e, Output))  # it runs while the model writes
        conversation.close()
        summary = turn.result()
    assert summary.status is SessionStatus.CANCELLED and "the conversation was closed" in summary.detail
    released(redis, keys, conversation.id, 10, "the executor kept a closed conversation")


@pytest.mark.slow
def test_an_unreadable_turn_ends_the_conversation_not_the_executor(replay_stack):
    settings, _ = replay_stack({"m": answer_of("print(1)\n")}, FAST)
    keys, redis = Keys(settings.namespace), connect(settings)
    with Client(settings) as client:
        with client.conversation(model="m") as conversation:
            assert conversation.send(messages=TASK).result().status is SessionStatus.OK
            redis.xadd(keys.turns(conversation.id), {"v": "1", "kind": "turn", "data": '{"session_id": "not valid!"}'})
        assert client.submit(messages=TASK, model="m").result().status is SessionStatus.OK  # the executor lives on
    assert replay_stack.stack.processes["executor"].poll() is None


CLIENT = textwrap.dedent("""
    import sys
    from eager.common.config import Settings
    from eager.client import Client
    client = Client(Settings.from_env())
    conversation = client.conversation(model="steps")
    summary = conversation.send(messages=[{"role": "user", "content": "go"}]).result()
    print(conversation.id, summary.status.value, flush=True)
    sys.stdin.read()  # hold the conversation open until killed
""")


@pytest.mark.slow
def test_a_client_that_dies_between_turns_frees_the_interpreter_within_a_lease(replay_stack):
    settings, _ = replay_stack({"steps": answer_of("a = 1\n")}, FAST, lease_s=1.0)
    client = subprocess.Popen([sys.executable, "-c", CLIENT], cwd=ROOT, env=stage_env(settings),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        conversation_id, status = client.stdout.readline().split()
        assert status == "ok"
        redis, keys = connect(settings), Keys(settings.namespace)
        assert redis.exists(keys.conversation_lease(conversation_id, "executor"))
        client.kill()
        client.wait(timeout=10)
        released(redis, keys, conversation_id, 10 * settings.lease_s, "the executor kept a dead client's conversation")
    finally:
        client.kill()


@pytest.mark.slow
def test_an_idle_conversation_is_let_go_and_its_next_turn_refused(replay_stack):
    settings, _ = replay_stack({"steps": answer_of("a = 1\n")}, FAST, turn_idle_s=0.5)
    redis, keys = connect(settings), Keys(settings.namespace)
    with Client(settings) as client, client.conversation(model="steps") as conversation:
        assert conversation.send(messages=TASK).result().status is SessionStatus.OK
        released(redis, keys, conversation.id, 10, "the idle conversation was kept")
        with pytest.raises(ConversationClosed, match="idle"):
            conversation.send(messages=TASK)
