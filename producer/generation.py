"""One session's generation: stream the model, publish every delta, stop the moment a cancel arrives.

Generation runs as an asyncio task beside a task blocked on the session's cancel
stream. A cancel cancels the generation task, which interrupts whatever await it is in
(even a read on a socket that has no token coming) and closes the HTTP response, so
the model server sees the disconnect at once instead of at the next token.

Cancelling a task is not enough on its own: redis-py swallows a CancelledError that
lands while it opens a connection (redis/redis-py#2028, #2551; still so in 8.1), and
the task then runs on. So both tasks also stop at `settled`, checked between awaits:
a swallowed cancel costs at most one bounded Redis read or one token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import openai
import redis.asyncio

from eager.common.clock import now_ns
from eager.common.config import Settings
from eager.common.connection import MAX_BLOCK_MS
from eager.common.protocol import Cancel, Delta, FinishReason, GenerationEnd, Keys, SessionRequest, ToolShape
from eager.common.streams import decode_entries, publish_async
from eager.producer.metrics import observe_generation
from eager.producer.tool_args import ToolArgumentsError
from eager.producer.tool_calls import ToolCallStream
from eager.producer.tools import declaration, responses_input

log = logging.getLogger(__name__)


def model_client(settings: Settings) -> openai.AsyncOpenAI:
    """No retries: a retry would replay tokens the detector already has."""
    timeout = openai.Timeout(settings.model_timeout_s, connect=min(5.0, settings.model_timeout_s))
    return openai.AsyncOpenAI(
        base_url=settings.model_base_url, api_key=settings.model_api_key, timeout=timeout, max_retries=0
    )


@dataclass
class Generation:
    redis: redis.asyncio.Redis
    model: openai.AsyncOpenAI
    keys: Keys
    settings: Settings
    request: SessionRequest
    tokens: int = 0
    first_token_ns: int | None = None
    finish_reason: FinishReason | None = None  # as the model reported it; None until it does
    usage: dict | None = None
    completion_id: str | None = None
    cancelled_by: str | None = None
    tool_calls: ToolCallStream | None = None  # a code tool session's calls, decoded
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # the outcome is known: both tasks stop

    async def run(self) -> GenerationEnd:
        """Generate to the end, to a cancel, to an error or to the session deadline; publish the end marker."""
        started_ns = now_ns()
        if self.request.tool is not None:
            self.tool_calls = ToolCallStream(self.request.tool)
        stream_task = asyncio.create_task(self._stream())
        cancel_task = asyncio.create_task(self._await_cancel())
        try:
            error, cancel_latency_s = await self._settle(stream_task, cancel_task)
        finally:
            self.settled.set()
            stream_task.cancel()
            cancel_task.cancel()
        calls = []
        if self.tool_calls is not None:
            calls, tool_error = self.tool_calls.finish(cut=self.finish_reason is FinishReason.CANCELLED or error is not None,
                                                       limit=self.finish_reason is FinishReason.LENGTH)
            error = error or tool_error
        if error is not None:
            self.finish_reason = FinishReason.ERROR
        end = GenerationEnd(
            finish_reason=self.finish_reason or FinishReason.STOP, at_ns=now_ns(), tokens=self.tokens, first_token_ns=self.first_token_ns,
            usage=self.usage, completion_id=self.completion_id, error=error, cancel_latency_s=cancel_latency_s,
            tool_calls=calls,
        )
        await publish_async(self.redis, self.keys.tokens(self.request.session_id), [end], self.settings.key_ttl_s)
        observe_generation(self.request.model, started_ns, end, self.cancelled_by, self.request.max_tokens)
        await asyncio.gather(cancel_task, return_exceptions=True)  # after the end is out: it never waits on this
        return end

    async def _settle(self, stream_task: asyncio.Task, cancel_task: asyncio.Task) -> tuple[str | None, float | None]:
        """Wait for whichever comes first; returns (error, seconds from the cancel to the closed stream)."""
        remaining = (self.request.deadline_within(self.settings.session_timeout_s) - now_ns()) / 1e9
        done, _ = await asyncio.wait({stream_task, cancel_task}, timeout=max(remaining, 0.0),
                                     return_when=asyncio.FIRST_COMPLETED)
        if stream_task in done:
            return stream_task.result(), None
        self.settled.set()
        stream_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stream_task
        if cancel_task not in done:
            return f"session exceeded {self.request.allowance_s(self.settings.session_timeout_s)} s during generation", None
        cancel = cancel_task.result()
        self.cancelled_by = cancel.by
        self.finish_reason = FinishReason.CANCELLED
        cancel_latency_s = (now_ns() - cancel.at_ns) / 1e9
        log.info("session %s cancelled by %s after %d tokens (%.1f ms to close)",
                 self.request.session_id, cancel.by, self.tokens, cancel_latency_s * 1e3)
        return None, cancel_latency_s

    async def _await_cancel(self) -> Cancel | None:
        key, cursor = self.keys.cancel(self.request.session_id), "0-0"
        while not self.settled.is_set():
            for _, entry_id, message in decode_entries(await self.redis.xread({key: cursor}, count=1, block=MAX_BLOCK_MS)):
                cursor = entry_id
                if isinstance(message, Cancel):
                    return message
        return None

    async def _open(self):  # type: ignore[no-untyped-def]
        request = self.request
        common = {"model": request.model, "stream": True, "max_tokens": request.max_tokens,
                  "temperature": request.temperature, "stop": request.stop, "stream_options": {"include_usage": True}}
        common = {k: v for k, v in common.items() if v is not None}
        tool = request.tool
        if tool is not None and tool.shape is not ToolShape.CHAT:
            return await self.model.responses.create(
                model=request.model, stream=True, input=responses_input(request.messages or []), tools=[declaration(tool)],
                **{k: v for k, v in (("max_output_tokens", request.max_tokens), ("temperature", request.temperature))
                   if v is not None})
        if tool is not None:
            return await self.model.chat.completions.create(messages=request.messages, tools=[declaration(tool)], **common)
        if request.messages is not None:
            return await self.model.chat.completions.create(messages=request.messages, **common)
        return await self.model.completions.create(prompt=request.prompt, **common)

    async def _stream(self) -> str | None:
        """Publish deltas as they arrive; return an error message, or None when the model finished."""
        try:
            stream = await self._open()
            try:
                async for event in stream:
                    if self.settled.is_set():
                        return None
                    await self._receive(event)
            finally:
                await stream.close()
            if self.finish_reason is None:
                # the body ended cleanly but the answer did not: llama.cpp's server does this when the prompt
                # is longer than its context window (it logs the error and closes the stream)
                return (f"model stream ended after {self.tokens} tokens without a finish reason: the endpoint "
                        "failed mid-answer (a prompt longer than the model's context window does this)")
        except openai.APIStatusError as exc:
            return f"model endpoint answered HTTP {exc.status_code}: {exc.message}"
        except openai.APITimeoutError:
            return f"model endpoint {self.settings.model_base_url} sent nothing for {self.settings.model_timeout_s} s"
        except openai.APIConnectionError as exc:
            if self.tokens:
                return f"model stream broke after {self.tokens} tokens: {exc.__cause__ or exc}"
            return f"model endpoint {self.settings.model_base_url} unreachable: {exc.__cause__ or exc}"
        except openai.OpenAIError as exc:
            return f"model endpoint failed: {exc}"
        except ToolArgumentsError as exc:
            return f"tool call {self.tool_calls.calls - 1 if self.tool_calls else 0}: {exc}"
        except ValueError as exc:  # the client raises JSONDecodeError itself on an event that is not JSON
            return f"model stream broke after {self.tokens} tokens: malformed event ({exc})"
        return None

    async def _receive(self, event) -> None:  # type: ignore[no-untyped-def]
        if self.tool_calls is not None and self.request.tool.shape is not ToolShape.CHAT:
            await self._publish(self._response_event(event))
            return
        self.completion_id = self.completion_id or getattr(event, "id", None)
        if getattr(event, "usage", None) is not None:
            self.usage = event.usage.model_dump()
        for choice in event.choices:
            text = choice.delta.content if hasattr(choice, "delta") else choice.text
            if choice.finish_reason is not None:  # "length" is kept; any other reason (tool calls, filters) is an end
                self.finish_reason = FinishReason.LENGTH if choice.finish_reason == "length" else FinishReason.STOP
            if self.tool_calls is not None:  # prose and reasoning beside the calls are never code
                text = "".join(self.tool_calls.piece(call.index, (call.function and call.function.arguments) or "",
                                                     call.function and call.function.name, call.id)
                               for call in choice.delta.tool_calls or ())
            await self._publish(text)

    def _response_event(self, event) -> str:  # type: ignore[no-untyped-def]
        """One Responses API event: the code it adds (a code tool call's argument or input piece)."""
        assert self.tool_calls is not None
        kind = event.type
        if kind in ("response.created", "response.completed", "response.incomplete", "response.failed"):
            response = event.response
            self.completion_id = response.id
            if response.usage is not None:
                self.usage = response.usage.model_dump()
            if kind == "response.completed":
                self.finish_reason = FinishReason.STOP
            elif kind == "response.incomplete":
                self.finish_reason = FinishReason.LENGTH
            elif kind == "response.failed":
                raise openai.OpenAIError(f"the response failed: {response.error}")
        elif kind == "response.output_item.added" and event.item.type in ("function_call", "custom_tool_call"):
            return self.tool_calls.start(event.output_index, event.item.name, event.item.call_id)
        elif kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            return self.tool_calls.piece(event.output_index, event.delta)
        elif kind == "response.output_item.done" and event.item.type in ("function_call", "custom_tool_call"):
            item = event.item
            self.tool_calls.complete(event.output_index, item.arguments if item.type == "function_call" else item.input)
        elif kind == "error":
            raise openai.OpenAIError(f"the model stream reported an error: {event.message}")
        return ""

    async def _publish(self, text: str | None) -> None:
        if text:
            at = now_ns()
            if self.first_token_ns is None:
                self.first_token_ns = at
            self.tokens += 1
            await publish_async(self.redis, self.keys.tokens(self.request.session_id),
                                [Delta(text, at)], self.settings.key_ttl_s)
