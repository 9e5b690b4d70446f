"""The public client: submit a session, iterate its events, get its summary.

Submitting enqueues the executor job first, then publishes the request, so the
executor's fork and interpreter start overlap the model's time to first token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Self

from redis import RedisError
from rq import Queue

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.connection import MAX_BLOCK_MS, connect
from eager.common.lease import RENEWALS_PER_PERIOD, Watch, held
from eager.common.protocol import (
    Cancel,
    CodeTool,
    ConversationEnd,
    Gate,
    Keys,
    Message,
    SessionRequest,
    SessionSpec,
    SessionStatus,
    Summary,
    encode,
)
from eager.common.streams import decode_entries, end_abandoned, publish
from eager import repair
from eager.common.errors import EagerError

# How long past the session timeout a client waits for the executor's terminal event.
TERMINAL_GRACE_S = 15.0
REDIS_GIVE_UP_LEASES = 3  # Redis unreachable this many lease periods: the session's end cannot be learnt
REDIS_RETRY_S = 0.2
READ_COUNT = 512  # entries per stream and read
STARTED_GRACE_LEASES = 3  # a conversation's later turn goes to an executor already waiting for it


class Overloaded(EagerError, RuntimeError):
    """The admission limit refused a session: `EAGER_MAX_QUEUED` sessions already wait for an executor.
    Nothing was enqueued or published; the caller may retry later (or the deployment add executors)."""

    def __init__(self, queued: int, limit: int) -> None:
        super().__init__(f"overloaded: {queued} sessions already wait for an executor (EAGER_MAX_QUEUED={limit}); "
                         "nothing was submitted: retry later or add executors")
        self.queued = queued
        self.limit = limit


def _entry_order(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence)


def in_publication_order(response: Any, streams: list[str], count: int) -> list[tuple[str, str, Message]]:
    """One XREAD reply over several streams, merged in the order its entries were published (Redis groups
    the reply by stream). Ties within a millisecond go by `streams`' order. A stream that filled `count`
    may have more entries: nothing later than its last one is returned yet (the next read returns it)."""
    entries = decode_entries(response)
    rank = {key: position for position, key in enumerate(streams)}
    last: dict[str, tuple[int, int]] = {}
    counts: dict[str, int] = {}
    for key, entry_id, _ in entries:
        last[key], counts[key] = _entry_order(entry_id), counts.get(key, 0) + 1
    horizon = min((last[key] for key, n in counts.items() if n >= count), default=None)
    def order(entry: tuple[str, str, Message]) -> tuple[int, int, int]:
        milliseconds, sequence = _entry_order(entry[1])
        return milliseconds, rank[entry[0]], sequence  # sequences count per stream: compared only within one

    ordered = sorted(entries, key=order)
    return [entry for entry in ordered if horizon is None or _entry_order(entry[1]) <= horizon]


class ClientClosed(EagerError, RuntimeError):
    """The client was closed: it submits nothing more (its connections are gone)."""


class ConversationClosed(EagerError, RuntimeError):
    """The conversation cannot take another turn: it was closed, reached its turn limit, or its executor
    let it go (idle past `EAGER_TURN_IDLE_S`, or the executor died). Nothing was submitted."""


class Session:
    def __init__(self, client: Client, request: SessionRequest, executor_grace_s: float = math.inf,
                 turn: int = 1) -> None:
        self._client = client
        self.request = request
        self.turn = turn  # its place in its conversation
        self.summary: Summary | None = None
        self._executor_grace_s = executor_grace_s  # queued is not lost: only a lapsed lease is, unless a grace is set

    @property
    def id(self) -> str:
        return self.request.session_id

    def events(self, tokens: bool = True) -> Iterator[Message]:
        """Every event of the session in the order it was published (deltas, chunks, batches, output, errors),
        ending with its Summary; each call reads from the start. The caller always gets a terminal event: if
        the executor running the session stops renewing its lease, a `failed` Summary is published here (and
        the model stopped); if none arrives by the session deadline, a TIMEOUT summary is made here."""
        keys, redis, settings = self._client.keys, self._client.redis, self._client.settings
        # cause before effect: a token proves a chunk, a chunk runs and is reported
        streams = ([keys.tokens(self.id)] if tokens else []) + [keys.chunks(self.id), keys.events(self.id)]
        cursors: dict[Any, Any] = {key: "0-0" for key in streams}  # redis-py types its keys and ids as unions
        deadline_ns = self.request.submitted_ns + int(
            (settings.session_timeout(self.request.timeout_s) + TERMINAL_GRACE_S) * 1e9)
        executor = Watch(self.request.submitted_ns, grace_s=self._executor_grace_s)
        check_every_ns, checked_ns = int(settings.lease_s / RENEWALS_PER_PERIOD * 1e9), 0
        ended: Summary | None = None

        def read(block_ms: int | None) -> Iterator[Message]:
            nonlocal ended
            for key, entry_id, message in in_publication_order(redis.xread(cursors, count=READ_COUNT, block=block_ms),
                                                                streams, READ_COUNT):
                cursors[key] = entry_id
                if isinstance(message, Summary):
                    ended = self.summary = message
                yield message
                if ended is not None:
                    return

        def end(summary: Summary) -> Summary:
            nonlocal ended
            ended = self.summary = summary
            return summary

        reached_ns, unreachable = now_ns(), None
        while ended is None:
            now = now_ns()
            if now >= deadline_ns:
                with contextlib.suppress(RedisError):  # published if it can be: any other reader sees the same end
                    yield from read(None)
                if ended is None:
                    yield end(self._end_abandoned(SessionStatus.TIMEOUT, "no terminal event from the executor in time"))
                return
            if now - reached_ns > REDIS_GIVE_UP_LEASES * settings.lease_s * 1e9:
                yield end(self._terminal(SessionStatus.FAILED, f"Redis unreachable for "
                                         f"{REDIS_GIVE_UP_LEASES * settings.lease_s} s ({unreachable})"))
                return
            try:
                if now - checked_ns >= check_every_ns:
                    checked_ns = now
                    if executor.lost(bool(redis.exists(keys.lease(self.id, "executor"))), now):
                        # the executor's summary precedes its lease's release: read all that is there first
                        while ended is None and (unread := list(read(None))):
                            yield from unread
                        if ended is None:
                            yield end(self._end_abandoned(SessionStatus.FAILED, self._lost(taken=executor.seen)))
                        return
                yield from read(min((deadline_ns - now) // 1_000_000, check_every_ns // 1_000_000, MAX_BLOCK_MS) or 1)
                reached_ns = now_ns()
            except RedisError as exc:  # Redis away or restarting: retry, and give up only after a while
                unreachable = f"{type(exc).__name__}: {exc}"
                time.sleep(min(REDIS_RETRY_S, settings.lease_s))

    def _terminal(self, status: SessionStatus, detail: str) -> Summary:
        return Summary(status=status, gate=self.request.gate, submitted_ns=self.request.submitted_ns,
                       finished_ns=now_ns(), stdout="", detail=detail, turn=self.turn)

    def _lost(self, taken: bool) -> str:
        settings = self._client.settings
        return (f"the executor stopped renewing its lease for {settings.lease_s} s (killed or lost) before the "
                "session ended" if taken else f"no executor took this turn within {self._executor_grace_s} s (its "
                "conversation ended: closed, idle past EAGER_TURN_IDLE_S, or its executor died)")

    def _end_abandoned(self, status: SessionStatus, detail: str) -> Summary:
        """Nothing will end the session (its executor died, never took the turn, or is past the deadline): end it
        where every reader sees it, and stop the model. If the executor ended it first, that end is returned;
        with Redis unreachable the end is this reader's alone."""
        summary = self._terminal(status, detail)
        try:
            return end_abandoned(self._client.redis, self._client.keys, self.id, summary, "client",
                                 self._client.settings.key_ttl_s)
        except RedisError:
            return summary

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

    def submit(
        self,
        *,
        messages: list[dict[str, Any]] | None = None,
        prompt: str | None = None,
        model: str | None = None,
        gate: Gate | str = Gate.EAGER,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
        timeout_s: float | None = None,
        batch_chunks: int | None = None,
        batch_wait_ms: int | None = None,
        tool: CodeTool | dict[str, str] | None = None,
    ) -> Session:
        """Start a session; raises ProtocolError (a ValueError) for a malformed request, and Overloaded when
        `EAGER_MAX_QUEUED` sessions already wait for an executor, before anything is sent.
        `timeout_s` limits the session's wall time, generation included (at most `EAGER_SESSION_TIMEOUT_S`);
        `batch_chunks` and `batch_wait_ms` tune the `batch` gate for this session (default: the executor's settings).
        `tool`: the code comes as calls of this tool (`CodeTool`, or {name, argument, shape}), not in markdown."""
        request = self.request(messages=messages, prompt=prompt, model=model, gate=gate, max_tokens=max_tokens,
                               temperature=temperature, stop=stop, timeout_s=timeout_s, batch_chunks=batch_chunks,
                               batch_wait_ms=batch_wait_ms, tool=tool)
        return self._start(request)

    def conversation(
        self,
        *,
        model: str | None = None,
        gate: Gate | str = Gate.EAGER,
        max_turns: int = 10,
        setup: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
        timeout_s: float | None = None,
        tool: CodeTool | dict[str, str] | None = None,
    ) -> Conversation:
        """Open a conversation: turns (sessions) whose code runs in one interpreter, as a coding agent's steps do.
        `setup` is Python run in every fresh interpreter before its first turn (helpers the agent's code calls).
        `timeout_s` limits each turn; `tool` makes every turn's code come as that tool's calls (as `submit`).
        Close it (or use it as a context manager) to free the executor holding the interpreter."""
        self._check_open()
        conversation = Conversation(self, {"model": model, "gate": gate, "max_tokens": max_tokens,
                                           "temperature": temperature, "stop": stop, "timeout_s": timeout_s,
                                           "tool": tool}, max_turns, setup)
        self._conversations.add(conversation)
        return conversation

    def solve(self, *, messages: list[dict[str, Any]], repairs: int = 2, setup: str | None = None,
              on_event: Callable[[int, Message], None] | None = None, write_feedback: repair.Feedback = repair.feedback,
              **request: Any) -> repair.RepairReport:
        """Run a coding task until its program works: when a turn's code fails (early error interruption stops
        the model at the error), the error, the code that ran and the partial answer go back to the model as
        the next turn, up to `repairs` times, all in one interpreter. `on_event(turn, event)` sees every event;
        `request` takes `Client.conversation`'s model, gate, limits and code `tool`: with a tool, the feedback
        goes back as the results of the model's tool calls, in the shape its API expects."""
        records: list[tuple[str, repair.TurnRecord]] = []
        interrupted = None
        with self.conversation(max_turns=repairs + 1, setup=setup, **request) as conversation:
            while True:
                try:
                    session = conversation.send(messages=messages)
                except ConversationClosed as exc:
                    interrupted = str(exc)
                    break
                record = repair.TurnRecord(tool=session.request.tool)
                try:
                    for event in session.events():
                        record.receive(event)
                        if on_event is not None:
                            on_event(len(records) + 1, event)
                except BaseException:
                    with contextlib.suppress(RedisError):
                        session.cancel("the client stopped reading")
                    raise
                records.append((session.id, record))
                assert record.summary is not None
                if len(records) > repairs or not repair.repairable(record.summary):
                    break
                messages = repair.next_messages(messages, record, write_feedback)
        return repair.report(records, repairs + 1, interrupted)

    def request(self, **fields: Any) -> SessionRequest:
        """A validated request with a new session id and the configured model unless one is given."""
        fields["model"] = fields.get("model") or self.settings.model
        request = SessionRequest(session_id=uuid.uuid4().hex, submitted_ns=now_ns(), **fields)
        encode(request)  # refuses an oversized request before anything is enqueued
        return request

    def _start(self, request: SessionRequest, conversation: Conversation | None = None, execute: bool = True) -> Session:
        """Enqueue the executor's job (it forks and starts while the model thinks), then publish the request."""
        self._check_open()
        # checked, then enqueued: clients submitting at the same instant may pass the limit by a few
        if self.settings.max_queued > 0 and (queued := self._queue.count) >= self.settings.max_queued:
            raise Overloaded(queued, self.settings.max_queued)
        turns = 1 if conversation is None else conversation.max_turns
        spec = SessionSpec(request.turn(execute), conversation=None if conversation is None else conversation.id,
                           setup=None if conversation is None else conversation.setup, max_turns=turns)
        self._queue.enqueue(
            "eager.executor_pool.session.run_session", encode(spec),
            job_id=self.keys.executor_job_id(request.session_id),
            job_timeout=int(turns * (self.settings.session_timeout_s + self.settings.turn_idle_s) + 60),
            result_ttl=self.settings.key_ttl_s, failure_ttl=self.settings.key_ttl_s, ttl=self.settings.key_ttl_s,
        )
        self.publish_request(request)
        return Session(self, request)

    def publish_request(self, request: SessionRequest) -> None:
        fields: dict[Any, Any] = encode(request)
        self.redis.xadd(self.keys.requests, fields, maxlen=100_000, approximate=True)

    def _check_open(self) -> None:
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

    def __init__(self, client: Client, defaults: dict[str, Any], max_turns: int, setup: str | None) -> None:
        if max_turns < 1:
            raise ValueError("a conversation needs max_turns of at least 1")
        self._client = client
        self._defaults = defaults
        self.max_turns = max_turns
        self.setup = setup
        self.id = uuid.uuid4().hex
        self.sessions: list[Session] = []
        self._held: contextlib.ExitStack[bool | None] | None = contextlib.ExitStack()
        keys, settings = client.keys, client.settings
        self._held.enter_context(held(client.redis, keys.conversation_lease(self.id, "client"), "client",
                                      settings.lease_s))
        self._held.callback(self._end)

    def send(self, *, messages: list[dict[str, Any]] | None = None, prompt: str | None = None, execute: bool = True,
             **overrides: Any) -> Session:
        """Submit the next turn (`Client.submit`'s arguments; model, gate and limits default to the
        conversation's). Waits for the previous turn to end first: a turn's code runs after the one before.
        `execute=False` makes a turn that only talks (an agent's plan, a summary): its answer streams and
        ends `ok`, and none of its code runs. Raises ConversationClosed when no executor holds the
        conversation any more."""
        if self._held is None:
            raise ConversationClosed(f"conversation {self.id} is closed")
        if len(self.sessions) >= self.max_turns:
            raise ConversationClosed(f"conversation {self.id} reached its limit of {self.max_turns} turns")
        request = self._client.request(messages=messages, prompt=prompt, **{**self._defaults, **overrides})
        if not self.sessions:
            session = self._client._start(request, self, execute)
        else:
            self.sessions[-1].result()
            keys, settings = self._client.keys, self._client.settings
            if self._held is None:  # closed while the previous turn ran
                raise ConversationClosed(f"conversation {self.id} is closed")
            if not self._client.redis.exists(keys.conversation_lease(self.id, "executor")):
                raise ConversationClosed(f"no executor holds conversation {self.id} any more (idle past "
                                         "EAGER_TURN_IDLE_S, or its executor died)")
            # validated before the wait, timed from now: its deadlines do not count the previous turn's time
            request = dataclasses.replace(request, submitted_ns=now_ns())
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
