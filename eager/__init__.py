"""Eager: run LLM-written Python while the model is still writing it.

Everything a user needs is here: submit sessions with `Client` (or `AsyncClient`), read their events
(`SessionEvent`, ending with a `Summary` whose `status` is a `SessionStatus`), hold a `Conversation`, ask
for the code as a `CodeTool`'s calls, and catch `EagerError` for anything Eager raises on purpose.

The names load on first use: the stages' own modules live under this package too, and a stage process (or
the sandbox's host code) importing one of them must not pay for the client, RQ and redis it does not use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eager.common.config import Settings
    from eager.common.errors import EagerError
    from eager.common.protocol import (
        BatchFinished,
        BatchStarted,
        ChunkReady,
        CodeInvalid,
        CodeTool,
        Delta,
        DetectionEnd,
        ExecutionError,
        Figure,
        Gate,
        GateDecision,
        GenerationEnd,
        Output,
        ProtocolError,
        SessionEvent,
        SessionStarted,
        SessionStatus,
        Summary,
        ToolCall,
        ToolShape,
    )
    from eager.aio import AsyncClient, AsyncConversation, AsyncSession
    from eager.client import Client, ClientClosed, Conversation, ConversationClosed, Overloaded, Session
    from eager.repair import RepairReport

_HOMES = {
    "eager.common.config": ("Settings",),
    "eager.common.errors": ("EagerError",),
    "eager.common.protocol": ("BatchFinished", "BatchStarted", "ChunkReady", "CodeInvalid", "CodeTool", "Delta",
                        "DetectionEnd", "ExecutionError", "Figure", "Gate", "GateDecision", "GenerationEnd", "Output",
                        "ProtocolError", "SessionEvent", "SessionStarted", "SessionStatus", "Summary", "ToolCall",
                        "ToolShape"),
    "eager.aio": ("AsyncClient", "AsyncConversation", "AsyncSession"),
    "eager.client": ("Client", "ClientClosed", "Conversation", "ConversationClosed", "Overloaded", "Session"),
    "eager.repair": ("RepairReport",),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'eager' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
