"""The client for asyncio code: the same sessions and typed events as `eager.client`, awaited.

Every Redis call the sync client makes blocks for at most a second, so this form runs those calls
in worker threads instead of repeating the sync client's logic (leases, Redis retries, the
guaranteed terminal event) over an asyncio Redis; the event loop never blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Self

from eager.common.config import Settings
from eager.common.protocol import Message, SessionRequest, Summary
from eager.client import Client, Conversation, Session
from eager.repair import RepairReport


class AsyncSession:
    def __init__(self, session: Session) -> None:
        self._session = session

    @property
    def id(self) -> str:
        return self._session.id

    @property
    def request(self) -> SessionRequest:
        return self._session.request

    @property
    def summary(self) -> Summary | None:
        return self._session.summary

    async def events(self, tokens: bool = True) -> AsyncIterator[Message]:
        """As `Session.events`: every event in the order it was published, always ending with the Summary."""
        iterator = self._session.events(tokens)
        while (event := await asyncio.to_thread(next, iterator, None)) is not None:
            yield event

    async def result(self) -> Summary:
        return await asyncio.to_thread(self._session.result)

    async def cancel(self, reason: str = "cancelled by client") -> None:
        await asyncio.to_thread(self._session.cancel, reason)


class _Closing:
    """`async with`: the sync object's close, in a worker thread."""

    _closes: Conversation | Client

    async def aclose(self) -> None:
        await asyncio.to_thread(self._closes.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncConversation(_Closing):
    """`Conversation` awaited: turns that share one interpreter."""

    def __init__(self, conversation: Conversation) -> None:
        self._conversation = self._closes = conversation

    @property
    def id(self) -> str:
        return self._conversation.id

    async def send(self, **turn: Any) -> AsyncSession:
        """Takes `Conversation.send`'s keyword arguments; raises the same ConversationClosed."""
        return AsyncSession(await asyncio.to_thread(lambda: self._conversation.send(**turn)))


class AsyncClient(_Closing):
    """`async with AsyncClient() as client: session = await client.submit(messages=[...])`."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._client = self._closes = Client(settings)

    @property
    def settings(self) -> Settings:
        return self._client.settings

    async def submit(self, **request: Any) -> AsyncSession:
        """Takes `Client.submit`'s keyword arguments; raises the same ProtocolError and Overloaded."""
        return AsyncSession(await asyncio.to_thread(lambda: self._client.submit(**request)))

    async def conversation(self, **options: Any) -> AsyncConversation:
        """Takes `Client.conversation`'s keyword arguments."""
        return AsyncConversation(await asyncio.to_thread(lambda: self._client.conversation(**options)))

    async def solve(self, **task: Any) -> RepairReport:
        """`Client.solve` (the repair loop) in a worker thread: its `on_event` callback runs in that thread."""
        return await asyncio.to_thread(lambda: self._client.solve(**task))
