"""Lines as CPython counts them: a line ends at \\r\\n, at a lone \\r or at \\n, and at nothing else.

The tokenizer, `ast` and tracebacks number lines so, and the chunk spans, the executor's padding
and the error lines must count alike, or every line after a lone \\r is off by one (str.split("\\n")
misses the \\r; str.splitlines also splits at \\f, \\x1c, U+2028...). While the text streams, a \\r
at its very end is no line end yet, since a \\n may follow and make the two one line end.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator

LINE_END = re.compile(r"\r\n|\r|\n")
_KNOWN_END = re.compile(r"\r\n|\r(?=[^\n])|\n")  # a \r last in the text is not known to end its line yet
_LONE_CR = re.compile(r"\r(?=[^\n])")


def split_lines(code: str) -> list[str]:
    """The lines of complete code, each with its line end (the last one may have none)."""
    lines, start = [], 0
    for end in LINE_END.finditer(code):
        lines.append(code[start : end.end()])
        start = end.end()
    if start < len(code):
        lines.append(code[start:])
    return lines


def count_line_ends(code: str) -> int:
    """Line ends in complete code (a final \\r is one)."""
    return code.count("\n") + code.count("\r") - code.count("\r\n")


def ends_line(text: str) -> bool:
    """Whether `text` ends with a line end, or with a \\r that is one whatever comes next (alone or with \\n)."""
    return text.endswith(("\n", "\r"))


def known_line_starts(text: str, start: int = 0) -> Iterator[int]:
    """Offsets just after each line end from `start` on that no later text can change."""
    return (end.end() for end in _KNOWN_END.finditer(text, start))


def lf_only(text: str) -> str:
    """`text` with each lone \\r known to end a line made \\n: the same length, and rows that tools which end
    lines at \\n only (tree-sitter) count as CPython does. A final \\r is left as it is, as \\r\\n is."""
    return _LONE_CR.sub("\n", text)


def readline(code: str) -> Callable[[], str]:
    """A `readline` for `tokenize` that ends lines as CPython does (io's universal newlines)."""
    return io.StringIO(code, newline=None).readline


class LineCount:
    """CPython's count of the lines of a text fed in pieces (a \\r\\n may be cut between two of them)."""

    def __init__(self) -> None:
        self._ends = 0
        self._last = ""

    def feed(self, text: str) -> None:
        if text:
            self._ends += count_line_ends(text) - (self._last == "\r" and text[0] == "\n")
            self._last = text[-1]

    @property
    def lines(self) -> int:
        """Lines so far, the last one counted whether or not it has its line end yet."""
        return self._ends + (self._last not in ("", "\n", "\r"))
