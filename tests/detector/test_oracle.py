"""The detector against CPython's ast on many programs, each streamed in many cuttings.

Chunking bugs hide in where a delta happens to end, so every program is fed whole, one
character at a time, and in 30 seeded random cuttings, raw and inside a fence.
"""

from __future__ import annotations

import pytest

from eager.detector._events import Chunk, CodeEnded
from tests.detector.oracle import NEWLINES, Run, Seen, check_many, check_oracle, extract, fenced, split_lines
from tests.detector.programs import PROGRAMS

INFOS = ["python", "py", "python3", "py3", ""]


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_raw(name: str) -> None:
    """Completion models: the text is the program, and only the end of the stream closes its last statement."""
    x = check_many(PROGRAMS[name], raw=True)
    assert x.program == PROGRAMS[name]


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_fenced(name: str) -> None:
    """Chat models: prose around one fence; the closing fence proves the last statement final."""
    info = INFOS[list(PROGRAMS).index(name) % len(INFOS)]
    program = PROGRAMS[name]
    x = check_many(fenced(program, info))
    expected = program if program.endswith(NEWLINES) else program + "\n"
    assert x.program == expected, "the reference fence parser disagrees with the test's own wrapping"


@pytest.mark.parametrize("name", ["if_elif_else_comments", "keyword_lookalikes", "decorators", "column0_in_strings"])
def test_fenced_large_pieces(name: str) -> None:
    """Big deltas (up to 80 characters) carry several statements and fence lines at once."""
    check_many(fenced(PROGRAMS[name]), n=15, max_piece=80)


# The oracle itself must be able to fail, or every test above proves nothing.

def _fake(text: str, chunks: list[tuple[int, int, int, bool]]) -> Run:
    """A Run as if the detector had emitted (start, end, fed, before_eof) chunks, fed char by char."""
    lines = split_lines(text)
    seen = [Seen(Chunk(i, a, b, "".join(lines[a - 1:b]), fed), fed, before) for i, (a, b, fed, before) in enumerate(chunks)]
    seen.append(Seen(CodeEnded(len(chunks), len(lines)), len(text), False))
    return Run(text, list(range(1, len(text) + 1)), seen)


def test_oracle_accepts_a_correct_run() -> None:
    text = "if x:\n    pass\ny = 1\n"
    check_oracle(_fake(text, [(1, 2, 16, True), (3, 3, len(text), False)]), extract(text, raw=True))


# line ends: 6 15 21 30 36 43 50
REJECT_TEXT = "if x:\n    pass\nelse:\n    pass\nx = 1\nyy = 2\nzz = 3\n"


@pytest.mark.parametrize("chunks, complaint", [
    ([(1, 2, 22, True), (3, 5, 43, True), (6, 7, 50, False)], "splits the statement"),
    ([(1, 4, 30, True), (5, 5, 43, True), (6, 7, 50, False)], "emitted at 30"),  # before the 'x' arrived
    ([(1, 4, 31, True), (5, 5, 50, True), (6, 7, 50, False)], "due by"),  # x = 1 held past line 6
    ([(1, 4, 31, True), (5, 5, 36, True), (6, 7, 50, False)], "emitted at 36"),  # nothing after x = 1 yet
    ([(1, 4, 31, True), (5, 7, 50, True)], "before the end"),  # the last statement out before EOF
])
def test_oracle_rejects(chunks, complaint) -> None:
    with pytest.raises(AssertionError, match=complaint):
        check_oracle(_fake(REJECT_TEXT, chunks), extract(REJECT_TEXT, raw=True))
