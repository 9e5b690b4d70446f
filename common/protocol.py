"""The wire protocol: every Redis key and every message schema, and nothing else.

Stages only meet in Redis, so this module is the contract between them. No other
module spells a key. Every per-session key carries the session id as a Redis
Cluster hash tag (``eager:{<session>}:tokens``) so that all of one session's keys
live on one shard and a multi-key read over them (the client follows three streams
in one XREAD) stays legal in a cluster. Every message carries the schema version;
a reader refuses a version it does not know rather than guessing. Within a version a field
may be added only with a default, so a message written before it decodes (as the default)
and an older reader ignores it: the session deadline (`deadline_ns`) came so.

Keys (``<ns>`` is the namespace, ``eager`` by default):

==================================  ======  =====================================================
key                                 type    content
==================================  ======  =====================================================
``<ns>:requests``                   stream  SessionRequest; consumer groups ``producer`` and ``detector``
``<ns>:{<session>}:tokens``         stream  Delta* then GenerationEnd (producer -> detector, client)
``<ns>:{<session>}:chunks``         stream  ChunkReady* [CodeInvalid] then DetectionEnd (detector -> executor)
``<ns>:{<session>}:cancel``         stream  Cancel (executor or client -> producer)
``<ns>:{<session>}:events``         stream  SessionStarted, GateDecision*, Batch*, Output, Figure, ExecutionError, Summary (executor -> client)
``<ns>:{<session>}:lease:<stage>``  string  the process working on the session for that stage; expires unless renewed
``<ns>:{<session>}:end``            string  the events entry id of the session's one Summary; whoever sets it ended it
``<ns>:{<conv>}:turns``             stream  TurnRequest* then ConversationEnd (client -> the executor running the conversation)
``<ns>:{<conv>}:lease:<stage>``     string  the client holding the conversation open, the executor keeping its interpreter
``<ns>:stages:<stage>``             zset    process name -> last heartbeat (ms); who is alive
==================================  ======  =====================================================

A conversation is a series of sessions (turns) whose code runs in one interpreter: its first
turn's executor job keeps the interpreter and takes each later turn from the ``turns`` stream.
Conversation ids share the session id alphabet.

RQ's own keys (``rq:*``) hold the executor queue ``<ns>-executor`` and jobs ``<ns>-session-<session>``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from eager.common.errors import EagerError

SCHEMA_VERSION = 1
# Larger than any prompt a model's context takes (and than any chunk or output event, which the
# sandbox caps well below), small enough that one message cannot stall a stage or Redis.
MAX_BODY_CHARS = 4_000_000
# The most output a session may keep (EAGER_SANDBOX_OUTPUT_BYTES): with an error's texts cut to
# ERROR_TEXT_CHARS, a Summary carrying that much plain text fits one message. Output that JSON
# escapes to more (control characters take 6 characters each) is cut to fit when the Summary is sent.
MAX_OUTPUT_BYTES = 3_000_000
ERROR_TEXT_CHARS = 20_000  # an error's message, its traceback and a Summary's detail are cut to about this

PRODUCER_GROUP = "producer"
DETECTOR_GROUP = "detector"
STAGES = ("producer", "detector", "executor")
CONVERSATION_HOLDERS = ("client", "executor")

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ProtocolError(EagerError, ValueError):
    """A message that cannot be read: unknown version or kind, missing or mistyped fields."""


def check_session_id(session_id: str) -> str:
    """Session ids become part of keys and hash tags, so only a safe alphabet is allowed."""
    if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
        raise ProtocolError(f"invalid session id {session_id!r}: want 1-64 of [A-Za-z0-9_-]")
    return session_id


def check_timeout(timeout_s: float | None) -> None:
    if timeout_s is not None and (type(timeout_s) not in (int, float) or not timeout_s > 0 or timeout_s == float("inf")):
        raise ProtocolError("`timeout_s` must be a positive number of seconds")


class _Deadlined:
    """A session's one deadline: stamped once, by its submitter, as an absolute wall-clock time (`deadline_ns`),
    and clamped by each stage to its own cap, so no stage redoes the arithmetic from its own settings. A message
    from a submitter older than the stamp carries none: its `timeout_s` (or the stage's cap) stands in."""

    __slots__ = ()
    submitted_ns: int
    timeout_s: float | None
    deadline_ns: int | None

    def _check_deadline(self) -> None:
        check_timeout(self.timeout_s)
        if self.deadline_ns is not None and (type(self.deadline_ns) is not int or self.deadline_ns <= self.submitted_ns):
            raise ProtocolError("`deadline_ns` must be an integer time after `submitted_ns`")

    def deadline_within(self, cap_s: float) -> int:
        """The deadline a stage whose own cap on a session's wall time is `cap_s` honours: the stamped one, or
        the cap's if that comes first."""
        cap_ns = self.submitted_ns + int(cap_s * 1e9)
        if self.deadline_ns is not None:
            return min(self.deadline_ns, cap_ns)
        return cap_ns if self.timeout_s is None else min(self.submitted_ns + int(self.timeout_s * 1e9), cap_ns)

    def allowance_s(self, cap_s: float) -> float:
        """The session's wall time under that cap, as a status detail names it."""
        return round((self.deadline_within(cap_s) - self.submitted_ns) / 1e9, 3)


@dataclass(frozen=True, slots=True)
class Keys:
    """Every key of one deployment, derived from its namespace."""

    namespace: str = "eager"

    def __post_init__(self) -> None:
        if not isinstance(self.namespace, str) or not _SESSION_ID.fullmatch(self.namespace):
            raise ProtocolError(f"invalid namespace {self.namespace!r}: want 1-64 of [A-Za-z0-9_-] "
                                "(it names the executor queue and jobs too)")

    @property
    def pattern(self) -> str:
        """Matches every key of this namespace (RQ's own keys aside)."""
        return f"{self.namespace}:*"

    @property
    def requests(self) -> str:
        return f"{self.namespace}:requests"

    def _session(self, session_id: str, name: str) -> str:
        return f"{self.namespace}:{{{check_session_id(session_id)}}}:{name}"

    def tokens(self, session_id: str) -> str:
        return self._session(session_id, "tokens")

    def chunks(self, session_id: str) -> str:
        return self._session(session_id, "chunks")

    def cancel(self, session_id: str) -> str:
        return self._session(session_id, "cancel")

    def events(self, session_id: str) -> str:
        return self._session(session_id, "events")

    def end(self, session_id: str) -> str:
        return self._session(session_id, "end")

    def lease(self, session_id: str, stage: str) -> str:
        if stage not in STAGES:
            raise ProtocolError(f"unknown stage {stage!r}")
        return self._session(session_id, f"lease:{stage}")

    def turns(self, conversation_id: str) -> str:
        return self._session(conversation_id, "turns")

    def conversation_lease(self, conversation_id: str, holder: str) -> str:
        if holder not in CONVERSATION_HOLDERS:
            raise ProtocolError(f"unknown conversation holder {holder!r}")
        return self._session(conversation_id, f"lease:{holder}")

    def conversation_keys(self, conversation_id: str) -> tuple[str, ...]:
        return (self.turns(conversation_id), *(self.conversation_lease(conversation_id, h) for h in CONVERSATION_HOLDERS))

    def session_keys(self, session_id: str) -> tuple[str, ...]:
        return (self.tokens(session_id), self.chunks(session_id), self.cancel(session_id), self.events(session_id),
                self.end(session_id), *(self.lease(session_id, stage) for stage in STAGES))

    def stage_heartbeats(self, stage: str) -> str:
        if stage not in STAGES:
            raise ProtocolError(f"unknown stage {stage!r}")
        return f"{self.namespace}:stages:{stage}"

    @property
    def executor_queue(self) -> str:
        return f"{self.namespace}-executor"

    def executor_job_id(self, session_id: str) -> str:
        return f"{self.namespace}-session-{check_session_id(session_id)}"


class Gate(StrEnum):
    EAGER = "eager"
    SERIAL = "serial"
    BATCH = "batch"  # wait for N chunks or M ms, whichever first


class GateAction(StrEnum):
    """What the gate does with one chunk: run it as soon as it can, hold it until the program is
    complete and valid, or merge it (a definition) with the next chunk."""

    RUN = "run"
    HOLD = "hold"
    MERGE = "merge"


class SessionStatus(StrEnum):
    """Terminal statuses; every session ends with exactly one."""

    OK = "ok"
    ERROR = "error"  # the code raised
    SYNTAX_ERROR = "syntax_error"
    EXITED = "exited"  # the code called sys.exit()
    NO_CODE = "no_code"
    MODEL_ERROR = "model_error"  # the model endpoint failed
    TIMEOUT = "timeout"
    INTERPRETER_DIED = "interpreter_died"
    LIMIT_EXCEEDED = "limit_exceeded"  # the sandbox killed the code for exceeding a resource limit (CPU time)
    CANCELLED = "cancelled"
    FAILED = "failed"  # the executor itself broke; detail says how
    REJECTED = "rejected"  # the request was malformed; detail says why


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    ERROR = "error"


class CodeStatus(StrEnum):
    COMPLETE = "complete"
    INVALID = "invalid"
    NO_CODE = "no_code"
    GENERATION_FAILED = "generation_failed"
    CANCELLED = "cancelled"  # generation was cut; the unfinished tail is not code anyone can run
    REJECTED = "rejected"  # the request itself was malformed


class Message:
    """Base of all messages; ``kind`` names the schema on the wire."""

    kind: ClassVar[str]


def _is_content(content: Any) -> bool:
    """A chat message's content as OpenAI-compatible endpoints take it: a string, or text and image parts
    (an agent hands a model the figures its code showed)."""
    if isinstance(content, str):
        return True
    return isinstance(content, list) and all(
        isinstance(part, dict) and (
            (part.get("type") == "text" and isinstance(part.get("text"), str))
            or (part.get("type") == "image_url" and isinstance(part.get("image_url"), dict)
                and isinstance(part["image_url"].get("url"), str)))
        for part in content)


def _calls_only(message: dict[str, Any]) -> bool:
    """An assistant message that only calls tools: its content is null, as the chat API writes it."""
    return (message.get("role") == "assistant" and message.get("content") is None
            and isinstance(message.get("tool_calls"), list) and bool(message["tool_calls"]))


class ToolShape(StrEnum):
    """How the model is asked for code through a tool, and how its call streams back."""

    CHAT = "chat"  # chat completions function tool: `choices[].delta.tool_calls[].function.arguments`, JSON
    RESPONSES = "responses"  # Responses API function tool: `response.function_call_arguments.delta`, JSON
    CUSTOM = "custom"  # Responses API free-form custom tool: `response.custom_tool_call_input.delta`, the code itself


_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what OpenAI accepts as a function name


@dataclass(frozen=True, slots=True)
class CodeTool:
    """The tool a session's code arrives through: its name, the string argument holding the code (function
    tools only) and the API shape. The producer declares it to the model and decodes its calls' code; other
    tool calls are reported, not run."""

    name: str = "python"
    argument: str = "code"
    shape: ToolShape = ToolShape.CHAT

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TOOL_NAME.fullmatch(self.name):
            raise ProtocolError(f"a code tool's name must be 1-64 of [A-Za-z0-9_-], not {self.name!r}")
        if not isinstance(self.argument, str) or not self.argument:
            raise ProtocolError(f"a code tool's argument must be a non-empty string, not {self.argument!r}")
        try:
            object.__setattr__(self, "shape", ToolShape(self.shape))
        except ValueError:
            raise ProtocolError(f"a code tool's shape is one of {[s.value for s in ToolShape]}, not {self.shape!r}") from None

    @classmethod
    def parse(cls, spec: str, shape: ToolShape | str = ToolShape.CHAT) -> CodeTool:
        """`NAME[:ARG]`, as `eager run --tool` takes it."""
        name, _, argument = spec.partition(":")
        return cls(name, argument or "code", ToolShape(shape))


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call the model made: the code tool's calls ran (their code, in order, is the program); any
    other call is reported here, not run."""

    kind: ClassVar[str] = "tool_call"
    index: int  # its place among the answer's tool calls, from 0
    name: str
    arguments: str  # as streamed: JSON for a function tool, the code itself for a custom one
    call_id: str | None = None  # the id a tool result message answers
    ran: bool = False


@dataclass(frozen=True, slots=True)
class SessionRequest(_Deadlined, Message):
    kind: ClassVar[str] = "request"
    session_id: str
    model: str
    submitted_ns: int
    gate: Gate = Gate.EAGER
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    batch_chunks: int | None = None  # gate `batch`: run when this many chunks wait (default: the executor's setting)
    batch_wait_ms: int | None = None  # gate `batch`: or when the oldest has waited this long
    stop: list[str] | None = None  # stop sequences, passed to the model as they are
    timeout_s: float | None = None  # the session's own wall-time limit (at most the deployment's)
    tool: CodeTool | None = None  # code arrives as this tool's calls (chat only), not in markdown
    deadline_ns: int | None = None  # stamped at submit (`stamped`); absent from an older client's request

    def __post_init__(self) -> None:
        check_session_id(self.session_id)
        self._check_deadline()
        if isinstance(self.tool, dict):
            try:
                object.__setattr__(self, "tool", CodeTool(**self.tool))
            except TypeError as exc:
                raise ProtocolError(f"bad `tool` {self.tool!r}: want {{name, argument, shape}} ({exc})") from None
        if self.tool is not None and not isinstance(self.tool, CodeTool):
            raise ProtocolError(f"`tool` must be a code tool {{name, argument, shape}}, not {self.tool!r}")
        if self.tool is not None and self.messages is None:
            raise ProtocolError("a code tool needs a chat request (`messages`): completions have no tools")
        if self.stop is not None and (not isinstance(self.stop, list) or not all(isinstance(s, str) and s for s in self.stop)):
            raise ProtocolError("`stop` must be a list of non-empty strings")
        for name, least in (("batch_chunks", 1), ("batch_wait_ms", 0)):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < least):
                raise ProtocolError(f"`{name}` must be an integer of at least {least}")
        if (self.messages is None) == (self.prompt is None):
            raise ProtocolError("a request has exactly one of `messages` (chat) or `prompt` (completion)")
        if self.messages is not None and (
            not isinstance(self.messages, list)
            or not self.messages
            or not all(isinstance(m, dict) and m.get("role") and (_is_content(m.get("content")) or _calls_only(m))
                       for m in self.messages)
        ):
            raise ProtocolError("`messages` must be a non-empty list of {role, content} objects, each content a "
                                "string or a list of OpenAI content parts (text, image_url), or null in an "
                                "assistant message with `tool_calls`")
        if not self.model:
            raise ProtocolError("a request needs a model name")
        object.__setattr__(self, "gate", Gate(self.gate))

    def stamped(self, cap_s: float) -> SessionRequest:
        """The request with its deadline fixed once, as its submitter's cap makes it."""
        return dataclasses.replace(self, deadline_ns=self.deadline_within(cap_s))

    def resubmitted(self, at_ns: int) -> SessionRequest:
        """The request submitted again at `at_ns` (a conversation's turn, timed from when it is sent), with
        the same allowance to its deadline."""
        deadline_ns = None if self.deadline_ns is None else self.deadline_ns - self.submitted_ns + at_ns
        return dataclasses.replace(self, submitted_ns=at_ns, deadline_ns=deadline_ns)

    def turn(self, execute: bool = True) -> TurnRequest:
        """The session as the executor runs it: its id, gate, timing and its own limits."""
        return TurnRequest(self.session_id, self.gate, self.submitted_ns, self.batch_chunks, self.batch_wait_ms,
                           self.timeout_s, execute, self.deadline_ns)

    @property
    def raw(self) -> bool:
        """Completion models answer with bare code, and so do code tools (the producer decodes their calls);
        chat models answer in markdown."""
        return self.prompt is not None or self.tool is not None


@dataclass(frozen=True, slots=True)
class Delta(Message):
    kind: ClassVar[str] = "delta"
    text: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class GenerationEnd(Message):
    kind: ClassVar[str] = "generation_end"
    finish_reason: FinishReason
    at_ns: int
    tokens: int
    first_token_ns: int | None = None
    usage: dict[str, Any] | None = None
    completion_id: str | None = None
    error: str | None = None
    cancel_latency_s: float | None = None  # from the cancel's publication to the closed HTTP stream
    tool_calls: list[ToolCall] = dataclasses.field(default_factory=list)  # a tool session's calls, in order

    def __post_init__(self) -> None:
        object.__setattr__(self, "finish_reason", FinishReason(self.finish_reason))
        if not isinstance(self.tool_calls, list):
            raise ProtocolError("`tool_calls` must be a list")
        object.__setattr__(self, "tool_calls", [_from_data(ToolCall, c) if isinstance(c, dict) else c
                                                for c in self.tool_calls])


@dataclass(frozen=True, slots=True)
class ChunkReady(Message):
    kind: ClassVar[str] = "chunk"
    seq: int
    start_line: int
    end_line: int
    code: str
    emitted_at: int  # characters of the answer received when the chunk was proven final
    delta_ns: int  # arrival of the delta that proved it
    detected_ns: int


@dataclass(frozen=True, slots=True)
class CodeInvalid(Message):
    """Published the moment a syntax error is provable, before generation ends."""

    kind: ClassVar[str] = "code_invalid"
    line: int
    message: str
    detected_ns: int
    error_type: str = "SyntaxError"  # or IndentationError / TabError, as CPython names it


@dataclass(frozen=True, slots=True)
class DetectionEnd(Message):
    """Always the last message of a chunk stream; relays how generation ended."""

    kind: ClassVar[str] = "detection_end"
    status: CodeStatus
    chunks: int
    generation: GenerationEnd
    detected_ns: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", CodeStatus(self.status))
        if isinstance(self.generation, dict):
            object.__setattr__(self, "generation", _from_data(GenerationEnd, self.generation))


@dataclass(frozen=True, slots=True)
class Cancel(Message):
    kind: ClassVar[str] = "cancel"
    reason: str
    by: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class SessionStarted(Message):
    kind: ClassVar[str] = "started"
    worker: str
    interpreter_pid: int
    gate: Gate
    at_ns: int
    warm: bool = False  # the interpreter came from the executor's warm pool
    isolation: str = "none"  # the sandbox layers the interpreter got, "+"-joined (executor_pool.sandbox.LAYERS), or "none"
    turn: int = 1  # the session's place in its conversation (1 for a lone session)
    kept_state: bool = False  # the interpreter carried over from the previous turn, with the names it defined


@dataclass(frozen=True, slots=True)
class TurnRequest(_Deadlined, Message):
    """The next turn of a conversation: its session, already submitted to the producer and detector."""

    kind: ClassVar[str] = "turn"
    session_id: str
    gate: Gate
    submitted_ns: int
    batch_chunks: int | None = None
    batch_wait_ms: int | None = None
    timeout_s: float | None = None
    execute: bool = True  # False: a turn that only talks (an agent's plan): its code is not run
    deadline_ns: int | None = None  # its request's stamped deadline; absent from an older client's

    def __post_init__(self) -> None:
        check_session_id(self.session_id)
        self._check_deadline()
        object.__setattr__(self, "gate", Gate(self.gate))


@dataclass(frozen=True, slots=True)
class SessionSpec(Message):
    """What an executor job runs: its one argument, in this module's codec, so it is versioned like every
    message and a newer executor reads an older one (or refuses it clearly) instead of unpacking positions.
    Its first turn is a TurnRequest; a conversation's later turns come on its `turns` stream."""

    kind: ClassVar[str] = "session_spec"
    first: TurnRequest
    conversation: str | None = None  # with a conversation, the job takes its later turns in the same interpreter
    setup: str | None = None  # run in every fresh interpreter of the conversation before its first turn
    max_turns: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.first, dict):  # decoded: the codec carries the turn as its fields
            object.__setattr__(self, "first", _from_data(TurnRequest, self.first))
        if not isinstance(self.first, TurnRequest):
            raise ProtocolError("a session spec's `first` must be a turn")
        if self.conversation is not None:
            check_session_id(self.conversation)
        if type(self.max_turns) is not int or self.max_turns < 1:
            raise ProtocolError("`max_turns` must be a positive integer")


@dataclass(frozen=True, slots=True)
class ConversationEnd(Message):
    """The client is done with the conversation: the executor frees its interpreter."""

    kind: ClassVar[str] = "conversation_end"
    reason: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class GateDecision(Message):
    """Why a chunk did not run as soon as the interpreter was free: held until the program is complete and
    valid (the reason names the call and its line), or merged with the next chunk (a definition)."""

    kind: ClassVar[str] = "gate_decision"
    seq: int
    start_line: int
    end_line: int
    action: GateAction
    reason: str
    preset: str
    line: int | None
    at_ns: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", GateAction(self.action))


@dataclass(frozen=True, slots=True)
class BatchStarted(Message):
    kind: ClassVar[str] = "batch_started"
    batch: int
    first_seq: int
    last_seq: int
    start_line: int
    end_line: int
    at_ns: int


@dataclass(frozen=True, slots=True)
class Output(Message):
    kind: ClassVar[str] = "output"
    batch: int
    stream: str
    text: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class Figure(Message):
    """A matplotlib figure the program showed (`plt.show()`, `fig.show()`), or left open at its end, as
    Jupyter returns them: a PNG, base64-encoded, in its place among the batch's Output."""

    kind: ClassVar[str] = "figure"
    batch: int
    number: int  # 1, 2, ... in the order the session's figures appeared
    png: str
    at_ns: int

    def image(self) -> bytes:
        return base64.b64decode(self.png)


@dataclass(frozen=True, slots=True)
class BatchFinished(Message):
    kind: ClassVar[str] = "batch_finished"
    batch: int
    ok: bool
    started_ns: int
    finished_ns: int


@dataclass(frozen=True, slots=True)
class ExecutionError(Message):
    kind: ClassVar[str] = "error"
    type: str
    message: str
    line: int | None
    traceback: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class Summary(Message):
    """The terminal event of every session: a client stops reading after it."""

    kind: ClassVar[str] = "summary"
    status: SessionStatus
    gate: Gate
    submitted_ns: int
    finished_ns: int
    stdout: str
    error: dict[str, Any] | None = None
    first_token_ns: int | None = None
    generation_end_ns: int | None = None
    execution_end_ns: int | None = None
    execution_busy_s: float = 0.0
    chunks: int = 0
    batches: int = 0
    finish_reason: str | None = None
    tokens: int | None = None
    detail: str | None = None
    started_ns: int | None = None  # when an executor took the session off its queue (None: none did)
    turn: int = 1
    interpreter_kept: bool = False  # the interpreter lives on for the conversation's next turn, with this turn's names

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", SessionStatus(self.status))
        object.__setattr__(self, "gate", Gate(self.gate))

    @property
    def e2e_s(self) -> float:
        """Request to the last execution result (or to the end, if nothing ran)."""
        end = self.execution_end_ns or self.finished_ns
        return (end - self.submitted_ns) / 1e9

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_ns is None else (self.first_token_ns - self.submitted_ns) / 1e9

    @property
    def generation_s(self) -> float | None:
        return None if self.generation_end_ns is None else (self.generation_end_ns - self.submitted_ns) / 1e9

    @property
    def queue_wait_s(self) -> float | None:
        """Request to an executor starting the session: the wait in the executor queue (backpressure)."""
        return None if self.started_ns is None else max(0.0, (self.started_ns - self.submitted_ns) / 1e9)

    @property
    def non_overlapped_s(self) -> float | None:
        """Execution time left after generation ended: what eager hides and serial pays in full."""
        if self.generation_end_ns is None or self.execution_end_ns is None:
            return None
        return max(0.0, (self.execution_end_ns - self.generation_end_ns) / 1e9)

    def report(self) -> dict[str, Any]:
        """The summary as users read it: raw fields plus the derived latencies."""
        return {
            **to_data(self),
            "e2e_s": self.e2e_s,
            "ttft_s": self.ttft_s,
            "generation_s": self.generation_s,
            "non_overlapped_s": self.non_overlapped_s,
            "queue_wait_s": self.queue_wait_s,
        }


_KINDS: dict[str, type[Message]] = {
    cls.kind: cls
    for cls in (
        SessionRequest, Delta, GenerationEnd, ChunkReady, CodeInvalid, DetectionEnd, Cancel,
        SessionStarted, GateDecision, BatchStarted, Output, Figure, BatchFinished, ExecutionError, Summary,
        TurnRequest, ConversationEnd, SessionSpec,
    )
}


# What `Session.events()` yields: the tokens, the chunks and the executor's events, in publication order.
SessionEvent = (Delta | GenerationEnd | ChunkReady | CodeInvalid | DetectionEnd | SessionStarted | GateDecision
                | BatchStarted | Output | Figure | BatchFinished | ExecutionError | Summary)


def to_data(message: Message) -> dict[str, Any]:
    """The message's fields as JSON-ready data, with its kind."""
    data = dataclasses.asdict(message)  # type: ignore[call-overload]
    data["kind"] = message.kind
    return data


def _from_data(cls: type[Message], data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"bad {cls.kind} message: {exc}") from exc


def _body(message: Message) -> str:
    return json.dumps({k: v for k, v in to_data(message).items() if k != "kind"}, separators=(",", ":"))


def encode(message: Message) -> dict[str, str]:
    """Stream fields: the version and kind stay readable in redis-cli; the body is JSON."""
    data = _body(message)
    if len(data) > MAX_BODY_CHARS:
        raise ProtocolError(f"a {message.kind} of {len(data)} characters is over the limit of {MAX_BODY_CHARS}")
    return {"v": str(SCHEMA_VERSION), "kind": message.kind, "data": data}


def clip(text: str, limit: int = ERROR_TEXT_CHARS) -> str:
    """`text`, or if it is longer than `limit` characters its head and tail around a visible marker: an
    error's message and traceback must fit a message, and both ends are what a reader looks at."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[eager: {len(text) - 2 * half} characters cut]\n{text[len(text) - half:]}"


def fitting(summary: Summary) -> Summary:
    """The summary as one message carries it: whole if it fits, else with as much of its stdout as fits
    (counted as encoded, escapes included) and a marker, `detail` saying so. The output events carried all
    of it; a summary that could not be sent would leave the client with no terminal event."""
    if len(_body(summary)) <= MAX_BODY_CHARS:
        return summary
    stdout = summary.stdout
    note = (f"the summary's stdout is cut to fit one message of {MAX_BODY_CHARS} characters; "
            "the output events carry all of it")
    marker = "\n[eager: stdout cut here to fit the summary; the output events carry all of it]\n"
    bare = dataclasses.replace(summary, stdout=marker, detail="; ".join(filter(None, (summary.detail, note))))
    budget = MAX_BODY_CHARS - len(_body(bare))
    low, high = 0, min(len(stdout), max(budget, 0))  # the longest prefix that fits is low to high characters
    while low < high:
        middle = (low + high + 1) // 2
        if len(json.dumps(stdout[:middle])) - 2 <= budget:
            low = middle
        else:
            high = middle - 1
    return dataclasses.replace(bare, stdout=stdout[:low] + marker)


def decode(fields: dict[str, str] | dict[bytes, bytes]) -> Message:
    """Read one stream entry; raise ProtocolError for anything not written by this schema."""
    fields = {(k.decode() if isinstance(k, bytes) else k): (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
              for k, v in fields.items()}
    version = fields.get("v")
    if version != str(SCHEMA_VERSION):
        raise ProtocolError(f"unsupported schema version {version!r} (this build speaks {SCHEMA_VERSION})")
    cls = _KINDS.get(fields.get("kind", ""))
    if cls is None:
        raise ProtocolError(f"unknown message kind {fields.get('kind')!r}")
    if len(fields.get("data", "")) > MAX_BODY_CHARS:
        raise ProtocolError(f"a {cls.kind} body over the limit of {MAX_BODY_CHARS} characters")
    try:
        data = json.loads(fields["data"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"bad {cls.kind} body: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"bad {cls.kind} body: not an object")
    return _from_data(cls, data)



def recover_session_id(fields: dict[str, str]) -> str | None:
    """The session id of a message that failed to decode, so its session can still be ended cleanly."""
    try:
        data = json.loads(fields.get("data", ""))
        return check_session_id(data["session_id"])
    except (ValueError, TypeError, KeyError, ProtocolError):
        return None
