"""A failed turn that called tools goes back as the calls' results: the feedback on the call that failed."""

from __future__ import annotations

import json

import pytest

from eager.common.protocol import CodeTool, ToolCall, ToolShape
from eager.tool_results import failing_call, tool_messages

CALLS = [
    ToolCall(0, "python", json.dumps({"code": "a = 1\nb = 2"}), "id_a", True),  # lines 1-2, no final line end
    ToolCall(1, "web_search", json.dumps({"query": "q"}), "id_s", False),
    ToolCall(2, "python", json.dumps({"code": "print(a)\nprint(c)\n"}), "id_b", True),  # lines 3-4
    ToolCall(3, "python", json.dumps({"code": "print(b)\n"}), None, True),  # line 5
]


@pytest.mark.parametrize(("line", "index"), [(1, 0), (2, 0), (3, 2), (4, 2), (5, 3), (None, 3)])
def test_the_failing_call_is_the_one_holding_the_line(line, index):
    assert failing_call(CALLS, CodeTool(), line).index == index


def test_each_call_gets_a_result_and_only_the_failing_one_the_feedback():
    assistant, *results = tool_messages(CALLS, CodeTool(), 4, "NameError at line 4")
    assert assistant["content"] is None
    assert [c["id"] for c in assistant["tool_calls"]] == [r["tool_call_id"] for r in results] == \
        ["id_a", "id_s", "id_b", "call_3"]
    assert [r["content"] for r in results] == [
        "Ran; what the program printed is in the result of call id_b.", "Not run: only the `python` tool runs here.",
        "NameError at line 4", "Not run: the code of an earlier call failed."]


def test_a_cut_call_goes_back_as_the_json_of_what_it_wrote_and_a_custom_call_as_its_input():
    cut = ToolCall(0, "python", '{"code": "x = 1\\nprint(x', "id", True)
    (call,) = tool_messages([cut], CodeTool(), 2, "cancelled")[0]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"code": "x = 1\nprint(x"}
    custom = ToolCall(0, "python", "x = 1\nprint(x", "id", True)
    (call,) = tool_messages([custom], CodeTool(shape=ToolShape.CUSTOM), 2, "cancelled")[0]["tool_calls"]
    assert call == {"id": "id", "type": "custom", "custom": {"name": "python", "input": "x = 1\nprint(x"}}


def test_with_no_code_call_the_feedback_follows_the_results_as_a_user_message():
    messages = tool_messages([CALLS[1]], CodeTool(), None, "You did not call `python`.")
    assert [m["role"] for m in messages] == ["assistant", "tool", "user"]
    assert messages[-1]["content"] == "You did not call `python`."
