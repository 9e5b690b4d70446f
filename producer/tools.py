"""A code tool as each API declares it, and a chat conversation as the Responses API takes it.

The client keeps one form of a conversation, the chat one: a turn that called the code tool is an assistant
message with `tool_calls`, and its result a `tool` message. For the Responses API the producer turns those
into the input items that API expects after a call (`function_call` and `function_call_output`, or their
`custom_tool_call` twins).
"""

from __future__ import annotations

from typing import Any

from eager.common.protocol import CodeTool, ToolShape

_DESCRIPTION = ("Run Python code. State carries over between calls; what it prints is the result. "
                "The code runs while you write it, statement by statement.")


def declaration(tool: CodeTool) -> dict[str, Any]:
    """The `tools=[...]` entry that offers the code tool to the model in the tool's API shape."""
    if tool.shape is ToolShape.CUSTOM:
        return {"type": "custom", "name": tool.name, "description": _DESCRIPTION}
    parameters = {"type": "object", "properties": {tool.argument: {"type": "string", "description": "Python code"}},
                  "required": [tool.argument], "additionalProperties": False}
    if tool.shape is ToolShape.RESPONSES:
        return {"type": "function", "name": tool.name, "description": _DESCRIPTION, "parameters": parameters}
    return {"type": "function", "function": {"name": tool.name, "description": _DESCRIPTION, "parameters": parameters}}


def responses_input(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as Responses input items; tool calls and results become call and output items."""
    items: list[dict[str, Any]] = []
    kinds: dict[str, str] = {}  # call id -> the item type of its call, which names its output's type
    for message in messages:
        if message.get("role") == "tool":
            kind = kinds.get(message["tool_call_id"], "function_call")
            items.append({"type": f"{kind}_output", "call_id": message["tool_call_id"], "output": message["content"]})
            continue
        if message.get("content"):
            items.append({"role": message["role"], "content": message["content"]})
        for call in message.get("tool_calls") or ():
            if call.get("type") == "custom":  # chat's form of a custom tool call: {"custom": {name, input}}
                kinds[call["id"]] = "custom_tool_call"
                items.append({"type": "custom_tool_call", "call_id": call["id"], "name": call["custom"]["name"],
                              "input": call["custom"]["input"]})
            else:
                kinds[call["id"]] = "function_call"
                items.append({"type": "function_call", "call_id": call["id"], "name": call["function"]["name"],
                              "arguments": call["function"]["arguments"]})
    return items
