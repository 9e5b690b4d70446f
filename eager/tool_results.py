"""A turn that called tools, answered as the API expects after a tool call: the repair loop's next messages.

After an assistant message with `tool_calls`, chat completions want one `tool` message per call (its
`tool_call_id`), and the Responses API one `function_call_output` / `custom_tool_call_output` item per
call (its `call_id`; `eager.producer.tools.responses_input` turns the chat form into those). A user
message instead would leave the calls unanswered, which the APIs refuse. So the code call the program
failed in gets the feedback; the code calls before it say they ran, those after it that they did not,
and calls of other tools that nothing here runs them.

A call cut by early error interruption goes back with the code the model had written up to the cut, as
complete JSON: the APIs take only well-formed arguments.
"""

from __future__ import annotations

import json
from typing import Any

from eager.common.protocol import CodeTool, ToolCall, ToolShape
from eager.detector.lines import count_line_ends
from eager.producer.tool_args import ArgumentDecoder


def call_id(call: ToolCall) -> str:
    """The id a result answers: the model's, or one made from the call's place when the server gave none."""
    return call.call_id or f"call_{call.index}"


def code_of(call: ToolCall, tool: CodeTool) -> str:
    """The code a code call carried, as far as it streamed."""
    if tool.shape is ToolShape.CUSTOM:
        return call.arguments
    return ArgumentDecoder(tool.argument).feed(call.arguments)


def _assistant_call(call: ToolCall, tool: CodeTool) -> dict[str, Any]:
    if tool.shape is ToolShape.CUSTOM and call.ran:
        return {"id": call_id(call), "type": "custom", "custom": {"name": call.name, "input": call.arguments}}
    arguments = call.arguments
    if call.ran:
        try:
            json.loads(arguments)
        except json.JSONDecodeError:  # cut mid-call: what it wrote up to the cut
            arguments = json.dumps({tool.argument: code_of(call, tool)})
    return {"id": call_id(call), "type": "function", "function": {"name": call.name, "arguments": arguments}}


def failing_call(calls: list[ToolCall], tool: CodeTool, line: int | None) -> ToolCall | None:
    """The code call holding program line `line` (the program is the code calls' code, each starting on a
    line of its own); without a line, the last code call; None when no call was the code tool's."""
    code_calls = [call for call in calls if call.ran]
    program, found = "", None
    for call in code_calls:
        if program and not program.endswith(("\n", "\r")):
            program += "\n"
        if found is not None and line is not None and count_line_ends(program) + 1 > line:
            break
        found = call
        program += code_of(call, tool)
    return found


def tool_messages(calls: list[ToolCall], tool: CodeTool, line: int | None, feedback: str) -> list[dict[str, Any]]:
    """The assistant message with the turn's calls, then one result per call, the feedback on the failing
    one (or, when none was a code call, in a user message after them)."""
    failed = failing_call(calls, tool, line)
    results: list[dict[str, Any]] = []
    after = False
    for call in calls:
        if call is failed:
            content, after = feedback, True
        elif not call.ran:
            content = f"Not run: only the `{tool.name}` tool runs here."
        elif after:
            content = "Not run: the code of an earlier call failed."
        else:
            content = f"Ran; what the program printed is in the result of call {call_id(failed or call)}."
        results.append({"role": "tool", "tool_call_id": call_id(call), "content": content})
    if failed is None:
        results.append({"role": "user", "content": feedback})
    return [{"role": "assistant", "content": None, "tool_calls": [_assistant_call(c, tool) for c in calls]}, *results]
