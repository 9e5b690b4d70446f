"""Tests for the replay model (eager/replay.py).

Everything goes over real loopback HTTP with the real ``openai`` client, because
the point of the replay server is that production client code cannot tell it
apart from a real OpenAI-compatible endpoint.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from eager.common.config import Settings
from eager.replay import ReplayServer, SpeedProfile, schedule_offsets, tokenize_answer
from eager.replay_stack import replay_model
from tests.helpers import eventually

CODE_ANSWER = (
    "Here is the code:\n\n```python\nimport math\n\ndef area(r: float) -> float:\n"
    "    return math.pi * r ** 2\n\nprint(area(2.0))\n```\nDone — ünïcödé 🎉.\r\n"
)
OTHER_ANSWER = "The other answer, short and sweet."
LONG_ANSWER = " ".join(f"word{i}" for i in range(400))  # ~800 tokens

FAST = SpeedProfile(ttft_s=0.0, tokens_per_s=5000.0)


# --------------------------------------------------------------------------- helpers


def _client(server: ReplayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="replay", max_retries=0, timeout=10)


def _aclient(server: ReplayServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=server.base_url, api_key="replay", max_retries=0, timeout=10
    )


def _http(
    server: ReplayServer, method: str, path: str, body: bytes | None = None
) -> tuple[int, Any]:
    """Raw request to ``/v1<path>`` (or ``/health``); returns (status, parsed JSON)."""
    root = server.base_url.removesuffix("/v1")
    url = root + path
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _wait_settled(server: ReplayServer, rid: str, deadline_s: float = 5.0) -> dict[str, Any]:
    """The record once the stream is finished or disconnected."""
    def settled() -> dict[str, Any] | None:
        status, rec = _http(server, "GET", f"/v1/replays/{rid}")
        assert status == 200, rec
        return rec if rec["finished"] or rec["disconnected"] else None

    return eventually(settled, f"record {rid} settled", deadline_s, every_s=0.01)


@pytest.fixture(scope="module")
def fast() -> Iterator[ReplayServer]:
    with ReplayServer({"code": CODE_ANSWER, "other": OTHER_ANSWER}, FAST) as srv:
        yield srv


# --------------------------------------------------------------------------- tokenizer


def test_tokenize_round_trip_random_strings() -> None:
    alphabet = (
        "abcXYZ019_ \t\n\r\r\n.,;:!?()[]{}<>=+-*/#'\"\\`~@$%^&|"
        "éüßñ中文日本語🎉🐍\u0301\u200b\u00a0\u2028\x00\x0b\x0c"
    )
    rng = random.Random(1234)
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        pieces = tokenize_answer(text)
        assert "".join(pieces) == text
        assert all(pieces), "no empty pieces"
    assert tokenize_answer("") == []


def test_tokenize_piece_shape() -> None:
    pieces = tokenize_answer(CODE_ANSWER)
    assert "".join(pieces) == CODE_ANSWER
    assert "\r\n" in pieces  # CRLF stays one piece
    # Pieces are token-sized: at most 4 word chars / 3 symbols plus leading blanks.
    assert all(len(p.lstrip(" \t")) <= 4 for p in pieces)
    prose = "The replay server splits answers into pieces, roughly like a tokenizer would."
    assert 3 <= len(prose) / len(tokenize_answer(prose)) <= 5


# --------------------------------------------------------------------------- schedule


def test_schedule_no_jitter_is_exact() -> None:
    prof = SpeedProfile(ttft_s=0.2, tokens_per_s=100.0)
    offs = schedule_offsets(5, prof)
    assert offs == pytest.approx([0.2, 0.21, 0.22, 0.23, 0.24])
    assert schedule_offsets(0, prof) == []


def test_schedule_same_seed_same_schedule() -> None:
    a = SpeedProfile(ttft_s=0.1, tokens_per_s=40.0, jitter=0.5, seed=7)
    assert schedule_offsets(200, a) == schedule_offsets(200, a)
    assert schedule_offsets(200, a) != schedule_offsets(
        200, SpeedProfile(ttft_s=0.1, tokens_per_s=40.0, jitter=0.5, seed=8)
    )
    offs = schedule_offsets(200, a)
    assert offs[0] == 0.1
    gaps = [b - x for x, b in zip(offs, offs[1:])]
    assert all(0.5 / 40 - 1e-12 <= g <= 1.5 / 40 + 1e-12 for g in gaps)
    assert len(set(gaps)) > 1  # jitter actually applied


def test_speed_profile_validation() -> None:
    with pytest.raises(ValueError):
        SpeedProfile(tokens_per_s=0)
    with pytest.raises(ValueError):
        SpeedProfile(jitter=1.5)
    with pytest.raises(ValueError):
        SpeedProfile(ttft_s=-1)


# --------------------------------------------------------------------------- streaming


def test_chat_stream_yields_exact_answer(fast: ReplayServer) -> None:
    chunks = list(
        _client(fast).chat.completions.create(
            model="code", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == CODE_ANSWER
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("replay-")
    rec = _wait_settled(fast, chunks[0].id)
    assert rec["finished"] and not rec["disconnected"]
    assert rec["tokens_sent"] == rec["tokens_total"] == len(tokenize_answer(CODE_ANSWER))


def test_completions_stream_and_model_selection(fast: ReplayServer) -> None:
    chunks = list(_client(fast).completions.create(model="other", prompt="x", stream=True))
    assert chunks[0].object == "text_completion"
    assert "".join(c.choices[0].text for c in chunks) == OTHER_ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_usage_chunk(fast: ReplayServer) -> None:
    chunks = list(
        _client(fast).chat.completions.create(
            model="other",
            messages=[{"role": "user", "content": "count me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == len(tokenize_answer(OTHER_ANSWER))
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_non_stream_chat_and_completions(fast: ReplayServer) -> None:
    client = _client(fast)
    chat = client.chat.completions.create(
        model="code", messages=[{"role": "user", "content": "hi"}]
    )
    assert chat.choices[0].message.content == CODE_ANSWER
    assert chat.choices[0].finish_reason == "stop"
    comp = client.completions.create(model="other", prompt="x")
    assert comp.choices[0].text == OTHER_ANSWER
    assert chat.id != comp.id


LINE_ENDS_ANSWER = "x = 1\ry = 2\r\nz = '''\ra\r\nb'''\n\r\r\n\n\rprint(x)\r"


def test_every_line_end_is_streamed_as_written_on_both_endpoints() -> None:
    """A lone \\r, \\r\\n and \\n come back as sent (a replay reproduces an answer's line numbers): a
    \\r\\n is one piece, a lone \\r one of its own."""
    pieces = tokenize_answer(LINE_ENDS_ANSWER)
    assert "".join(pieces) == LINE_ENDS_ANSWER and "\r\n" in pieces and "\r" in pieces
    assert not any(piece.endswith("\r") and after.startswith("\n") for piece, after in zip(pieces, pieces[1:]))
    with ReplayServer({"code": LINE_ENDS_ANSWER}, FAST) as server:
        client = _client(server)
        chat = client.chat.completions.create(model="code", messages=[{"role": "user", "content": "hi"}],
                                              stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chat) == LINE_ENDS_ANSWER
        completion = client.completions.create(model="code", prompt="x", stream=True)
        assert [c.choices[0].text for c in completion][:-1] == pieces


def test_async_client_stream(fast: ReplayServer) -> None:
    async def run() -> str:
        client = _aclient(fast)
        try:
            stream = await client.chat.completions.create(
                model="code", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream])
        finally:
            await client.close()

    assert asyncio.run(run()) == CODE_ANSWER


def test_single_answer_serves_any_model_name() -> None:
    with ReplayServer({"only": OTHER_ANSWER}, FAST) as srv:
        out = _client(srv).chat.completions.create(
            model="gpt-whatever", messages=[{"role": "user", "content": "hi"}]
        )
        assert out.choices[0].message.content == OTHER_ANSWER
        assert out.model == "gpt-whatever"


def test_timing_ttft_and_rate() -> None:
    prof = SpeedProfile(ttft_s=0.2, tokens_per_s=100.0)
    n = len(tokenize_answer(CODE_ANSWER))
    with ReplayServer({"code": CODE_ANSWER}, prof) as srv:
        client = _client(srv)
        t0 = time.monotonic()
        stream = client.chat.completions.create(
            model="code", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        first: float | None = None
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic() - t0
        total = time.monotonic() - t0
    assert first is not None
    assert 0.18 <= first < 1.0
    assert total >= 0.2 + (n - 1) / 100.0 - 0.01


# --------------------------------------------------------------------------- cancellation


def test_sync_stream_close_is_recorded() -> None:
    prof = SpeedProfile(ttft_s=0.0, tokens_per_s=5.0)  # 200 ms gaps: count is exact
    with ReplayServer({"long": LONG_ANSWER}, prof) as srv:
        stream = _client(srv).chat.completions.create(
            model="long", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        k, rid = 0, ""
        for chunk in stream:
            rid = chunk.id
            k += 1
            if k == 3:
                break
        stream.close()
        rec = _wait_settled(srv, rid)
        assert rec["disconnected"] is True and rec["finished"] is False
        assert rec["tokens_total"] == len(tokenize_answer(LONG_ANSWER))
        # The server notices at its next write; nothing after that counts.
        assert k <= rec["tokens_sent"] <= k + 1
        assert srv.replays()[rid] == rec


def test_async_stream_close_is_recorded() -> None:
    prof = SpeedProfile(ttft_s=0.0, tokens_per_s=200.0)

    async def run(srv: ReplayServer) -> str:
        client = _aclient(srv)
        try:
            stream = await client.completions.create(model="long", prompt="x", stream=True)
            rid, k = "", 0
            async for chunk in stream:
                rid, k = chunk.id, k + 1
                if k == 10:
                    break
            await stream.close()
            return rid
        finally:
            await client.close()

    with ReplayServer({"long": LONG_ANSWER}, prof) as srv:
        rid = asyncio.run(run(srv))
        rec = _wait_settled(srv, rid)
        assert rec["disconnected"] and not rec["finished"]
        assert 10 <= rec["tokens_sent"] < rec["tokens_total"]


def test_exit_with_stream_in_flight_is_prompt() -> None:
    prof = SpeedProfile(ttft_s=0.0, tokens_per_s=10.0)  # would take ~80 s to finish
    srv = ReplayServer({"long": LONG_ANSWER}, prof).start()
    stream = _client(srv).chat.completions.create(
        model="long", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    next(iter(stream))
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 3.0
    stream.close()


# --------------------------------------------------------------------------- errors & misc


def test_unknown_model_404(fast: ReplayServer) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        _client(fast).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    assert info.value.status_code == 404
    body = info.value.body
    assert isinstance(body, dict) and body.get("code") == "model_not_found"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", b"{not json"),
        ("/v1/chat/completions", b"[1, 2]"),
        ("/v1/chat/completions", b'{"model": "code"}'),
        ("/v1/chat/completions", b'{"model": "code", "messages": []}'),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}]}'),
        ("/v1/completions", b'{"model": "code"}'),
    ],
)
def test_malformed_request_400(fast: ReplayServer, path: str, body: bytes) -> None:
    status, payload = _http(fast, "POST", path, body)
    assert status == 400
    assert payload["error"]["type"] == "invalid_request_error"


def test_models_health_and_records(fast: ReplayServer) -> None:
    assert _client(fast).models.list().data[0].object == "model"
    assert {m.id for m in _client(fast).models.list()} == {"code", "other"}
    assert _http(fast, "GET", "/health")[0] == 200
    status, listing = _http(fast, "GET", "/v1/replays")
    assert status == 200 and listing["object"] == "list"
    assert {r["id"] for r in listing["data"]} == set(fast.replays())
    assert _http(fast, "GET", "/v1/replays/replay-999999")[0] == 404


def test_scripted_turns_follow_the_assistant_messages_and_stop_sequences_cut() -> None:
    turns = ["first ```python\nx = 1\n```\nObservation: made up", "second", "third"]
    with ReplayServer({"agent": turns}, FAST) as server:
        client = _client(server)

        def answer(assistants: int, **options: Any) -> str:
            messages = [{"role": "user", "content": "task"}]
            for _ in range(assistants):
                messages += [{"role": "assistant", "content": "..."}, {"role": "user", "content": "again"}]
            stream = client.chat.completions.create(model="agent", messages=messages, stream=True, **options)
            return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

        assert [answer(k) for k in range(3)] == turns
        assert answer(7) == "third"  # past the script: its last answer
        assert answer(0, stop=["Observation:", "never"]) == "first ```python\nx = 1\n```\n"
        assert answer(0, stop="```\n") == "first ```python\nx = 1\n"
        assert server.replays()["replay-5"]["messages"][0] == {"role": "user", "content": "task"}


def test_a_replayed_run_gets_its_own_model_and_namespace() -> None:
    """Two replayed runs on one base: each its own server and a namespace of its own under the base's."""
    base = Settings.from_env()
    with replay_model(base, {"m": OTHER_ANSWER}, FAST, model="m", label="mine") as first, \
            replay_model(base, {"m": CODE_ANSWER}, FAST) as second:
        assert first.namespace.startswith(f"{base.namespace}-mine-") and second.namespace.startswith(
            f"{base.namespace}-replay-")
        assert first.namespace != second.namespace and first.model_base_url != second.model_base_url
        assert (first.model, second.model) == ("m", base.model)
        reply = openai.OpenAI(base_url=first.model_base_url, api_key="replay", max_retries=0, timeout=10)
        answer = reply.chat.completions.create(model=first.model, messages=[{"role": "user", "content": "go"}])
        assert answer.choices[0].message.content == OTHER_ANSWER
