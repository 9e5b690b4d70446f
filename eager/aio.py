"""The client for asyncio code: the same sessions and typed events as `eager.client`, awaited natively.

Reading is redis.asyncio all the way: each session's blocking XREAD is a coroutine on a shared connection
pool, so a loop reads as many sessions at once as Redis has connections, never as many as a thread pool has
threads. The rules of reading (order, the guaranteed Summary, lease lapse, deadline, Redis retries) are
`eager.reading.SessionReader`'s, shared with the sync client. Only submitting a session crosses to a thread,
once: RQ, which enqueues the executor's job, has no asyncio form.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, Self, Unpack

from redis import RedisError

from eager import repair
from eager.client import (
    REQUESTS_MAXLEN,
    STARTED_GRACE_LEASES,
    BaseSession,
    Client,
    ConversationClosed,
    check_next_turn,
    conversation_parts,
    check_turn,
    request_fields,
)
from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.connection import connect_async
from eager.common.lease import held_async
from eager.common.protocol import Cancel, ConversationEnd, Message, SessionRequest, Summary
from eager.common.streams import decode_entries, end_abandoned_async, publish_async
from eager.options import ConversationOptions, SessionOptions, TurnOptions
from eager.reading import Abandon, CheckLease, Done, Pause, Read, SessionReader


class AsyncSession(BaseSession):
    """`Session` awaited: its events, its summary, its cancel."""

    def __init__(self, client: AsyncClient, request: SessionRequest, executor_grace_s: float = math.inf,
                 turn: int = 1) -> None:
        super().__init__(client.keys, client.settings, request, executor_grace_s, turn)
        self._client = client

    async def events(self, tokens: bool = True) -> AsyncIterator[Message]:
        """As `Session.events`: every event in the order it was published, always ending with the Summary."""
        reader = self._reader(tokens)
        while not isinstance(step := reader.next_step(now_ns()), Done):
            messages = await self._take(reader, step)
            self.summary = reader.summary or self.summary  # a second read keeps the end the first one found
            for message in messages:
                yield message

    async def _take(self, reader: SessionReader, step: Read | CheckLease | Pause | Abandon) -> list[Message]:
        """One step of the reader, awaited: the messages it gives."""
        redis, keys, settings = self._client.redis, self._client.keys, self._client.settings
        try:
            if isinstance(step, Read):
                cursors: dict[Any, Any] = dict(step.cursors)  # redis-py types its keys and ids as unions
                reply: Any = await redis.xread(cursors, count=step.count, block=step.block_ms)
                return reader.received(decode_entries(reply), now_ns())
            if isinstance(step, CheckLease):
                held = bool(await redis.exists(step.key))
                reader.lease_observed(held, now_ns(), step.witness is None or bool(await redis.exists(step.witness)))
            elif isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
            elif step.publish:
                return reader.ended(await end_abandoned_async(redis, keys, self.id, step.summary, "client",
                                                              settings.key_ttl_s))
            else:
                return reader.ended(step.summary)
        except RedisError as exc:  # Redis away or restarting: the reader decides when to give up
            return reader.failed(f"{type(exc).__name__}: {exc}", now_ns())
        return []

    async def result(self) -> Summary:
        """Wait for the end of the session (at once if it is known)."""
        if self.summary is None:
            async for _ in self.events(tokens=False):
                pass
        assert self.summary is not None
        return self.summary

    async def cancel(self, reason: str = "cancelled by client") -> None:
        client = self._client
        await publish_async(client.redis, client.keys.cancel(self.id), [Cancel(reason, "client", now_ns())],
                            client.settings.key_ttl_s)


class AsyncClient:
    """`async with AsyncClient() as client: session = await client.submit(messages=[...])`."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._jobs = Client(settings)  # requests built and executor jobs enqueued as the sync client does
        self.settings = self._jobs.settings
        self.keys = self._jobs.keys
        self.redis = connect_async(self.settings)
        self._conversations: weakref.WeakSet[AsyncConversation] = weakref.WeakSet()

    @property
    def closed(self) -> bool:
        return self._jobs.closed

    async def submit(self, **options: Unpack[SessionOptions]) -> AsyncSession:
        """`Client.submit`, awaited: raises the same ProtocolError, Overloaded and ClientClosed."""
        return await self._start(self._jobs.request(**options))

    async def conversation(self, **options: Unpack[ConversationOptions]) -> AsyncConversation:
        """`Client.conversation`, awaited; close it (`aclose`, or `async with`) to free its executor."""
        self._jobs.check_open()
        conversation = AsyncConversation(self, options)
        await conversation.open()
        self._conversations.add(conversation)
        return conversation

    async def solve(self, *, messages: list[dict[str, str]], repairs: int = 2, setup: str | None = None,
                    on_event: Callable[[int, Message], None] | None = None,
                    write_feedback: repair.Feedback = repair.feedback,
                    **request: Unpack[TurnOptions]) -> repair.RepairReport:
        """`Client.solve` (the repair loop), awaited; `on_event` runs in the event loop."""
        loop = repair.Loop(messages, repairs, write_feedback)
        async with await self.conversation(max_turns=loop.max_turns, setup=setup, **request) as conversation:
            while (turn := loop.next_turn()) is not None:
                try:
                    session = await conversation.send(messages=turn)
                except ConversationClosed as exc:
                    loop.interrupted(str(exc))
                    break
                record = loop.record(session.id, session.request.tool)
                try:
                    async for event in session.events():
                        record.receive(event)
                        if on_event is not None:
                            on_event(loop.turns, event)
                except BaseException:
                    with contextlib.suppress(RedisError):
                        await session.cancel("the client stopped reading")
                    raise
        return loop.report()

    async def _start(self, request: SessionRequest, conversation: AsyncConversation | None = None,
                     execute: bool = True) -> AsyncSession:
        """Enqueue the executor's job, then publish the request (as `Client._start`)."""
        if conversation is None:
            await asyncio.to_thread(self._jobs.enqueue, request, execute)
        else:
            await asyncio.to_thread(self._jobs.enqueue, request, execute, conversation.id, conversation.setup,
                                    conversation.max_turns)
        await self.publish_request(request)
        return AsyncSession(self, request)

    async def publish_request(self, request: SessionRequest) -> None:
        await self.redis.xadd(self.keys.requests, request_fields(request), maxlen=REQUESTS_MAXLEN, approximate=True)

    async def aclose(self) -> None:
        """Close the conversations still open (their executors are freed), then the connections. Idempotent."""
        self._jobs.closed = True
        for conversation in list(self._conversations):
            await conversation.aclose()
        await self.redis.aclose()
        self._jobs.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncConversation:
    """`Conversation` awaited: turns that share one interpreter, held open by a lease this loop renews."""

    def __init__(self, client: AsyncClient, options: ConversationOptions) -> None:
        self._client = client
        self.id, self.max_turns, self.setup, self._defaults = conversation_parts(options)
        self.sessions: list[AsyncSession] = []
        self._held: contextlib.AsyncExitStack[bool | None] | None = None

    async def open(self) -> None:
        client = self._client
        held = contextlib.AsyncExitStack()
        await held.enter_async_context(held_async(client.redis, client.keys.conversation_lease(self.id, "client"),
                                                  "client", client.settings.lease_s))
        held.push_async_callback(self._end)
        self._held = held

    async def send(self, *, execute: bool = True, **turn: Unpack[SessionOptions]) -> AsyncSession:
        """`Conversation.send`, awaited: waits for the previous turn to end, raises the same ConversationClosed."""
        check_turn(self.id, self._held is not None, len(self.sessions), self.max_turns)
        client = self._client
        options: SessionOptions = {**self._defaults, **turn}
        request = client._jobs.request(**options)
        if not self.sessions:
            session = await client._start(request, self, execute)
        else:
            await self.sessions[-1].result()
            executor_holds = bool(await client.redis.exists(client.keys.conversation_lease(self.id, "executor")))
            check_next_turn(self.id, self._held is not None, executor_holds)
            request = request.resubmitted(now_ns())  # timed from now, not the previous turn
            await publish_async(client.redis, client.keys.turns(self.id), [request.turn(execute)],
                                client.settings.key_ttl_s)
            await client.publish_request(request)
            session = AsyncSession(client, request, executor_grace_s=STARTED_GRACE_LEASES * client.settings.lease_s,
                                   turn=len(self.sessions) + 1)
        self.sessions.append(session)
        return session

    async def _end(self) -> None:
        client = self._client
        with contextlib.suppress(RedisError):
            await publish_async(client.redis, client.keys.turns(self.id),
                                [ConversationEnd("closed by the client", now_ns())], client.settings.key_ttl_s)

    async def aclose(self) -> None:
        """As `Conversation.close`: a turn still running is cancelled, and the executor ends the conversation."""
        if self._held is not None:
            held_open, self._held = self._held, None
            if self.sessions and self.sessions[-1].summary is None:
                with contextlib.suppress(RedisError):
                    await self.sessions[-1].cancel("the conversation was closed")
            await held_open.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
