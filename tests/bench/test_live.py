"""`eager bench --live`: the task's own test judges the answer in the session's interpreter, a recording replays
its real pieces, and the whole benchmark runs end to end (a replay model standing in for the live endpoint, so
the test is fast and its answers known)."""

from __future__ import annotations

import json
import re
import subprocess

import openai
import pytest

from eager.bench.live import live_task, recording, tokens_per_s
from eager.bench.tasks import load
from eager.common.protocol import Delta, Gate, SessionStatus, Summary
from eager.replay import Recording, ReplayServer
from tests.conftest import stage_env
from tests.e2e.test_cli import eager

HUMANEVAL = {task.id: task for task in load("humaneval-full")}
SANDBOX_PYTHON = ".venv-sandbox/bin/python"


def _solution(task_id: str, body: str | None = None) -> str:
    """The task's signature and docstring with the canonical solution (or `body`), as a model would write it."""
    task = HUMANEVAL[task_id]
    fence = re.search(r"```python\n(.*?)\n\n\n?METADATA|```python\n(.*?)\n\n\ndef check", task.answer, re.DOTALL)
    assert fence is not None
    code = fence.group(1) or fence.group(2)
    if body is not None:
        code = code[:code.rindex('"""') + 3] + "\n" + body
    return code.rstrip() + "\n"


def _run(setup: str, program: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SANDBOX_PYTHON, "-c", setup + "\n" + program], capture_output=True, text=True, timeout=60)


def test_the_hidden_tests_pass_a_right_answer_and_fail_a_wrong_one():
    task = live_task(HUMANEVAL["humaneval/0"])
    right = _run(task.setup or "", _solution("humaneval/0") + "run_hidden_tests(has_close_elements)\n")
    assert right.returncode == 0 and task.passed_marker in right.stdout.splitlines(), right.stderr
    wrong = _run(task.setup or "", _solution("humaneval/0", "    return False\n") + "run_hidden_tests(has_close_elements)\n")
    assert wrong.returncode == 1 and "AssertionError" in wrong.stderr and task.passed_marker not in wrong.stdout


def test_a_program_that_writes_its_own_check_still_meets_the_official_one():
    task = live_task(HUMANEVAL["humaneval/0"])
    program = (_solution("humaneval/0", "    return False\n")
               + "def check(candidate):\n    print('my own tests passed')\n\ncheck(has_close_elements)\n"
               + "run_hidden_tests(has_close_elements)\n")
    done = _run(task.setup or "", program)
    assert "my own tests passed" in done.stdout and "AssertionError" in done.stderr


def test_the_prompt_asks_for_the_call_and_the_verdict_needs_the_marker_and_an_ok_session():
    task = live_task(HUMANEVAL["humaneval/2"])
    assert "run_hidden_tests(truncate_number)" in task.messages[0]["content"]
    assert HUMANEVAL["humaneval/2"].prompt in task.messages[0]["content"]

    def summary(status: SessionStatus, stdout: str) -> Summary:
        return Summary(status=status, gate=Gate.EAGER, submitted_ns=0, finished_ns=1, stdout=stdout)

    assert task.passed(summary(SessionStatus.OK, f"noise\n{task.passed_marker}\n"))
    assert not task.passed(summary(SessionStatus.OK, "truncate_number: all tests passed, I promise\n"))
    assert not task.passed(summary(SessionStatus.ERROR, f"{task.passed_marker}\n"))
    ds = live_task(load("ds1000")[0])
    assert ds.setup is None and ds.passed(summary(SessionStatus.OK, ds.expected_stdout or ""))
    assert not ds.passed(summary(SessionStatus.OK, "something else\n"))


def test_a_recording_is_the_sessions_deltas_timed_from_its_request():
    events = [Delta("a", at_ns=1_500_000_000), Delta("bc", at_ns=1_750_000_000),
              Summary(status=SessionStatus.OK, gate=Gate.SERIAL, submitted_ns=1_000_000_000, finished_ns=2_000_000_000,
                      stdout="", tokens=3, first_token_ns=1_500_000_000, generation_end_ns=2_000_000_000)]
    assert recording(events) == Recording(("a", "bc"), (0.5, 0.75))
    assert tokens_per_s(events[-1]) == pytest.approx(4.0)


def test_a_recording_replays_its_own_pieces_and_a_stop_sequence_cuts_it():
    taken = Recording(("```py", "thon\n", "print(1)", "\n```", " done"), (0.0, 0.01, 0.02, 0.03, 0.04))
    with ReplayServer({"m": taken}) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x")
        stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}], stream=True)
        pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
        assert tuple(pieces) == taken.pieces
        cut = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}], stop=["\n```"])
        assert cut.choices[0].message.content == "```python\nprint(1)"
    with pytest.raises(ValueError, match="in order"):
        Recording(("a", "b"), (0.2, 0.1))


@pytest.mark.slow
def test_the_live_benchmark_end_to_end_with_a_model_that_fails_first_then_repairs(settings, tmp_path):
    """The live endpoint answers humaneval/0 wrongly, and rightly once it has seen an error: pass@1 is 0 under both
    gates (live and replayed: the same answer), and the repair loop solves it in two turns under both."""
    wrong = f"```python\n{_solution('humaneval/0', '    return False')}\nrun_hidden_tests(has_close_elements)\n```\n"
    right = f"```python\n{_solution('humaneval/0')}\nrun_hidden_tests(has_close_elements)\n```\n"
    with ReplayServer({"any": [wrong, right]}) as server:
        env = {**stage_env(settings), "EAGER_MODEL_BASE_URL": server.base_url}
        result = eager("bench", "--live", "--tasks", "1", "--repair", "1", "--out", str(tmp_path), env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "live.json").read_text())
    (task,) = report["tasks"]
    assert task["task"] == "humaneval/0" and task["same_answer"]
    assert task["replay_passed"] == {"serial": False, "eager": False}
    assert {gate: live["status"] for gate, live in task["live"].items()} == {"serial": "error", "eager": "error"}
    assert task["live"]["serial"]["answer"] == wrong
    assert {gate: (r["succeeded"], r["turns"]) for gate, r in task["repair"].items()} == {
        "serial": (True, 2), "eager": (True, 2)}
    markdown = (tmp_path / "live.md").read_text()
    assert "| replayed recording (the same answer to both gates) | 0/1 (0%) | 0/1 (0%) |" in markdown
    assert "| solved within the turns | 1 | 1 |" in markdown
    assert "[1/1] humaneval/0 live" in result.stderr  # progress while it runs
