"""Code that arrives as tool calls, through the real stack: the Procfile stages, the real Redis, the sandboxed
interpreter and the real openai client over HTTP against the replay model, for each API shape (chat
`tool_calls`, Responses function calls, Responses custom tool input).

The replay streams each python block of a recorded answer as a call of the declared code tool, and a
```` ```tool:NAME ```` block as a verbatim call of NAME: another tool, or arguments no encoder writes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from eager.client import Client
from eager.common.config import Settings
from eager.common.protocol import CodeTool, DetectionEnd, SessionStatus, ToolShape
from eager.replay import ReplayServer, SpeedProfile
from eager.replay_tools import code_pieces
from tests.conftest import ReplayStacks, private_namespace
from tests.e2e.test_repair import FAILING, FIXING, TASK
from tests.helpers import collect, python_outcome

pytestmark = pytest.mark.slow

SHAPES = list(ToolShape)
FIRST = "s = 'tab\\there \"quoted\" back\\\\slash é 中 🎉 \\u2028'\nprint(s)\nfor i in range(3):\n    print(i, repr(s[i]))\n"
SECOND = "print(len(s), repr(s[-1]))\n"
TWO_CALLS_AND_A_SEARCH = (f"First the string:\n\n```python\n{FIRST}```\n\n```tool:web_search\n"
                          '{"query": "print(\'never run\')"}\n```\n\nThen its length:\n\n'
                          f"```python\n{SECOND}```\n")
# Both end in error only at their end; what is final before it runs meanwhile, as the model writes the rest.
TAIL = "".join(f"step_{i} = {i}\\n" for i in range(40))
NEVER_CLOSED = ("```python\nprint('before')\n```\n```tool:python\n"
                f"{{\"code\": \"print('ran')\\n{TAIL}print('cut, never run\n```\n")
CUT_BY_THE_LIMIT = f"```python\nprint('before')\n{TAIL.replace(chr(92) + 'n', chr(10))}print('after')\n```\n"
KEY_TWICE = (f"```tool:python\n{{\"code\": \"print('streamed')\\n{TAIL}\", "
             "\"code\": \"print('restated')\\n\"}\n```\n")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, ReplayServer]]:
    answers = {"program": TWO_CALLS_AND_A_SEARCH, "fixer": [FAILING, FIXING], "never-closed": NEVER_CLOSED,
               "key-twice": KEY_TWICE, "cut-by-the-limit": CUT_BY_THE_LIMIT}
    with contextlib.ExitStack() as started:
        stacks = ReplayStacks(started.enter_context(private_namespace()), tmp_path_factory.mktemp("tools"))
        started.callback(stacks.stop)
        yield stacks(answers, SpeedProfile(ttft_s=0.05, tokens_per_s=400.0))


def requests_for(server: ReplayServer, model: str) -> list[dict]:
    """What the replay model was asked for `model`, oldest first (every test's, as the stack is shared)."""
    return sorted((r for r in server.replays().values() if r["model"] == model),
                  key=lambda r: int(r["id"].rsplit("-", 1)[1]))


@pytest.mark.parametrize("shape", SHAPES)
def test_code_calls_run_in_order_as_python_runs_them_and_other_calls_are_reported(stack, shape, tmp_path: Path):
    settings, server = stack
    with Client(settings) as client:
        events, summary = collect(client.submit(messages=TASK, model="program", tool=CodeTool(shape=shape)))
    expected = python_outcome(FIRST + SECOND, tmp_path)
    assert summary.status is SessionStatus.OK and expected.error_type is None
    assert summary.stdout == expected.stdout
    (end,) = [e for e in events if isinstance(e, DetectionEnd)]
    assert [(c.name, c.ran) for c in end.generation.tool_calls] == [("python", True), ("web_search", False),
                                                                    ("python", True)]
    assert json.loads(end.generation.tool_calls[1].arguments) == {"query": "print('never run')"}
    assert requests_for(server, "program")[-1]["endpoint"] == ("chat.completions" if shape is ToolShape.CHAT
                                                          else "responses")


@pytest.mark.parametrize("shape", SHAPES)
def test_an_error_cuts_the_call_short_and_goes_back_as_its_tool_result(stack, shape):
    settings, server = stack
    with Client(settings) as client:
        report = client.solve(messages=TASK, model="fixer", tool=CodeTool(shape=shape), repairs=1)
    assert report.succeeded and report.stdout == "total 6\n"
    first, second = report.turns
    assert first.error.startswith("NameError at line 3") and first.cut_early and second.kept_state
    cut, repaired = requests_for(server, "fixer")[-2:]
    assert cut["tokens_sent"] < cut["tokens_total"]
    told = repaired["messages"]
    if shape is ToolShape.CHAT:
        user, assistant, result = told
        assert [user["role"], assistant["role"], result["role"]] == ["user", "assistant", "tool"]
        (call,) = assistant["tool_calls"]
        assert result["tool_call_id"] == call["id"] == "call_0"
        code, feedback = json.loads(call["function"]["arguments"])["code"], result["content"]
    else:
        user, call, result = told
        kind = "custom_tool_call" if shape is ToolShape.CUSTOM else "function_call"
        assert user["role"] == "user" and call["type"] == kind and result["type"] == f"{kind}_output"
        assert result["call_id"] == call["call_id"] == "call_0"
        code = call["input"] if shape is ToolShape.CUSTOM else json.loads(call["arguments"])["code"]
        feedback = result["output"]
    assert code.startswith("data = [3, 1, 2]\nprint('sorted', sorted(data))\ntotal = sum(dat)\n")
    assert len(code) < len(FAILING)  # what the model had written when it was stopped
    assert "NameError at line 3: name 'dat' is not defined" in feedback and "Call `python`" in feedback


@pytest.mark.parametrize("shape", [ToolShape.CHAT, ToolShape.RESPONSES])
@pytest.mark.parametrize(("model", "stdout", "why"), [
    ("never-closed", "before\nran\n", "never closed"),
    ("key-twice", "streamed\n", "differs from the code decoded while streaming"),
])
def test_arguments_that_never_close_or_differ_when_complete_end_the_session_clearly(stack, shape, model, stdout, why):
    settings, _ = stack
    with Client(settings) as client:
        _, summary = collect(client.submit(messages=TASK, model=model, tool=CodeTool(shape=shape)))
    assert summary.status is SessionStatus.MODEL_ERROR and why in summary.detail
    assert summary.stdout == stdout  # what was final ran; the rest did not


@pytest.mark.parametrize("shape", SHAPES)
def test_a_call_the_token_limit_cuts_ends_clearly_and_its_last_statement_does_not_run(stack, shape):
    settings, _ = stack
    tool = CodeTool(shape=shape)
    limit = len(code_pieces(CUT_BY_THE_LIMIT, tool)) // 2  # inside the steps: `step_19 = 1` may be `step_19 = 19`
    with Client(settings) as client:
        _, summary = collect(client.submit(messages=TASK, model="cut-by-the-limit", tool=tool, max_tokens=limit))
    assert summary.status is SessionStatus.MODEL_ERROR and "token limit inside the call" in summary.detail
    assert summary.stdout == "before\n"
