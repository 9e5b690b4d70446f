"""Reading one session's events, as a state machine without I/O: the one place its rules live.

A reader must merge the session's streams in the order they were published, must always end with a Summary
(even when the executor died, never took the session, or Redis went away) and must never end a session a
living executor is still ending. Those rules are the same for the sync client and the asyncio one, so they
live here, fed with plain data (decoded entries, lease observations, the time), and each client is a thin
shell that does what the reader asks (h11's sans-I/O design):

    reader = SessionReader(request, keys, settings, tokens=True, now_ns=now_ns())
    while not isinstance(step := reader.next_step(now_ns()), Done):
        Read       -> XREAD step.cursors; reader.received(entries, now) gives the messages to yield
        CheckLease -> EXISTS step.key (and step.witness); reader.lease_observed(held, now, witness kept)
        Pause      -> sleep step.seconds
        Abandon    -> end the session with step.summary, through `end_abandoned` if step.publish;
                      reader.ended(the Summary that stands) gives it to yield
        (a RedisError from any of these: reader.failed(error, now) gives what to yield)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from eager.common.config import Settings
from eager.common.connection import MAX_BLOCK_MS
from eager.common.lease import RENEWALS_PER_PERIOD, UPSTREAM_GRACE_LEASES, Watch
from eager.common.protocol import Keys, Message, SessionRequest, SessionStatus, Summary

# How long past the session timeout a reader waits for the executor's terminal event.
TERMINAL_GRACE_S = 15.0
REDIS_GIVE_UP_LEASES = 3  # Redis unreachable this many lease periods: the session's end cannot be learnt
REDIS_RETRY_S = 0.2
READ_COUNT = 512  # entries per stream and read

Entry = tuple[str, str, Message]  # stream key, entry id, message: one decoded XREAD entry


def _entry_order(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence)


def in_publication_order(entries: Sequence[Entry], streams: Sequence[str], count: int) -> list[Entry]:
    """One XREAD reply over several streams, merged in the order its entries were published (Redis groups
    the reply by stream). Ties within a millisecond go by `streams`' order. A stream that filled `count`
    may have more entries: nothing later than its last one is returned yet (the next read returns it)."""
    rank = {key: position for position, key in enumerate(streams)}
    last: dict[str, tuple[int, int]] = {}
    counts: dict[str, int] = {}
    for key, entry_id, _ in entries:
        last[key], counts[key] = _entry_order(entry_id), counts.get(key, 0) + 1
    horizon = min((last[key] for key, n in counts.items() if n >= count), default=None)

    def order(entry: Entry) -> tuple[int, int, int]:
        milliseconds, sequence = _entry_order(entry[1])
        return milliseconds, rank[entry[0]], sequence  # sequences count per stream: compared only within one

    ordered = sorted(entries, key=order)
    return [entry for entry in ordered if horizon is None or _entry_order(entry[1]) <= horizon]


@dataclass(frozen=True, slots=True)
class Read:
    """XREAD these streams after these ids, at most `count` entries each; block at most `block_ms` (None: not
    at all, the reader only wants what is already there)."""

    cursors: Mapping[str, str]
    count: int
    block_ms: int | None


@dataclass(frozen=True, slots=True)
class CheckLease:
    """Whether the lease `key` exists now (the executor running the session renews it), and whether `witness`
    does: a stream this reader has read from, which only a Redis that lost its data is without (a restart
    without persistence, which its clients may reconnect to without an error)."""

    key: str
    witness: str | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    """Redis failed: wait before the next step."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Abandon:
    """Nothing else will end the session: end it with `summary`, through `end_abandoned` (every reader sees
    that end, and the model is stopped) when `publish`, else as this reader's alone (Redis is gone)."""

    summary: Summary
    publish: bool


@dataclass(frozen=True, slots=True)
class Done:
    """The session's Summary was given: nothing more to read."""

    summary: Summary


Step = Read | CheckLease | Pause | Abandon | Done


class _Closing(Enum):
    """Why the reader is finishing: what is already in the streams is read first, then the session abandoned."""

    DEADLINE = "deadline"  # one last read, then TIMEOUT
    LEASE_LOST = "lease lost"  # read until nothing is left (its Summary precedes its lease's release), then FAILED


class SessionReader:
    """What to read next, which messages to give, and whether and how the session must be ended.

    `executor_grace_s`: how long the executor may take to show itself before the session counts as lost
    (a lone session waits in the queue for as long as it takes: infinity; a conversation's later turn goes
    to an executor already waiting for it)."""

    def __init__(self, request: SessionRequest, keys: Keys, settings: Settings, *, tokens: bool, now_ns: int,
                 executor_grace_s: float = math.inf, turn: int = 1) -> None:
        session_id = request.session_id
        self._request, self._turn, self._lease_s = request, turn, settings.lease_s
        # cause before effect: a token proves a chunk, a chunk runs and is reported
        self._streams = ([keys.tokens(session_id)] if tokens else []) + [keys.chunks(session_id),
                                                                          keys.events(session_id)]
        self._cursors = {key: "0-0" for key in self._streams}
        self._lease_key = keys.lease(session_id, "executor")
        self._witness = keys.events(session_id)
        self._deadline_ns = request.deadline_within(settings.session_timeout_s) + int(TERMINAL_GRACE_S * 1e9)
        self._executor = Watch(request.submitted_ns, grace_s=executor_grace_s)
        self._executor_grace_s = executor_grace_s
        self._check_every_ns = int(settings.lease_s / RENEWALS_PER_PERIOD * 1e9)
        self._checked_ns: int | None = None
        self._reached_ns = now_ns
        self._unreachable: str | None = None
        self._outage: str | None = None  # what the last Redis failure was, once Redis answered again
        self._pause = False
        self._closing: _Closing | None = None
        self._abandon: Abandon | None = None
        self.summary: Summary | None = None

    def next_step(self, now_ns: int) -> Step:
        if self.summary is not None:
            return Done(self.summary)
        if self._abandon is not None:
            return self._abandon
        if self._pause:
            self._pause = False
            return Pause(min(REDIS_RETRY_S, self._lease_s))
        if self._closing is None and now_ns >= self._deadline_ns:
            self._closing = _Closing.DEADLINE
        if self._closing is _Closing.DEADLINE:
            return self._read(None)
        if self._unreachable is not None and now_ns - self._reached_ns > REDIS_GIVE_UP_LEASES * self._lease_s * 1e9:
            return self._abandoning(SessionStatus.FAILED, f"Redis unreachable for "
                                    f"{REDIS_GIVE_UP_LEASES * self._lease_s} s ({self._unreachable})", now_ns,
                                    publish=False)
        if self._closing is _Closing.LEASE_LOST:
            return self._read(None)
        if self._checked_ns is None or now_ns - self._checked_ns >= self._check_every_ns:
            self._checked_ns = now_ns
            return CheckLease(self._lease_key, None if self._cursors[self._witness] == "0-0" else self._witness)
        return self._read(min((self._deadline_ns - now_ns) // 1_000_000, self._check_every_ns // 1_000_000,
                              MAX_BLOCK_MS) or 1)

    def received(self, entries: Sequence[Entry], now_ns: int) -> list[Message]:
        """A Read's reply, decoded: the messages to give, in publication order, up to the Summary."""
        self._reached(now_ns)
        given: list[Message] = []
        for key, entry_id, message in in_publication_order(entries, self._streams, READ_COUNT):
            self._cursors[key] = entry_id
            given.append(message)
            if isinstance(message, Summary):
                self.summary = message
                return given
        if self._closing is _Closing.DEADLINE or (self._closing is _Closing.LEASE_LOST and not given):
            self._abandon_for(self._closing, now_ns)
        return given

    def lease_observed(self, held: bool, now_ns: int, witness_kept: bool = True) -> None:
        """A CheckLease's answer."""
        self._reached(now_ns)
        if not witness_kept and self._outage is None:
            self._outage = "Redis came back without this session's streams (restarted without persistence)"
            self._executor.excuse(now_ns + int(UPSTREAM_GRACE_LEASES * self._lease_s * 1e9))
        if self._executor.lost(held, now_ns):
            self._closing = _Closing.LEASE_LOST

    def failed(self, error: str, now_ns: int) -> list[Message]:
        """Redis did not answer a step: retry after a pause, and give up only after a while. At the deadline
        there is no while left: the session is abandoned now. An Abandon that could not be published ends the
        session with this reader's own Summary, which is given."""
        if self._abandon is not None:
            return self.ended(self._abandon.summary)
        self._unreachable = error
        self._pause = True
        if self._closing is _Closing.DEADLINE:
            self._abandon_for(self._closing, now_ns)
        return []

    def ended(self, standing: Summary) -> list[Message]:
        """An Abandon's outcome: the Summary that stands (another writer's, if it ended the session first)."""
        self.summary = standing
        return [standing]

    def _reached(self, now_ns: int) -> None:
        if self._unreachable is not None:  # back after an outage: the executor gets time to renew a lost lease
            self._outage = f"Redis was unreachable ({self._unreachable})"
            self._executor.excuse(now_ns + int(UPSTREAM_GRACE_LEASES * self._lease_s * 1e9))
        self._reached_ns, self._unreachable = now_ns, None

    def _read(self, block_ms: int | None) -> Read:
        return Read(dict(self._cursors), READ_COUNT, block_ms)

    def _abandon_for(self, closing: _Closing, now_ns: int) -> None:
        if closing is _Closing.DEADLINE:
            self._abandoning(SessionStatus.TIMEOUT, "no terminal event from the executor in time", now_ns)
        else:
            self._abandoning(SessionStatus.FAILED, self._lost(), now_ns)

    def _abandoning(self, status: SessionStatus, detail: str, now_ns: int, publish: bool = True) -> Abandon:
        summary = Summary(status=status, gate=self._request.gate, submitted_ns=self._request.submitted_ns,
                          finished_ns=now_ns, stdout="", detail=detail, turn=self._turn)
        self._abandon = Abandon(summary, publish)
        return self._abandon

    def _lost(self) -> str:
        if self._outage is not None:
            return (f"{self._outage}, and the executor's lease did not come back within "
                    f"{UPSTREAM_GRACE_LEASES * self._lease_s} s of that: the executor died, or lost Redis")
        if self._executor.seen:
            return (f"the executor stopped renewing its lease for {self._lease_s} s (killed or lost) before the "
                    "session ended")
        return (f"no executor took this turn within {self._executor_grace_s} s (its conversation ended: closed, "
                "idle past EAGER_TURN_IDLE_S, or its executor died)")
