"""The keyword options of a session, a conversation and its turns, as typed dicts.

One definition serves the sync client and the asyncio one (`**options: Unpack[SessionOptions]`), so the two
cannot drift apart, and a type checker still checks every keyword and its type at each call.
"""

from __future__ import annotations

from typing import Any, TypedDict

from eager.common.protocol import CodeTool, Gate


class TurnOptions(TypedDict, total=False):
    """The model and limits of one turn (a conversation's defaults for its turns).

    `gate` defaults to `Gate.EAGER` and `model` to the configured one; `timeout_s` limits the session's wall
    time, generation included (at most `EAGER_SESSION_TIMEOUT_S`); `tool`: the code comes as calls of this tool
    (`CodeTool`, or {name, argument, shape}), not in markdown."""

    model: str | None
    gate: Gate | str
    max_tokens: int | None
    temperature: float | None
    stop: list[str] | None
    timeout_s: float | None
    tool: CodeTool | dict[str, str] | None


class SessionOptions(TurnOptions, total=False):
    """What to ask (`messages` for a chat model, or a completion `prompt`) and how to run it.

    `batch_chunks` and `batch_wait_ms` tune the `batch` gate for this session (default: the executor's
    settings)."""

    messages: list[dict[str, Any]] | None
    prompt: str | None
    batch_chunks: int | None
    batch_wait_ms: int | None


class ConversationOptions(TurnOptions, total=False):
    """A conversation's turn defaults, its turn limit (default 10) and `setup`: Python run in every fresh
    interpreter before its first turn (helpers the agent's code calls)."""

    max_turns: int
    setup: str | None
