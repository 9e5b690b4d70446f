"""The finality rules: may the code before line L run, judging by line L's first token?

Pure functions over strings. A candidate boundary is the start of a line L at column 0;
`tail[:boundary]` is final only if nothing that can follow changes it. The verdicts
follow DESIGN.md's detection rules; CPython (`tokenize`, `ast`) has the last word.
"""

from __future__ import annotations

import ast
import re
import tokenize
from dataclasses import dataclass
from enum import Enum

from eager.detector.lines import ends_line, readline

# A column-0 line starting with one of these continues the statement before it.
CONTINUATION_KEYWORDS = frozenset({"else", "elif", "except", "finally"})

_IDENTIFIER = re.compile(r"[^\W\d]\w*")


class Verdict(Enum):
    NOT_YET = "not yet"  # line L's first token may still grow: ask again with more text
    KEEP = "keep"  # the code before L is not final (or not a statement yet); never ask again
    FINAL = "final"  # the code before L is complete statements that nothing can change
    INVALID = "invalid"  # the code before L can never parse


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    body: list[ast.stmt] | None = None
    error: SyntaxError | None = None
    error_type: str = "SyntaxError"  # or what else the compiler refuses a program with (RecursionError)


def _parse(code: str) -> list[ast.stmt]:
    """`ast.parse`, with a statement too deep for the compiler (a 10,000-term sum: python refuses the whole
    program with RecursionError before running any of it) raised as _TooDeep, to be judged invalid."""
    try:
        return ast.parse(code).body
    except (RecursionError, MemoryError) as exc:
        raise _TooDeep(type(exc).__name__) from None


class _TooDeep(Exception):
    def invalid(self) -> Judgement:
        message = "maximum recursion depth exceeded during compilation" if self.args[0] == "RecursionError" \
            else "out of memory during compilation"
        return Judgement(Verdict.INVALID, error=SyntaxError(message, ("<eager>", 1, 1, None)), error_type=self.args[0])


def judge(before: str, line: str) -> Judgement:
    """Judge `before` (complete lines) given the start of the next line `line`."""
    if not line:
        return Judgement(Verdict.NOT_YET)
    if line[0] in " \t\f\r\n#\\":  # indented, blank, a comment, or joined to the next line
        return Judgement(Verdict.KEEP)
    word = _IDENTIFIER.match(line)
    if word is not None:
        if word.end() == len(line):
            return Judgement(Verdict.NOT_YET)
        if word.group() in CONTINUATION_KEYWORDS:
            return Judgement(Verdict.KEEP)
    if not _logical_line_closed(before):
        return Judgement(Verdict.KEEP)
    try:
        body = _parse(before)
    except (SyntaxError, ValueError):
        return _invalid(before, line)
    except _TooDeep as too_deep:
        return too_deep.invalid()
    return Judgement(Verdict.FINAL, body=body) if body else Judgement(Verdict.KEEP)


def _invalid(before: str, line: str) -> Judgement:
    """Report the error the whole program will report: parse with line L, once L is complete.

    `if x:` alone fails on line 1 but `if x:\\nfoo()` on line 2; the whole program sees L.
    """
    if not ends_line(line):
        return Judgement(Verdict.NOT_YET)
    try:
        _parse(before + line)
    except SyntaxError as error:
        return Judgement(Verdict.INVALID, error=error)
    except ValueError as error:
        return Judgement(Verdict.INVALID, error=SyntaxError(str(error)))
    except _TooDeep as too_deep:
        return too_deep.invalid()
    return Judgement(Verdict.KEEP)


def _logical_line_closed(before: str) -> bool:
    """False inside a string, a bracket or a backslash continuation, or after a decorator."""
    last_start: tokenize.TokenInfo | None = None
    at_line_start = True
    try:
        for token in tokenize.generate_tokens(readline(before)):
            if token.type in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
                continue
            if token.type == tokenize.NEWLINE:
                at_line_start = True
                continue
            if at_line_start and token.type != tokenize.ENDMARKER:
                last_start = token
                at_line_start = False
    except tokenize.TokenError:
        return False
    except SyntaxError:
        return True  # inconsistent indentation: a real error, for `ast` to report
    return not (last_start is not None and last_start.start[1] == 0 and last_start.string == "@")


def parse_whole(code: str) -> Judgement:
    """Judge code whose end is known (a closed block or the end of the answer)."""
    try:
        return Judgement(Verdict.FINAL, body=_parse(code))
    except SyntaxError as error:
        return Judgement(Verdict.INVALID, error=error)
    except ValueError as error:
        return Judgement(Verdict.INVALID, error=SyntaxError(str(error)))
    except _TooDeep as too_deep:
        return too_deep.invalid()
