"""Replay model: an OpenAI-compatible streaming server that replays recorded answers.

Benchmarks of "serial" vs "eager" execution are only comparable if both see the
same tokens at the same times.  A live LLM gives neither, so this server stands
in for one: it holds named answers (a list of them per name scripts a conversation:
a chat request with k assistant messages gets answer k), splits each into token-sized pieces and
streams them on a seeded, absolute schedule (``ttft + i / tokens_per_s``, with
optional jitter).  It speaks the OpenAI wire format so the real ``openai``
client -- and therefore the real producer code -- can be pointed at it.

It also keeps a per-request record of how many pieces were actually written
before the client went away, so tests and benchmarks can verify that an eager
run which cancels generation early really stopped the stream.

Public API:

* :func:`tokenize_answer` -- lossless split of text into ~4-character pieces.
* :class:`SpeedProfile` / :func:`schedule_offsets` -- the deterministic timing.
* :class:`ReplayRecord` -- cancellation accounting for one request.
* :func:`create_app` -- the aiohttp application.
* :func:`run_server` -- blocking runner for the CLI.
* :class:`ReplayServer` -- background-thread runner (context manager) for tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import math
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

__all__ = [
    "Recording",
    "ReplayRecord",
    "ReplayServer",
    "SpeedProfile",
    "create_app",
    "run_server",
    "schedule_offsets",
    "tokenize_answer",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- tokens

# Every character is \w, \s or [^\w\s], and each class has an alternative that
# matches a single such character, so a match starts at every position and
# consecutive finditer() matches tile the whole string: "".join(pieces) == text.
_TOKEN_RE = re.compile(r"[ \t]*\w{1,4}|[ \t]*[^\w\s]{1,3}|\r?\n|\s")


def tokenize_answer(text: str) -> list[str]:
    """Split ``text`` into token-sized pieces (about 4 characters each).

    Real tokenizers are model-specific; what matters for replay is a realistic
    piece size that respects word/punctuation boundaries and is *lossless*, so
    the client reassembles exactly the recorded answer.  Leading spaces/tabs
    stick to the following word like BPE tokens do; newlines are their own piece.
    """
    pieces = [m.group() for m in _TOKEN_RE.finditer(text)]
    # Cheap guard for the invariant the regex argument above promises.
    if sum(map(len, pieces)) != len(text):  # pragma: no cover - defensive
        raise AssertionError("tokenize_answer lost characters")
    return pieces


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class SpeedProfile:
    """How fast the replayed model "generates".

    ``ttft_s`` is the time to the first token; later tokens follow at
    ``tokens_per_s`` (``math.inf`` = no delay).  Each inter-token gap is scaled
    by a factor drawn uniformly from ``[1 - jitter, 1 + jitter]`` using a
    ``random.Random(seed)`` that is re-created per request, so every request
    (serial or eager) sees the identical schedule.
    """

    ttft_s: float = 0.3
    tokens_per_s: float = 50.0
    jitter: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.ttft_s >= 0:
            raise ValueError(f"ttft_s must be >= 0, got {self.ttft_s!r}")
        if not self.tokens_per_s > 0:
            raise ValueError(f"tokens_per_s must be > 0, got {self.tokens_per_s!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter!r}")


def schedule_offsets(n_tokens: int, profile: SpeedProfile) -> list[float]:
    """Seconds after request start at which each of ``n_tokens`` pieces is due.

    The schedule is absolute (offsets from one start time, accumulated in
    advance) so a late wake-up for one token does not push back all later ones.
    Offset 0 is exactly ``ttft_s``; only the inter-token gaps are jittered.
    """
    rng = random.Random(profile.seed)
    gap = 0.0 if math.isinf(profile.tokens_per_s) else 1.0 / profile.tokens_per_s
    offsets: list[float] = []
    t = profile.ttft_s
    for i in range(n_tokens):
        if i:
            factor = rng.uniform(1.0 - profile.jitter, 1.0 + profile.jitter)
            t += gap * factor
        offsets.append(t)
    return offsets


@dataclass(frozen=True)
class Recording:
    """A real model's answer as it streamed: its pieces and when each arrived, in seconds from the request.

    Replayed as it is (the speed profile does not apply), so serial and eager see the very tokens at the
    very times the model produced them, and an A/B of the two gates on a real model is exact."""

    pieces: tuple[str, ...]
    offsets: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.pieces) != len(self.offsets):
            raise ValueError(f"{len(self.pieces)} pieces but {len(self.offsets)} arrival times")
        if any(t < 0 for t in self.offsets) or list(self.offsets) != sorted(self.offsets):
            raise ValueError("arrival times must be non-negative and in order")

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def until(self, length: int) -> Recording:
        """The pieces that hold the text's first `length` characters (a stop sequence cuts there)."""
        kept, total = [], 0
        for piece in self.pieces:
            if total >= length:
                break
            kept.append(piece[:length - total])
            total += len(kept[-1])
        return Recording(tuple(kept), self.offsets[:len(kept)])


Answer = str | Recording


def _timed_pieces(answer: Answer, profile: SpeedProfile) -> tuple[list[str], list[float]]:
    """An answer's pieces and when each is due: a recording's own times, else the profile's schedule."""
    if isinstance(answer, Recording):
        return list(answer.pieces), list(answer.offsets)
    tokens = tokenize_answer(answer)
    return tokens, schedule_offsets(len(tokens), profile)


# --------------------------------------------------------------------------- records


@dataclass
class ReplayRecord:
    """What happened to one request; served at ``GET /v1/replays/<id>``.

    ``tokens_sent`` counts pieces whose write to the transport succeeded, so
    after a client disconnect it says exactly how far generation got before the
    server noticed (at the next write) and stopped.
    """

    id: str
    model: str
    endpoint: str  # "chat.completions" | "completions"
    stream: bool
    tokens_total: int
    messages: list[dict[str, Any]] | None = None  # the chat request's messages: what the model was told
    tokens_sent: int = 0
    disconnected: bool = False
    finished: bool = False
    created: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _State:
    """Per-application mutable state (lives on the server's event loop)."""

    answers: dict[str, list[Answer]]  # by model: one answer per turn of a conversation
    profile: SpeedProfile
    records: dict[str, ReplayRecord] = dataclasses.field(default_factory=dict)
    counter: itertools.count[int] = dataclasses.field(
        default_factory=lambda: itertools.count(1)
    )
    streams: set[asyncio.Task[Any]] = dataclasses.field(default_factory=set)
    ended: dict[str, asyncio.Event] = dataclasses.field(default_factory=dict)  # by record id


_STATE = web.AppKey("replay_state", _State)


# --------------------------------------------------------------------------- helpers


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def _error(status: int, message: str, code: str, param: str | None = None) -> web.Response:
    """OpenAI-style error body, so the openai client raises its typed errors."""
    err_type = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": err_type, "param": param, "code": code}}
    return web.json_response(body, status=status)


def _select_answer(state: _State, body: dict[str, Any]) -> tuple[str, Answer]:
    """The model's answer for this turn: a chat with k assistant messages gets answer k (or the last one),
    cut before the first of the request's stop sequences, as a real server stops."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest(400, "'model' must be a non-empty string", "invalid_value", "model")
    turns = state.answers.get(model)
    if turns is None and len(state.answers) == 1:
        turns = next(iter(state.answers.values()))
    if turns is not None:
        messages = body.get("messages") or []
        answer = turns[min(sum(1 for m in messages if m.get("role") == "assistant"), len(turns) - 1)]
        return model, _until_stop(answer, body.get("stop"))
    raise _BadRequest(
        404,
        f"The model '{model}' does not exist; known: {sorted(state.answers)}",
        "model_not_found",
        "model",
    )


def _until_stop(answer: Answer, stop: Any) -> Answer:
    text = answer.text if isinstance(answer, Recording) else answer
    sequences = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    cuts = [text.find(s) for s in sequences if isinstance(s, str) and s and s in text]
    if not cuts:
        return answer
    return answer.until(min(cuts)) if isinstance(answer, Recording) else answer[:min(cuts)]


def _text_of(value: Any) -> str:
    """Flatten prompt/message content (str or list of parts) for usage counts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_text_of(v) for v in value)
    if isinstance(value, dict):
        return _text_of(value.get("text", value.get("content", "")))
    return ""


async def _parse(request: web.Request, chat: bool, responses: bool = False) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _BadRequest(400, f"request body is not valid JSON: {exc}", "invalid_json")
    if not isinstance(body, dict):
        raise _BadRequest(400, "request body must be a JSON object", "invalid_json")
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
            raise _BadRequest(
                400, "'messages' must be a non-empty list of objects", "invalid_value", "messages"
            )
    elif not responses:
        if not isinstance(body.get("prompt"), (str, list)):
            raise _BadRequest(400, "'prompt' must be a string or list", "invalid_value", "prompt")
    return body


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


# --------------------------------------------------------------------------- handlers


async def _completion(request: web.Request, chat: bool, responses: bool = False) -> web.StreamResponse:
    """Shared handler for /v1/chat/completions, /v1/completions and /v1/responses (code tool calls only)."""
    from eager import replay_tools  # it builds on this module's tokens

    state = request.app[_STATE]
    try:
        body = await _parse(request, chat, responses)
        if responses:
            body["messages"] = [{"role": "assistant"}] * replay_tools.responses_turn(body)
        model, answer = _select_answer(state, body)
        tool = replay_tools.requested_tool(body, responses)
        if responses and tool is None:
            raise _BadRequest(400, "the replay serves /v1/responses for code tool calls only: declare a tool",
                              "invalid_value", "tools")
    except replay_tools.ToolRequestError as exc:
        return _error(400, str(exc), "invalid_value", "tools")
    except _BadRequest as exc:
        return _error(exc.status, exc.message, exc.code, exc.param)

    if isinstance(answer, Recording) and tool is not None:
        return _error(400, "a recording replays as it streamed, as text: not as tool calls", "invalid_value", "tools")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tokens, offsets = _timed_pieces(answer, state.profile)
    text = "".join(tokens)
    rid = f"replay-{next(state.counter)}"
    created = int(time.time())
    stream = bool(body.get("stream"))
    record = ReplayRecord(
        id=rid,
        model=model,
        endpoint="responses" if responses else "chat.completions" if chat else "completions",
        stream=stream,
        tokens_total=len(tokens),
        messages=body.get("input") if responses else body.get("messages") if chat else None,
        created=created,
    )
    state.records[rid] = record
    state.ended[rid] = asyncio.Event()
    # Usage is in replay tokens (our pieces), not any real model's tokenizer.
    n_prompt = len(tokenize_answer(_text_of(body.get("messages") if chat else body.get("prompt"))))
    usage = {
        "prompt_tokens": n_prompt,
        "completion_tokens": len(tokens),
        "total_tokens": n_prompt + len(tokens),
    }
    logger.debug("%s: model=%s stream=%s tokens=%d", rid, model, stream, len(tokens))

    if not stream:
        # Non-streaming clients still wait for the whole "generation", so a
        # serial baseline pays the same latency as it would with a real model.
        if offsets:
            await asyncio.sleep(max(0.0, t0 + offsets[-1] - loop.time()))
        else:
            await asyncio.sleep(max(0.0, t0 + state.profile.ttft_s - loop.time()))
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        record.tokens_sent = len(tokens)
        record.finished = True
        state.ended[rid].set()
        return web.json_response(
            {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
        )

    opts = body.get("stream_options")
    include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(piece: str | None, first: bool, finish: str | None = None) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if piece is not None:
                delta["content"] = piece
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": piece or "", "finish_reason": finish, "logprobs": None}
        out: dict[str, Any] = {
            "id": rid, "object": obj, "created": created, "model": model, "choices": [choice],
        }
        if include_usage:
            out["usage"] = None
        return out

    if tool is None:
        slots = [[chunk(piece, first=i == 0)] for i, piece in enumerate(tokens)]
        tail = [chunk(None, first=False, finish="stop")]
        if include_usage:
            tail.append({"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": usage})
    else:
        frame = {"id": rid, "object": obj, "created": created, "model": model, **({"usage": None} if include_usage else {})}
        response = {"id": rid, "object": "response", "created_at": created, "model": model}
        slots = (replay_tools.responses_slots(text, tool, response, usage) if responses
                 else replay_tools.chat_slots(text, tool, frame))
        tail = slots.pop()
        limit = body.get("max_output_tokens" if responses else "max_tokens")
        if type(limit) is int and 0 < limit < len(slots):
            slots = slots[:limit]
            tail = replay_tools.limit_reached(slots, response, usage) if responses else replay_tools.chat_limit_reached(frame)
        if include_usage and not responses:
            tail.append({**frame, "choices": [], "usage": usage})
        offsets = schedule_offsets(len(slots), state.profile)
    record.tokens_total = len(slots)

    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    task = asyncio.current_task()
    if task is not None:
        state.streams.add(task)
    try:
        # Headers go out immediately; the first token follows after ttft.
        await resp.prepare(request)
        if not slots and tool is None:  # empty answer: still announce the role, at ttft
            await asyncio.sleep(max(0.0, t0 + state.profile.ttft_s - loop.time()))
            await resp.write(_sse(chunk("", first=True)))
        for payloads, due in zip(slots, offsets):
            await asyncio.sleep(max(0.0, t0 + due - loop.time()))
            await resp.write(b"".join(map(_sse, payloads)))
            record.tokens_sent += 1
        await resp.write(b"".join(map(_sse, tail)))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        record.finished = True
    except ConnectionResetError:
        # aiohttp raises ClientConnectionResetError (a ConnectionResetError) on
        # the first write after the peer closed: that is the cancellation signal.
        record.disconnected = True
        logger.info("%s: client went away after %d/%d tokens", rid, record.tokens_sent,
                    record.tokens_total)
    except asyncio.CancelledError:
        # Server shutdown (or handler cancellation, if enabled) -- not a client
        # choice, but the stream did stop early.
        if request.transport is None or request.transport.is_closing():
            record.disconnected = True
        raise
    finally:
        if task is not None:
            state.streams.discard(task)
        state.ended[rid].set()
    return resp


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _completion(request, chat=True)


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _completion(request, chat=False)


async def _responses(request: web.Request) -> web.StreamResponse:
    return await _completion(request, chat=False, responses=True)


async def _models(request: web.Request) -> web.Response:
    names = request.app[_STATE].answers
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "replay"} for n in names]
    return web.json_response({"object": "list", "data": data})


async def _replays(request: web.Request) -> web.Response:
    records = request.app[_STATE].records.values()
    return web.json_response({"object": "list", "data": [r.to_json() for r in records]})


async def _replay(request: web.Request) -> web.Response:
    rid = request.match_info["rid"]
    record = request.app[_STATE].records.get(rid)
    if record is None:
        return _error(404, f"no replay with id '{rid}'", "not_found", "id")
    return web.json_response(record.to_json())


async def _health(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _cancel_streams(app: web.Application) -> None:
    """On shutdown, stop in-flight streams instead of waiting for them to end."""
    for task in list(app[_STATE].streams):
        task.cancel()


Answers = Mapping[str, Answer | Sequence[Answer]]


def create_app(answers: Answers, profile: SpeedProfile | None = None) -> web.Application:
    """Build the aiohttp application serving ``answers`` (one per model, or a list: one per turn) at ``profile``."""
    turns = {name: [answer] if isinstance(answer, str | Recording) else list(answer)
             for name, answer in answers.items()}
    if not turns or not all(turns.values()):
        raise ValueError("answers must not be empty")
    app = web.Application()
    app[_STATE] = _State(answers=turns, profile=profile or SpeedProfile())
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/responses", _responses)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/replays", _replays)
    app.router.add_get("/v1/replays/{rid}", _replay)
    app.router.add_get("/health", _health)
    app.on_shutdown.append(_cancel_streams)
    return app


# --------------------------------------------------------------------------- runners

_SHUTDOWN_TIMEOUT_S = 5.0


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1])
    return runner, bound


def _base_url(host: str, port: int) -> str:
    h = f"[{host}]" if ":" in host else host
    return f"http://{h}:{port}/v1"


def run_server(
    answers: Answers,
    profile: SpeedProfile,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (blocking; for the CLI).

    With ``port=0`` the OS picks a port, so ``on_ready(base_url)`` is how the
    caller learns where the server is (the URL is also logged at INFO).
    """

    async def serve() -> None:
        runner, bound = await _start(create_app(answers, profile), host, port)
        url = _base_url(host, bound)
        logger.info("replay server on %s (%d answers)", url, len(answers))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread / not supported: rely on KeyboardInterrupt
        try:
            if on_ready is not None:
                on_ready(url)
            await stop.wait()
        finally:
            await runner.cleanup()
            logger.info("replay server stopped")

    asyncio.run(serve())


class ReplayServer:
    """Run the replay server on a background thread with its own event loop.

    For tests and in-process benchmarks: binds an ephemeral loopback port on
    ``__enter__`` and stops (cancelling any in-flight streams) on ``__exit__``.
    """

    def __init__(self, answers: Answers, profile: SpeedProfile | None = None) -> None:
        self._app = create_app(answers, profile)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int = 0

    @property
    def base_url(self) -> str:
        """OpenAI ``base_url`` for this server, e.g. ``http://127.0.0.1:PORT/v1``."""
        if not self.port:
            raise RuntimeError("ReplayServer is not running")
        return _base_url("127.0.0.1", self.port)

    def replays(self) -> dict[str, dict[str, Any]]:
        """Snapshot of all request records, by id (taken on the server loop)."""
        if self._loop is None:
            raise RuntimeError("ReplayServer is not running")
        records = self._app[_STATE].records

        async def snap() -> dict[str, dict[str, Any]]:
            return {rid: r.to_json() for rid, r in records.items()}

        return asyncio.run_coroutine_threadsafe(snap(), self._loop).result(timeout=10)

    def ended(self, model: str, timeout: float = 10.0) -> dict[str, Any]:
        """The record of the first request for `model`, once its stream has ended.

        A cancelled stream ends when the server notices the disconnect, at its next
        write: a test that asserts on a cut must wait for that, not for the client.
        """
        if self._loop is None:
            raise RuntimeError("ReplayServer is not running")
        state = self._app[_STATE]

        async def wait() -> dict[str, Any]:
            rid = next((rid for rid, r in state.records.items() if r.model == model), None)
            if rid is None:
                raise LookupError(f"no request for model {model!r} reached the replay server")
            async with asyncio.timeout(timeout):
                await state.ended[rid].wait()
            return state.records[rid].to_json()

        return asyncio.run_coroutine_threadsafe(wait(), self._loop).result(timeout=timeout + 5)

    def start(self) -> ReplayServer:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="replay-server", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            fut = asyncio.run_coroutine_threadsafe(_start(self._app, "127.0.0.1", 0), loop)
            self._runner, self.port = fut.result(timeout=10)
        except BaseException:
            self.stop()
            raise
        logger.info("replay server on %s", self.base_url)
        return self

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        try:
            if runner is not None:
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(
                    timeout=_SHUTDOWN_TIMEOUT_S + 5
                )
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = self._runner = None
            self.port = 0

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
