"""The public client: submit a session, iterate its events, get its summary.

Submitting enqueues the executor job first, then publishes the request, so the
executor's fork and interpreter start overlap the model's time to first token.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Self, Unpack

from redis import RedisError
from rq import Queue

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.connection import connect
from eager.common.lease import held
from eager.common.protocol import (
    Cancel,
    ConversationEnd,
    Keys,
    Message,
    SessionRequest,
    SessionSpec,
    Summary,
    encode,
)
from eager.common.streams import decode_entries, end_abandoned, publish
from eager.options import ConversationOptions, SessionOptions, TurnOptions
from eager.reading import Abandon, CheckLease, Done, Pause, Read, SessionReader
from eager import repair
from eager.common.errors import EagerError

REQUESTS_MAXLEN = 100_000  # the requests stream is trimmed to about this many entries
STARTED_GRACE_LEASES = 3  # a conversation's later turn goes to an executor already waiting for it


class Overloaded(EagerError, RuntimeError):
    """The admission limit refused a session: `EAGER_MAX_QUEUED` sessions already wait for an executor.
    Nothing was enqueued or published; the caller may retry later (or the deployment add executors)."""

    def __init__(self, queued: int, limit: int) -> None:
        super().__init__(f"overloaded: {queued} sessions already wait for an executor (EAGER_MAX_QUEUED={limit}); "
                         "nothing was submitted: retry later or add executors")
        self.queued = queued
        self.limit = limit


def request_fields(request: SessionRequest) -> dict[Any, Any]:
    """A request as the requests stream's entry (redis-py types an entry's fields as a union)."""
    return dict(encode(request))


class ClientClosed(EagerError, RuntimeError):
    """The client was closed: it submits nothing more (its connections are gone)."""


class ConversationClosed(EagerError, RuntimeError):
    """The conversation cannot take another turn: it was closed, reached its turn limit, or its executor
    let it go (idle past `EAGER_TURN_IDLE_S`, or the executor died). Nothing was submitted."""


def conversation_parts(options: ConversationOptions) -> tuple[str, int, str | None, TurnOptions]:
    """A new conversation's id, turn limit, setup and its turns' defaults; refuses a limit below one."""
    max_turns = options.get("max_turns", 10)
    if max_turns < 1:
        raise ValueError("a conversation needs max_turns of at least 1")
    defaults: TurnOptions = {key: value for key, value in options.items()  # type: ignore[assignment]
                             if key not in ("max_turns", "setup")}
    return uuid.uuid4().hex, max_turns, options.get("setup"), defaults


def check_turn(conversation_id: str, is_open: bool, turns: int, max_turns: int) -> None:
    """Raises ConversationClosed unless the conversation can take another turn (checked before anything is sent)."""
    if not is_open:
        raise ConversationClosed(f"conversation {conversation_id} is closed")
    if turns >= max_turns:
        raise ConversationClosed(f"conversation {conversation_id} reached its limit of {max_turns} turns")


def check_next_turn(conversation_id: str, is_open: bool, executor_holds: bool) -> None:
    """Raises ConversationClosed unless a later turn can go, once the previous one ended: the conversation
    is still open (it may have been closed while that turn ran) and its executor still holds it."""
    if not is_open:
        raise ConversationClosed(f"conversation {conversation_id} is closed")
    if not executor_holds:
        raise ConversationClosed(f"no executor holds conversation {conversation_id} any more (idle past "
                                 "EAGER_TURN_IDLE_S, or its executor died)")


class BaseSession:
    """What a session's handle holds, sync or asyncio: its request, its place in its conversation, its Summary
    once read, and how to read it."""

    def __init__(self, keys: Keys, settings: Settings, request: SessionRequest, executor_grace_s: float = math.inf,
                 turn: int = 1) -> None:
        self.request = request
        self.turn = turn  # its place in its conversation
        self.summary: Summary | None = None
        self._keys, self._settings = keys, settings
        self._executor_grace_s = executor_grace_s  # queued is not lost: only a lapsed lease is, unless a grace is set

    @property
    def id(self) -> str:
        return self.request.session_id

    def _reader(self, tokens: bool) -> SessionReader:
        return SessionReader(self.request, self._keys, self._settings, tokens=tokens, now_ns=now_ns(),
                             executor_grace_s=self._executor_grace_s, turn=self.turn)


class Session(BaseSession):
    def __init__(self, client: Client, request: SessionRequest, executor_grace_s: float = math.inf,
                 turn: int = 1) -> None:
        super().__init__(client.keys, client.settings, request, executor_grace_s, turn)
        self._client = client

    def events(self, tokens: bool = True) -> Iterator[Message]:
        """Every event of the session in the order it was published (deltas, chunks, batches, output, errors),
        ending with its Summary; each call reads from the start. The caller always gets a terminal event: if
        the executor running the session stops renewing its lease, a `failed` Summary is published here (and
        the model stopped); if none arrives by the session deadline, a TIMEOUT summary is made here. The rules
        are `eager.reading.SessionReader`'s; this only does the Redis calls it asks for."""
        reader = self._reader(tokens)
        while not isinstance(step := reader.next_step(now_ns()), Done):
            messages = self._take(reader, step)
            self.summary = reader.summary or self.summary  # a second read keeps the end the first one found
            yield from messages

    def _take(self, reader: SessionReader, step: Read | CheckLease | Pause | Abandon) -> list[Message]:
        """One step of the reader, done: the messages it gives."""
        redis, keys, settings = self._client.redis, self._client.keys, self._client.settings
        try:
            if isinstance(step, Read):
                cursors: dict[Any, Any] = dict(step.cursors)  # redis-py types its keys and ids as unions
                reply: Any = redis.xread(cursors, count=step.count, block=step.block_ms)
                return reader.received(decode_entries(reply), now_ns())
            if isinstance(step, CheckLease):
                held = bool(redis.exists(step.key))
                reader.lease_observed(held, now_ns(), step.witness is None or bool(redis.exists(step.witness)))
            elif isinstance(step, Pause):
                time.sleep(step.seconds)
            elif step.publish:
                return reader.ended(end_abandoned(redis, keys, self.id, step.summary, "client", settings.key_ttl_s))
            else:
                return reader.ended(step.summary)
        except RedisError as exc:  # Redis away or restarting: the reader decides when to give up
            return reader.failed(f"{type(exc).__name__}: {exc}", now_ns())
        return []

    def result(self) -> Summary:
        """Wait for the end of the session (at once if it is known)."""
        if self.summary is None:
            for _ in self.events(tokens=False):
                pass
        assert self.summary is not None
        return self.summary

    def cancel(self, reason: str = "cancelled by client") -> None:
        publish(self._client.redis, self._client.keys.cancel(self.id), Cancel(reason, "client", now_ns()),
                self._client.settings.key_ttl_s)


class Client:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.keys = Keys(self.settings.namespace)
        self.redis = connect(self.settings)
        self._conversations: weakref.WeakSet[Conversation] = weakref.WeakSet()
        self._queue = Queue(self.keys.executor_queue, connection=connect(self.settings, decode=False))
        self.closed = False

    def submit(self, **options: Unpack[SessionOptions]) -> Session:
        """Start a session (`eager.options.SessionOptions` lists the keywords); raises ProtocolError (a
        ValueError) for a malformed request, and Overloaded when `EAGER_MAX_QUEUED` sessions already wait for
        an executor, before anything is sent."""
        return self._start(self.request(**options))

    def conversation(self, **options: Unpack[ConversationOptions]) -> Conversation:
        """Open a conversation: turns (sessions) whose code runs in one interpreter, as a coding agent's steps do
        (`eager.options.ConversationOptions`: the turns' model, gate and limits, `max_turns`, `setup`). Close it
        (or use it as a context manager) to free the executor holding the interpreter."""
        self.check_open()
        conversation = Conversation(self, options)
        self._conversations.add(conversation)
        return conversation

    def solve(self, *, messages: list[dict[str, Any]], repairs: int = 2, setup: str | None = None,
              on_event: Callable[[int, Message], None] | None = None, write_feedback: repair.Feedback = repair.feedback,
              **request: Unpack[TurnOptions]) -> repair.RepairReport:
        """Run a coding task until its program works: when a turn's code fails (early error interruption stops
        the model at the error), the error, the code that ran and the partial answer go back to the model as
        the next turn, up to `repairs` times, all in one interpreter. `on_event(turn, event)` sees every event;
        `request` takes `Client.conversation`'s model, gate, limits and code `tool`: with a tool, the feedback
        goes back as the results of the model's tool calls, in the shape its API expects."""
        loop = repair.Loop(messages, repairs, write_feedback)
        with self.conversation(max_turns=loop.max_turns, setup=setup, **request) as conversation:
            while (turn := loop.next_turn()) is not None:
                try:
                    session = conversation.send(messages=turn)
                except ConversationClosed as exc:
                    loop.interrupted(str(exc))
                    break
                record = loop.record(session.id, session.request.tool)
                try:
                    for event in session.events():
                        record.receive(event)
                        if on_event is not None:
                            on_event(loop.turns, event)
                except BaseException:
                    with contextlib.suppress(RedisError):
                        session.cancel("the client stopped reading")
                    raise
        return loop.report()

    def request(self, **options: Unpack[SessionOptions]) -> SessionRequest:
        """A validated request with a new session id and the configured model unless one is given."""
        fields: dict[str, Any] = {**options, "model": options.get("model") or self.settings.model}
        request = SessionRequest(session_id=uuid.uuid4().hex, submitted_ns=now_ns(), **fields).stamped(
            self.settings.session_timeout_s)
        encode(request)  # refuses an oversized request before anything is enqueued
        return request

    def _start(self, request: SessionRequest, conversation: Conversation | None = None, execute: bool = True) -> Session:
        """Enqueue the executor's job (it forks and starts while the model thinks), then publish the request."""
        if conversation is None:
            self.enqueue(request, execute)
        else:
            self.enqueue(request, execute, conversation.id, conversation.setup, conversation.max_turns)
        self.publish_request(request)
        return Session(self, request)

    def enqueue(self, request: SessionRequest, execute: bool = True, conversation: str | None = None,
                setup: str | None = None, max_turns: int = 1) -> None:
        """The session's executor job, unless the admission limit refuses it (Overloaded). The asyncio client
        enqueues through this too (RQ has no asyncio form): one call per session, never per event."""
        self.check_open()
        # checked, then enqueued: clients submitting at the same instant may pass the limit by a few
        if self.settings.max_queued > 0 and (queued := self._queue.count) >= self.settings.max_queued:
            raise Overloaded(queued, self.settings.max_queued)
        spec = SessionSpec(request.turn(execute), conversation=conversation, setup=setup, max_turns=max_turns)
        self._queue.enqueue(
            "eager.executor_pool.session.run_session", encode(spec),
            job_id=self.keys.executor_job_id(request.session_id),
            result_ttl=self.settings.key_ttl_s, failure_ttl=self.settings.key_ttl_s, ttl=self.settings.key_ttl_s,
        )

    def publish_request(self, request: SessionRequest) -> None:
        self.redis.xadd(self.keys.requests, request_fields(request), maxlen=REQUESTS_MAXLEN, approximate=True)

    def check_open(self) -> None:
        if self.closed:
            raise ClientClosed("this client is closed: open a new Client to submit")

    def close(self) -> None:
        """Close the conversations still open (their executors are freed), then the connections. Idempotent."""
        self.closed = True
        for conversation in list(self._conversations):
            conversation.close()
        self.redis.close()
        self._queue.connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Conversation:
    """Turns that share one interpreter: each turn is a session of its own (its events, its summary), and its
    code runs after the previous turn's, with the names that turn defined (unless that interpreter died:
    `SessionStarted.kept_state` and `Summary.interpreter_kept` say which).

    The first turn's executor job keeps the interpreter and takes the later turns itself; it holds them for
    as long as this object holds the conversation open (a renewed lease), and `EAGER_TURN_IDLE_S` at most
    between turns.
    """

    def __init__(self, client: Client, options: ConversationOptions) -> None:
        self._client = client
        self.id, self.max_turns, self.setup, self._defaults = conversation_parts(options)
        self.sessions: list[Session] = []
        self._held: contextlib.ExitStack[bool | None] | None = contextlib.ExitStack()
        keys, settings = client.keys, client.settings
        self._held.enter_context(held(client.redis, keys.conversation_lease(self.id, "client"), "client",
                                      settings.lease_s))
        self._held.callback(self._end)

    def send(self, *, execute: bool = True, **turn: Unpack[SessionOptions]) -> Session:
        """Submit the next turn (`Client.submit`'s arguments; model, gate and limits default to the
        conversation's). Waits for the previous turn to end first: a turn's code runs after the one before.
        `execute=False` makes a turn that only talks (an agent's plan, a summary): its answer streams and
        ends `ok`, and none of its code runs. Raises ConversationClosed when no executor holds the
        conversation any more."""
        check_turn(self.id, self._held is not None, len(self.sessions), self.max_turns)
        options: SessionOptions = {**self._defaults, **turn}
        request = self._client.request(**options)
        if not self.sessions:
            session = self._client._start(request, self, execute)
        else:
            self.sessions[-1].result()
            keys, settings = self._client.keys, self._client.settings
            check_next_turn(self.id, self._held is not None,
                            bool(self._client.redis.exists(keys.conversation_lease(self.id, "executor"))))
            # validated before the wait, timed from now: its deadlines do not count the previous turn's time
            request = request.resubmitted(now_ns())
            publish(self._client.redis, keys.turns(self.id), request.turn(execute), settings.key_ttl_s)
            self._client.publish_request(request)
            # the executor is running and waiting for this turn: if it does not take it soon, none will
            session = Session(self._client, request, executor_grace_s=STARTED_GRACE_LEASES * settings.lease_s,
                              turn=len(self.sessions) + 1)
        self.sessions.append(session)
        return session

    def _end(self) -> None:
        with contextlib.suppress(RedisError):
            publish(self._client.redis, self._client.keys.turns(self.id), ConversationEnd("closed by the client",
                                                                                         now_ns()),
                    self._client.settings.key_ttl_s)

    def close(self) -> None:
        """Free the interpreter: a turn still running is cancelled (a batch already running finishes first),
        and the executor ends the conversation. Idempotent."""
        if self._held is not None:
            held_open, self._held = self._held, None
            if self.sessions and self.sessions[-1].summary is None:
                with contextlib.suppress(RedisError):
                    self.sessions[-1].cancel("the conversation was closed")
            held_open.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
