"""The human view is not a terminal for the program: every control character shows, none acts.

`visible` is checked on every code point there is; the view (`eager.cli.view.HumanView`) on the events a
session sends, cut in every place, since deltas and output arrive in arbitrary pieces.
"""

from __future__ import annotations

import ast
import unicodedata

import pytest

from eager.common.protocol import BatchFinished, Delta, ExecutionError, Gate, Output, SessionStatus, Summary
from eager.cli.view import HumanView
from eager.visible import visible

BIDI_CONTROLS = {"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"}


def acts_on_a_terminal(char: str) -> bool:
    """A control character (C0 but newline and tab, DEL, C1) or a bidi control (an override, an isolate, a mark)."""
    if char in "\n\t":
        return False
    return unicodedata.category(char) == "Cc" or unicodedata.bidirectional(char) in BIDI_CONTROLS \
        or char in "\u200e\u200f\u061c"


def test_every_code_point_is_shown_as_itself_or_as_the_escape_that_names_it() -> None:
    for point in range(0x110000):
        char = chr(point)
        shown = visible(char)
        if acts_on_a_terminal(char):
            assert shown != char and shown.startswith("\\"), hex(point)
            assert ast.literal_eval(f'"{shown}"') == char, (hex(point), shown)
            assert not any(acts_on_a_terminal(c) for c in shown)
        else:
            assert shown == char, hex(point)


@pytest.mark.parametrize("text, shown", [
    ("\x1b]52;c;SGVsbG8=\x07", "\\x1b]52;c;SGVsbG8=\\x07"),  # OSC 52: write the clipboard
    ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),  # clear the screen
    ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),  # set the window title
    ("\x9b31m", "\\x9b31m"),  # the one-character CSI (C1)
    ("safe\u202etxt.exe", "safe\\u202etxt.exe"),  # right-to-left override
    ("a\rb", "a\\rb"), ("a\r\nb", "a\\r\nb"), ("\x00\x7f\x85", "\\x00\\x7f\\x85"),
    ("tab\tand\nnewline", "tab\tand\nnewline"), ("é中🎉 \\x1b", "é中🎉 \\x1b"),
])
def test_visible(text: str, shown: str) -> None:
    assert visible(text) == shown


def shown_by_the_view(messages: list, capsys: pytest.CaptureFixture[str]) -> str:
    view = HumanView()
    for message in messages:
        view.show(message)
    return capsys.readouterr().out


def summary() -> Summary:
    return Summary(status=SessionStatus.ERROR, gate=Gate.EAGER, submitted_ns=0, finished_ns=1, stdout="",
                   detail="killed by \x1b[2Jsignal")


ANSWER = "Here:\r\n\r\n```python\rx = 1\r\ny = '\x1b]0;t\x07'\nz = 3\r```\r\nDone \u202e.\r"
ANSWER_SHOWN = ["Here:\\r", "\\r", "```python\\r", "x = 1\\r", "y = '\\x1b]0;t\\x07'", "z = 3\\r", "```\\r",
                "Done \\u202e.\\r"]


@pytest.mark.parametrize("cut", range(len(ANSWER) + 1))
def test_the_answer_is_echoed_line_by_line_as_python_ends_lines(cut: int, capsys: pytest.CaptureFixture[str]) -> None:
    """Cut anywhere (between a \\r and its \\n too), the echo is the same: a lone \\r ends a line, and shows."""
    out = shown_by_the_view([Delta(ANSWER[:cut], 0), Delta(ANSWER[cut:], 0), summary()], capsys)
    lines = out.split("\n")
    assert lines[: len(ANSWER_SHOWN)] == ANSWER_SHOWN
    assert "  killed by \\x1b[2Jsignal" in lines


def test_a_line_is_echoed_once_it_ended(capsys: pytest.CaptureFixture[str]) -> None:
    """A final \\r is a line end once the next character shows it is not the start of \\r\\n."""
    view = HumanView()
    view.show(Delta("x = 1\r", 0))
    assert capsys.readouterr().out == ""
    view.show(Delta("y", 0))
    assert capsys.readouterr().out == "x = 1\\r\n"
    view.show(Delta(" = 2\r", 0))
    view.show(Delta("\n", 0))
    assert capsys.readouterr().out == "y = 2\\r\n"


@pytest.mark.parametrize("cut", range(0, 40, 3))
def test_output_errors_and_tracebacks_are_shown_not_obeyed(cut: int, capsys: pytest.CaptureFixture[str]) -> None:
    printed = "\x1b]52;c;SGVsbG8=\x07copied\n\x1b[2Jcleared\tok\rover\n\x9b1mtail"
    error = ExecutionError("ValueError", "bad \x1b]0;title\x07", 3,
                           "Traceback (most recent call last):\n  File \"<eager>\", line 3, in <module>\n"
                           "ValueError: bad \x1b]0;title\x07\n", 0)
    out = shown_by_the_view([Output(0, "stdout", printed[:cut], 0), Output(0, "stdout", printed[cut:], 0),
                             BatchFinished(0, False, 0, 1), error], capsys)
    assert out.split("\n")[:3] == ["  │ \\x1b]52;c;SGVsbG8=\\x07copied", "  │ \\x1b[2Jcleared\tok\\rover",
                                   "  │ \\x9b1mtail"]
    assert "  ✗ ValueError at line 3: bad \\x1b]0;title\\x07" in out
    assert "    ValueError: bad \\x1b]0;title\\x07" in out
    assert not any(acts_on_a_terminal(char) for char in out)
