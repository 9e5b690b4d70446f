"""Line ends as CPython counts them (\\r\\n, a lone \\r, \\n and nothing else), checked against `ast` itself.

The detector's line numbers are the executor's padding and the error lines users read: one helper
that counts a line end differently from CPython puts every later line one off.
"""

from __future__ import annotations

import ast
import itertools
import random

import pytest

from eager.detector.lines import (
    LineCount,
    count_line_ends,
    ends_line,
    known_line_starts,
    lf_only,
    split_lines,
)

ENDS = ("\n", "\r\n", "\r")
# Line breaks for str.splitlines, never for CPython's tokenizer: inside a comment they are only text.
NOT_ENDS = "\f\v\x1c\x1d\x1e\x85\u2028\u2029"


def numbered(ends: tuple[str, ...], last: str = "") -> str:
    """`a0 = 0<end 0>a1 = 1<end 1>...`, a comment full of what is not a line end on every line."""
    return "".join(f"a{i} = {i}  # {NOT_ENDS}{end}" for i, end in enumerate(ends)) + last


END_SEQUENCES = [ends for n in range(4) for ends in itertools.product(ENDS, repeat=n)]


@pytest.mark.parametrize("ends", END_SEQUENCES, ids=[repr("".join(e)) for e in END_SEQUENCES])
@pytest.mark.parametrize("last", ["", "z = 9"])
def test_split_lines_numbers_lines_as_ast_does(ends: tuple[str, ...], last: str) -> None:
    """Statement i is on line i + 1 for `ast`, and on line i + 1 of `split_lines`."""
    code = numbered(ends, last)
    lines = split_lines(code)
    assert "".join(lines) == code
    body = ast.parse(code).body
    assert len(lines) == len(body) == count_line_ends(code) + bool(last)
    for statement in body:
        assert lines[statement.lineno - 1].startswith(ast.unparse(statement))
    assert all(ends_line(line) for line in lines[: len(ends)])


def test_split_lines_of_nothing_and_of_blank_lines() -> None:
    assert split_lines("") == []
    assert split_lines("\r\r\n\n\r") == ["\r", "\r\n", "\n", "\r"]
    assert count_line_ends("\r\r\n\n\r") == 4
    assert split_lines("x\r\ny") == ["x\r\n", "y"]


def cuttings(text: str, rng: random.Random) -> list[list[str]]:
    """`text` cut at every single place and pair of places, then at random places."""
    n = len(text)
    plans = [[text]] + [[text[:i], text[i:]] for i in range(n + 1)]
    plans += [[text[:i], text[i:j], text[j:]] for i in range(n + 1) for j in range(i, n + 1)]
    for _ in range(50):
        cuts = sorted(rng.sample(range(n + 1), rng.randint(0, n + 1)))
        plans.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, n])])
    return plans


@pytest.mark.parametrize("text", [
    "", "x", "\r", "\n", "\r\n", "\n\r", "\r\r", "x\ry", "x\r\ny\rz\n", "\r\n\r\n\r", "a\r\rb\n\nc\r\n", "x\r\n\r",
])
def test_line_count_is_the_same_however_the_text_is_cut(text: str) -> None:
    """A \\r\\n cut between two pieces is still one line end; the last line counts without its end."""
    expected = len(split_lines(text))
    for pieces in cuttings(text, random.Random(text)):
        count = LineCount()
        for piece in pieces:
            count.feed(piece)
        assert count.lines == expected, pieces


@pytest.mark.parametrize("text, starts", [
    ("x\ry", [2]), ("x\r", []), ("x\r\n", [3]), ("x\n\r", [2]), ("x\n\ry", [2, 3]), ("\r\r\r", [1, 2]),
    ("a\r\nb\rc\nd", [3, 5, 7]),
])
def test_a_final_cr_is_no_line_end_until_the_next_character(text: str, starts: list[int]) -> None:
    """While the text streams, `x\\r` may become `x\\r\\n`: only the character after the \\r tells."""
    assert list(known_line_starts(text)) == starts
    for start in range(len(text) + 1):
        assert list(known_line_starts(text, start)) == [s for s in starts if s > start]


@pytest.mark.parametrize("text", ["x\ry\r\nz\nw\r", "\r\r\n\r", "é\r🎉\r\n中\rx", "x\r"])
def test_lf_only_keeps_every_offset_and_counts_rows_as_cpython(text: str) -> None:
    """tree-sitter sees \\n-only rows at the same byte offsets (a final \\r waits, as in the detector)."""
    flat = lf_only(text)
    assert len(flat) == len(text) and len(flat.encode()) == len(text.encode())
    assert all(a == b or (a, b) == ("\r", "\n") for a, b in zip(text, flat))
    assert flat.count("\n") == count_line_ends(text) - text.endswith("\r")
    assert [i + 1 for i, char in enumerate(flat) if char == "\n"] == list(known_line_starts(text))
