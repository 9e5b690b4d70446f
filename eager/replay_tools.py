"""A recorded answer streamed as code tool calls: the replay model's wire events for both API shapes.

Pure: a markdown answer and the request's `tools` in, the streamed events out, one list per scheduled token.
Each runnable code block of the answer becomes one call of the request's first tool (for a function tool, its
JSON arguments `{"<argument>": code}` cut into token-sized pieces that split escapes anywhere; for a custom tool,
the code itself). A block fenced as ```` ```tool:NAME ```` is a call of tool NAME with the block as its arguments,
verbatim: another tool an agent offers, or arguments no encoder would write (never closed, a key twice).
The prose is left out: a model that calls a tool ends its turn with the call. A request's token limit
(`max_tokens`, `max_output_tokens`) cuts the calls there, as a model's limit cuts them mid-call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from eager.common.protocol import CodeTool, ToolShape
from eager.detector.core import code_blocks
from eager.producer.tool_calls import ToolCallStream
from eager.replay import tokenize_answer


class ToolRequestError(ValueError):
    """The request's `tools` do not declare a tool the replay can call."""


@dataclass(frozen=True)
class RequestedTool:
    name: str
    argument: str | None  # None: a free-form custom tool, whose input is the code


def requested_tool(body: dict[str, Any], responses: bool) -> RequestedTool | None:
    """The first tool the request declares, or None when it declares none."""
    tools = body.get("tools")
    if not tools:
        return None
    tool = tools[0] if isinstance(tools, list) and isinstance(tools[0], dict) else None
    if tool is None:
        raise ToolRequestError("'tools' must be a list of objects")
    if responses and tool.get("type") == "custom":
        return RequestedTool(str(tool.get("name")), None)
    function = tool if responses else tool.get("function") or {}
    parameters = function.get("parameters") or {}
    required = parameters.get("required") or list(parameters.get("properties") or ())
    if not function.get("name") or not required:
        raise ToolRequestError("the first tool must be a function with a string parameter (or a custom tool)")
    return RequestedTool(str(function["name"]), str(required[0]))


_VERBATIM_CALL = re.compile(r"^```tool:([A-Za-z0-9_-]{1,64})[ \t]*\n(.*?)\n?^```[ \t]*$\n?", re.MULTILINE | re.DOTALL)


def _calls(answer: str, tool: RequestedTool) -> list[tuple[str, list[str]]]:
    """Each call in the answer's order, its tool's name and the pieces its arguments stream in."""
    out: list[tuple[str, list[str]]] = []
    at = 0
    for verbatim in [*_VERBATIM_CALL.finditer(answer), None]:
        for code in code_blocks(answer[at:verbatim.start() if verbatim else len(answer)]):
            text = code if tool.argument is None else json.dumps({tool.argument: code})
            out.append((tool.name, tokenize_answer(text) or [""]))
        if verbatim is not None:
            out.append((verbatim[1], tokenize_answer(verbatim[2]) or [""]))
            at = verbatim.end()
    return out


def code_pieces(answer: str, tool: CodeTool) -> list[str]:
    """The code the producer publishes for each piece the replay streams of `answer` as `tool`'s calls ("" for
    a piece that completes none): the detector's text, token by token, as the benchmark counts tokens."""
    requested = RequestedTool(tool.name, None if tool.shape is ToolShape.CUSTOM else tool.argument)
    stream = ToolCallStream(tool)
    return [stream.piece(index, piece, name if k == 0 else None, f"call_{index}" if k == 0 else None)
            for index, (name, pieces) in enumerate(_calls(answer, requested)) for k, piece in enumerate(pieces)]


def chat_slots(answer: str, tool: RequestedTool, frame: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """`chat.completion.chunk`s: each call's pieces under its `index`, the first naming it; then
    `finish_reason: "tool_calls"` (the last slot, sent at once after the last piece)."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**frame, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    slots: list[list[dict[str, Any]]] = []
    for index, (name, pieces) in enumerate(_calls(answer, tool)):
        for k, piece in enumerate(pieces):
            call: dict[str, Any] = {"index": index, "function": {"arguments": piece}}
            if k == 0:
                call.update(id=f"call_{index}", type="function")
                call["function"]["name"] = name
            slots.append([chunk({"role": "assistant", "tool_calls": [call]} if not slots else {"tool_calls": [call]})])
    slots.append([chunk({} if slots else {"role": "assistant", "content": ""}, "tool_calls" if slots else "stop")])
    return slots


def responses_slots(answer: str, tool: RequestedTool, response: dict[str, Any],
                    usage: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Responses API events: `response.created`, per call its item added, its argument (or custom input)
    deltas and its item done, then `response.completed` with the usage (the last slot)."""
    custom = tool.argument is None
    kind, delta_event = (("custom_tool_call", "response.custom_tool_call_input.delta") if custom
                         else ("function_call", "response.function_call_arguments.delta"))
    field = "input" if custom else "arguments"
    sequence = iter(range(1, 1 << 62))
    head = {"type": "response.created", "sequence_number": 0, "response": {**response, "status": "in_progress", "output": []}}
    slots: list[list[dict[str, Any]]] = []
    done_items = []
    for index, (name, pieces) in enumerate(_calls(answer, tool)):
        item = {"type": kind, "id": f"item_{index}", "call_id": f"call_{index}", "name": name, field: ""}
        events: list[dict[str, Any]] = [] if slots else [head]
        events.append({"type": "response.output_item.added", "output_index": index, "item": item,
                       "sequence_number": next(sequence)})
        for k, piece in enumerate(pieces):
            events.append({"type": delta_event, "item_id": item["id"], "output_index": index, "delta": piece,
                           "sequence_number": next(sequence)})
            if k == len(pieces) - 1:
                done = {**item, field: "".join(pieces), "status": "completed"}
                done_items.append(done)
                events.append({"type": "response.output_item.done", "output_index": index, "item": done,
                               "sequence_number": next(sequence)})
            slots.append(events)
            events = []
    completed = {"type": "response.completed", "sequence_number": next(sequence),
                 "response": {**response, "status": "completed", "output": done_items, "usage": usage}}
    slots.append([completed] if slots else [head, completed])
    return slots


def chat_limit_reached(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat end when the token limit cut the answer: `finish_reason: "length"`."""
    return [{**frame, "choices": [{"index": 0, "delta": {}, "finish_reason": "length", "logprobs": None}]}]


def limit_reached(slots: list[list[dict[str, Any]]], response: dict[str, Any],
                  usage: dict[str, Any]) -> list[dict[str, Any]]:
    """The Responses end when the token limit cut the answer after `slots`: `response.incomplete`."""
    sequence = max((event["sequence_number"] for events in slots for event in events), default=0) + 1
    return [{"type": "response.incomplete", "sequence_number": sequence,
             "response": {**response, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
                          "output": [], "usage": usage}}]


def responses_turn(body: dict[str, Any]) -> int:
    """Which answer a Responses request asks for: the runs of assistant messages and calls in its input."""
    items = body.get("input")
    if not isinstance(items, list):
        return 0
    said = [isinstance(i, dict) and (i.get("role") == "assistant" or i.get("type") in ("function_call", "custom_tool_call"))
            for i in items]
    return sum(1 for k, s in enumerate(said) if s and (k == 0 or not said[k - 1]))
