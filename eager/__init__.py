"""Eager: run LLM-written Python while the model is still writing it.

Everything a user needs is here: submit sessions with `Client` (or `AsyncClient`), read their events
(`SessionEvent`, ending with a `Summary` whose `status` is a `SessionStatus`), hold a `Conversation`, and
catch `EagerError` for anything Eager raises on purpose.
"""

from common.config import Settings
from common.errors import EagerError
from common.protocol import (
    BatchFinished,
    BatchStarted,
    ChunkReady,
    CodeInvalid,
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
)
from eager.aio import AsyncClient, AsyncConversation, AsyncSession
from eager.client import Client, ClientClosed, Conversation, ConversationClosed, Overloaded, Session
from eager.repair import RepairReport

__all__ = [
    "AsyncClient", "AsyncConversation", "AsyncSession", "BatchFinished", "BatchStarted", "ChunkReady", "Client",
    "ClientClosed", "CodeInvalid", "Conversation", "ConversationClosed", "Delta", "DetectionEnd", "EagerError",
    "ExecutionError", "Figure", "Gate", "GateDecision", "GenerationEnd", "Output", "Overloaded", "ProtocolError",
    "RepairReport", "Session", "SessionEvent", "SessionStarted", "SessionStatus", "Settings", "Summary",
]
