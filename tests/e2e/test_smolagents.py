"""smolagents' CodeAgent running its steps through Eager: the Procfile stack, a replay model scripting each step's
answer, and the real smolagents package."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from smolagents import ActionStep, tool
from smolagents.utils import AgentExecutionError

from eager.common.protocol import ChunkReady, Message, Output, SessionStarted, SessionStatus
from eager.client import Client
from eager.replay import SpeedProfile
from eager.smolagents_adapter import eager_code_agent
from tests.helpers import answer_of

FAST = SpeedProfile(ttft_s=0.05, tokens_per_s=300.0)

TWO_STEPS = [
    answer_of("primes = [n for n in range(2, 30) if all(n % d for d in range(2, n))]\n"
              "print('found', len(primes), 'primes')\n", before="Thought: find the primes first.\n"),
    answer_of("final_answer({'count': len(primes), 'largest': primes[-1]})\n", before="Thought: now answer.\n"),
]

NEVER_WRITTEN = "print('the model was stopped before this line')\n"
ERROR_THEN_REPAIR = [
    answer_of("base = 20\nprint('base is', base)\ntotal = base + missing_name\n"
              + "".join(f"print('padding', {i})\n" for i in range(30)) + NEVER_WRITTEN),
    answer_of("total = base + 1\nfinal_answer(total)\n", before="Thought: `missing_name` was undefined.\n"),
]


def events_of(agent) -> list[list[Message]]:  # type: ignore[no-untyped-def]
    """Each turn's events, read again from the start."""
    return [list(session.events()) for session in agent.model.sessions]


def ran_code(events: list[Message]) -> str:
    return "".join(event.code for event in events if isinstance(event, ChunkReady))


def action_steps(agent) -> list[ActionStep]:  # type: ignore[no-untyped-def]
    return [step for step in agent.memory.steps if isinstance(step, ActionStep)]


@pytest.mark.slow
def test_two_steps_share_one_interpreter_and_final_answer_returns_the_value(replay_stack):
    settings, _ = replay_stack({"agent": TWO_STEPS}, FAST)
    with Client(settings) as client, eager_code_agent(client, model="agent", max_steps=4) as agent:
        assert agent.run("How many primes are below 30, and which is the largest?") == {"count": 10, "largest": 29}
        sessions = agent.model.sessions
        summaries = [session.result() for session in sessions]
        assert [s.status for s in summaries] == [SessionStatus.OK, SessionStatus.EXITED]
        assert [s.turn for s in summaries] == [1, 2]
        events = events_of(agent)
        assert any(isinstance(e, SessionStarted) and e.kept_state for e in events[1])  # step 1's interpreter
        first, second = action_steps(agent)
        assert "found 10 primes" in first.observations and first.error is None
        assert second.is_final_answer
        for step, turn in zip((first, second), events):  # what the agent's memory says ran is what Eager ran
            assert step.code_action == ran_code(turn).strip()
        assert "found 10 primes" in "".join(e.text for e in events[0] if isinstance(e, Output))  # split as printed


@pytest.mark.slow
def test_an_error_cuts_the_step_and_the_agent_repairs_with_the_names_it_kept(replay_stack):
    settings, _ = replay_stack({"agent": ERROR_THEN_REPAIR}, FAST)
    with eager_code_agent(settings, model="agent", max_steps=4) as agent:
        assert agent.run("Add one to the base.") == 21
        failed, repaired = action_steps(agent)
        assert isinstance(failed.error, AgentExecutionError)
        assert "line 3" in str(failed.error) and "NameError: name 'missing_name' is not defined" in str(failed.error)
        assert "cut at this error" in str(failed.error)
        assert "base is 20" in failed.observations  # what printed before the error, as the local executor shows
        assert NEVER_WRITTEN not in failed.model_output  # the model was stopped at the error
        assert repaired.is_final_answer and repaired.error is None
        statuses = [session.result().status for session in agent.model.sessions]
        assert statuses == [SessionStatus.ERROR, SessionStatus.EXITED]


INTERPRETER_DIES = [
    answer_of("value = 7\nimport os\nos._exit(3)\n"),
    answer_of("print('value' in globals())\nfinal_answer('defined' if 'value' in globals() else 'gone')\n"),
]


@pytest.mark.slow
def test_after_the_interpreter_dies_the_next_step_runs_in_a_fresh_one_and_the_agent_is_told(replay_stack):
    settings, _ = replay_stack({"agent": INTERPRETER_DIES}, FAST)
    with eager_code_agent(settings, model="agent", max_steps=4) as agent:
        assert agent.run("Keep a value.") == "gone"
        died, fresh = action_steps(agent)
        assert "interpreter_died" in str(died.error)
        assert "fresh interpreter" in fresh.observations and "False" in fresh.observations
        assert died.observations is None  # no output, and no note: the first step expected no names
        assert agent.python_executor.state["_print_outputs"].startswith("(This step ran in a fresh interpreter")


@tool
def lookup(key: str) -> str:
    """Looks a key up in this process.

    Args:
        key: what to look up.
    """
    return key


@pytest.mark.slow
def test_plans_only_talk_and_action_steps_run(replay_stack):
    """One scripted answer for every call: the plan's code fence must not run, the action step's must."""
    answer = "Thought: count, then answer.\n```python\nprint('ran')\nfinal_answer(7)\n```\n<end_plan>\n"
    settings, _ = replay_stack({"agent": answer}, FAST)
    with Client(settings) as client, eager_code_agent(client, model="agent", max_steps=2, planning_interval=1) as agent:
        assert agent.run("Answer seven.") == 7
        plan, action = (list(session.events()) for session in agent.model.sessions)
    assert plan[-1].status is SessionStatus.OK and not any(isinstance(e, Output) for e in plan)
    assert action[-1].status is SessionStatus.EXITED  # final_answer
    assert "".join(e.text for e in action if isinstance(e, Output)) == "ran\n"


def test_tools_that_live_in_this_process_are_refused_before_anything_runs(settings):
    with Client(settings) as client, pytest.raises(ValueError, match="lookup"):
        eager_code_agent(client, tools=[lookup])


@pytest.mark.slow
def test_the_example_runs_its_scripted_agent_on_a_stack_of_its_own(settings):
    result = subprocess.run([sys.executable, "-m", "eager.examples.smolagents_agent"], capture_output=True, text=True,
                            env={**os.environ, **settings.to_env()}, cwd=Path(__file__).resolve().parents[2],
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "answer: {'prime': 492113, 'gap': 114}" in result.stdout
    assert re.search(r"^1 +ok .*\n2 +exited ", result.stdout, re.MULTILINE)  # one Eager turn per step


PLOT_STEPS = [
    answer_of("import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.show()\nprint('plotted')\n",
              before="Thought: draw it.\n"),
    answer_of("final_answer('a parabola')\n", before="Thought: I saw the figure.\n"),
]


@pytest.mark.slow
def test_a_figure_the_step_shows_becomes_its_observation_image(replay_stack):
    settings, _ = replay_stack({"agent": PLOT_STEPS}, FAST)
    with Client(settings) as client, eager_code_agent(client, model="agent", max_steps=3) as agent:
        assert agent.run("Plot the squares.") == "a parabola"
        first, second = action_steps(agent)[:2]
        assert [image.size for image in first.observations_images] == [(640, 480)]
        assert "plotted" in first.observations
        assert not second.observations_images
