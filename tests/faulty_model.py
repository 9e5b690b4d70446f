"""A model endpoint that misbehaves on purpose, over real HTTP: it stalls, fails, drops or garbles.

The model name picks the behaviour; `good` streams a short program properly, so a test can show the
stack serving the next session from the same endpoint.
"""

from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web

GOOD_ANSWER = "```python\nprint(6 * 7)\n```\n"
FIRST_PIECES = ["Here it is:\n\n```python\n", "print('partial')\n", "x = 1"]


def _chunk(text: str, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
    event = {"id": "faulty-1", "object": "chat.completion.chunk", "created": 0, "model": "faulty", "choices": [choice]}
    return f"data: {json.dumps(event)}\n\n".encode()


async def _chat(request: web.Request) -> web.StreamResponse:
    model = (await request.json()).get("model")
    if model == "http-500":
        return web.json_response({"error": {"message": "the model fell over", "type": "server_error"}}, status=500)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    if model == "good":
        await response.write(_chunk(GOOD_ANSWER))
        await response.write(_chunk("", "stop"))
        await response.write(b"data: [DONE]\n\n")
        return response
    for piece in FIRST_PIECES:
        await response.write(_chunk(piece))
    if model == "stall":
        await asyncio.Event().wait()  # headers and a few tokens, then nothing, forever
    elif model == "drop":
        request.transport.close()  # mid-stream, no end of the HTTP body
    elif model == "truncated":  # the body ends cleanly, the answer without a finish reason (llama.cpp past its context)
        await response.write(b"data: [DONE]\n\n")
    elif model == "malformed":
        await response.write(b"data: {\"choices\": [ this is not json\n\n")
        await asyncio.Event().wait()
    return response


class FaultyModel:
    """The server on a loopback port, in a thread of its own."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultyModel:
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", _chat)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
