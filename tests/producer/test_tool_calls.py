"""Tool calls in, the program out: several code calls in order, other calls reported, errors clear."""

from __future__ import annotations

import json

import pytest

from eager.common.protocol import CodeTool, ToolShape
from eager.producer.tool_args import ToolArgumentsError
from eager.producer.tool_calls import ToolCallStream


def chat_pieces(index: int, call_id: str, name: str, arguments: str, size: int = 3) -> list[tuple]:
    parts = [arguments[i:i + size] for i in range(0, len(arguments), size)]
    return [(index, parts[0], name, call_id), *((index, p, None, None) for p in parts[1:])]


def run(stream: ToolCallStream, pieces: list[tuple]) -> str:
    return "".join(stream.piece(key, args, name, call_id) for key, args, name, call_id in pieces)


def test_code_calls_join_in_order_and_other_calls_are_reported_not_run() -> None:
    stream = ToolCallStream(CodeTool())
    program = run(stream, [
        *chat_pieces(0, "a", "python", json.dumps({"code": "x = 1"})),
        *chat_pieces(1, "b", "web_search", json.dumps({"code": "print('not me')"})),
        *chat_pieces(2, "c", "python", json.dumps({"code": "print(x)\n"})),
    ])
    assert program == "x = 1\nprint(x)\n"
    calls, error = stream.finish(cut=False)
    assert error is None
    assert [(c.index, c.name, c.call_id, c.ran) for c in calls] == [(0, "python", "a", True), (1, "web_search", "b", False),
                                                                     (2, "python", "c", True)]
    assert json.loads(calls[1].arguments) == {"code": "print('not me')"}


def test_index_zero_reused_for_the_next_call_and_an_id_changing_mid_call() -> None:
    stream = ToolCallStream(CodeTool())
    first = [(0, '{"code": "a = 1\\n', "python", "id1"), (0, '"}', None, "id1-changed")]
    program = run(stream, [*first, *chat_pieces(0, "id2", "python", '{"code": "print(a)"}')])
    assert program == "a = 1\nprint(a)"
    calls, error = stream.finish(cut=False)
    assert error is None and [c.call_id for c in calls] == ["id1", "id2"]


def test_interleaved_pieces_are_an_error() -> None:
    stream = ToolCallStream(CodeTool())
    run(stream, [(0, '{"code": "a', "python", "x"), (1, '{"code": "b', "python", "y")])
    with pytest.raises(ToolArgumentsError, match="interleaved"):
        stream.piece(0, '"}')


def test_arguments_before_the_name_are_decoded_once_it_comes() -> None:
    stream = ToolCallStream(CodeTool("run_code", "source"))
    assert stream.piece(0, '{"source": "pri') == ""
    assert stream.piece(0, 'nt(1)"}', name="run_code") == "print(1)"


def test_a_difference_or_an_unclosed_call_is_a_clear_error_unless_generation_was_cut() -> None:
    stream = ToolCallStream(CodeTool())
    run(stream, chat_pieces(0, "a", "python", '{"code": "print(1)\\n", "code": "other"}'))
    assert "tool call 0 (python)" in stream.finish(cut=False)[1] and "differs" in stream.finish(cut=False)[1]
    unclosed = ToolCallStream(CodeTool())
    run(unclosed, chat_pieces(0, "a", "python", '{"code": "print(1)\\nprint('))
    assert "never closed" in unclosed.finish(cut=False)[1]
    assert unclosed.finish(cut=True)[1] is None


def test_custom_tool_input_is_the_code() -> None:
    stream = ToolCallStream(CodeTool(shape=ToolShape.CUSTOM))
    assert stream.start(3, "python", "call_1") == ""
    assert stream.piece(3, "print(1)") + stream.piece(3, "\n") == "print(1)\n"
    assert stream.finish(cut=False) == ([stream.finish(cut=False)[0][0]], None)
    assert stream.finish(cut=False)[0][0].arguments == "print(1)\n"


def test_a_restated_call_that_differs_from_its_pieces_is_an_error() -> None:
    stream = ToolCallStream(CodeTool(shape=ToolShape.RESPONSES))
    stream.start(0, "python", "call_0")
    stream.piece(0, '{"code": "print(1)\\n"}')
    stream.complete(0, '{"code": "print(1)\\n"}')
    with pytest.raises(ToolArgumentsError, match="differ from the pieces streamed"):
        stream.complete(0, '{"code": "print(2)\\n"}')


@pytest.mark.parametrize("shape", list(ToolShape))
def test_the_token_limit_inside_a_code_call_is_an_error_and_after_its_code_closed_it_is_not(shape: ToolShape) -> None:
    cut_call = ToolCallStream(CodeTool(shape=shape))
    cut_call.start(0, "python", "call_0")
    cut_call.piece(0, "x = 12" if shape is ToolShape.CUSTOM else '{"code": "x = 12')
    assert "token limit inside the call" in (cut_call.finish(cut=False, limit=True)[1] or "")
    if shape is not ToolShape.CUSTOM:
        closed = ToolCallStream(CodeTool(shape=shape))
        closed.start(0, "python", "call_0")
        closed.piece(0, '{"code": "x = 12"}')
        assert closed.finish(cut=False, limit=True)[1] is None
