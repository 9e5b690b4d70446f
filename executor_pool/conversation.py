"""What a conversation adds to a session: one interpreter across turns, and the wait for the next turn.

A coding agent's turns share state (a repair uses the names the failed program defined), so
the first turn's job keeps its interpreter and takes later turns itself instead of the queue
handing each to whichever executor is free. The job waits for a turn only while the client
holds the conversation open: a client that dies lets its lease lapse and frees the interpreter
within a lease period, and an idle one frees it after `EAGER_TURN_IDLE_S`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.connection import MAX_BLOCK_MS
from eager.common.lease import RENEWALS_PER_PERIOD, Watch, lapsed
from eager.common.protocol import ConversationEnd, Keys, ProtocolError, TurnRequest
from eager.common.streams import decode_entries
from eager.executor_pool._runner import SETUP_FILENAME, program_filename
from eager.executor_pool.interpreter import Interpreter, InterpreterError
from eager.executor_pool.pool import handed_off, new_interpreter

log = logging.getLogger(__name__)


class SetupFailed(InterpreterError):
    """The conversation's setup code raised: no turn can rely on what it defines."""


@dataclass
class Interpreters:
    """The interpreter a session's turns run in: the worker's warm one first, a fresh one when it died.

    `keep` (a conversation) lets the interpreter outlive a turn; `setup` runs in every fresh
    interpreter before its first turn, so what it defines is there whichever interpreter a turn gets.
    """

    settings: Settings
    keep: bool = False
    setup: str | None = None
    _current: Interpreter | None = None

    def acquire(self, turn: int, remaining_s: float) -> tuple[Interpreter, bool, bool]:
        """(interpreter, warm: from the worker's pool, kept: carried over from the previous turn), ready for
        turn `turn`'s program; setup may take `remaining_s` of the turn's time at most."""
        kept = self._current is not None and self._current.alive
        if kept:
            assert self._current is not None
            interpreter, warm = self._current, False
            interpreter.new_output_budget()
        else:
            self.close()
            handed = handed_off()  # the worker hands one interpreter per job: only the first turn finds it
            interpreter = self._current = handed or new_interpreter(self.settings)
            warm = handed is not None
            if not warm:
                interpreter.start()
            if self.setup:
                self._set_up(interpreter, remaining_s)
        interpreter.begin_program(program_filename(turn))
        return interpreter, warm, kept

    def _set_up(self, interpreter: Interpreter, remaining_s: float) -> None:
        """Run the setup code; an interpreter it failed in is closed, so no turn runs with half of it."""
        interpreter.begin_program(SETUP_FILENAME)
        try:
            result = interpreter.run(self.setup or "", 1, lambda stream, text: None,
                                     timeout=max(0.001, min(self.settings.batch_timeout_s, remaining_s)))
        except InterpreterError as exc:
            self.close()
            raise SetupFailed(f"the conversation's setup code did not finish: {exc}") from exc
        if result.error is not None:
            self.close()
            raise SetupFailed(f"the conversation's setup code raised {result.error.type} at line "
                              f"{result.error.line}: {result.error.message}")

    def release(self) -> None:
        """After a turn: a conversation keeps a living interpreter; anything else is closed."""
        if not self.keep:
            self.close()

    def holds_living(self) -> bool:
        """Whether the next turn would find this turn's interpreter, with its names."""
        return self._current is not None and self._current.alive

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None


@dataclass
class TurnWait:
    """Reads a conversation's `turns` stream, one turn at a time, while its client holds it open."""

    client: redis.Redis
    keys: Keys
    settings: Settings
    conversation_id: str
    opened_ns: int  # the first turn's submission: its client held the conversation's lease before it
    _cursor: str = "0-0"
    _client_lease: Watch = field(init=False)

    def __post_init__(self) -> None:
        self._client_lease = Watch.upstream(self.opened_ns, self.settings.lease_s)

    def next_turn(self) -> TurnRequest | None:
        """The next turn, or None when the conversation is over: ended, its client gone, or idle too long
        (or Redis lost: the client then finds no executor holding the conversation, and learns it is over)."""
        try:
            return self._wait()
        except (redis.RedisError, ProtocolError):
            log.exception("conversation %s: could not read its next turn; ending it", self.conversation_id)
            return None

    def _wait(self) -> TurnRequest | None:
        key = self.keys.turns(self.conversation_id)
        idle_until = now_ns() + int(self.settings.turn_idle_s * 1e9)
        while True:
            now = now_ns()
            if now >= idle_until:
                log.info("conversation %s: no turn for %.0f s; freeing its interpreter", self.conversation_id,
                         self.settings.turn_idle_s)
                return None
            if lapsed(self.client, self.keys.conversation_lease(self.conversation_id, "client"), self._client_lease, now):
                log.info("conversation %s: its client stopped holding it", self.conversation_id)
                return None
            block_ms = max(1, min((idle_until - now) // 1_000_000, MAX_BLOCK_MS,
                                  int(self.settings.lease_s * 1000 / RENEWALS_PER_PERIOD)))
            for _, entry_id, message in decode_entries(self.client.xread({key: self._cursor}, count=1, block=block_ms)):
                self._cursor = entry_id
                if isinstance(message, ConversationEnd):
                    return None
                if isinstance(message, TurnRequest):
                    return message
