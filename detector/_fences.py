"""Markdown code extraction, line by line as the answer streams.

Only the code blocks of an answer are the program; prose around them is not run. A code
line is passed on as soon as it can no longer turn into a closing fence, so the chunker
sees the first token of a statement before its line ends. Each runnable block ends with
BLOCK_END: a product decision, a closed block is a finished unit, judged as at the end
of the stream, so its last statement runs without waiting for the next block.
"""

from __future__ import annotations

import re
import tokenize
from dataclasses import dataclass

from eager.detector.lines import LINE_END, readline


class BlockEnd:
    def __repr__(self) -> str:
        return "BLOCK_END"


BLOCK_END = BlockEnd()

RUNNABLE_LANGUAGES = frozenset({"", "python", "py", "python3", "py3"})

# Lines end as in CPython (\r\n, a lone \r, \n: CommonMark agrees), so fence lines and code lines split alike.
_OPENER = re.compile(r"(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\s`]*)[^`\r\n]*(?:\r\n|\r|\n)?")
_CLOSER = re.compile(r"[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*(?:\r\n|\r|\n)?")
_MAYBE_CLOSER = re.compile(r"[ \t]*(?P<fence>[`~]*)(?P<trail>[ \t]*)")


@dataclass(frozen=True, slots=True)
class _Block:
    fence: str
    indent: str
    runnable: bool

    def closes(self, line: str) -> bool:
        match = _CLOSER.fullmatch(line)
        return bool(match) and set(match["fence"]) == {self.fence[0]} and len(match["fence"]) >= len(self.fence)

    def may_close(self, partial: str) -> bool:
        """Whether more characters could still make this partial line a closing fence."""
        match = _MAYBE_CLOSER.fullmatch(partial)
        if match is None:
            return False
        run = match["fence"]
        if run and set(run) != {self.fence[0]}:
            return False
        return not (run and match["trail"] and len(run) < len(self.fence))

    def content(self, line: str) -> str:
        """The line without the opener's indentation (a block nested in a list item)."""
        if line.startswith(self.indent):
            return line[len(self.indent) :]
        stripped = 0
        while stripped < len(self.indent) and stripped < len(line) and line[stripped] == " ":
            stripped += 1
        return line[stripped:]


def ends_inside_string(code: str) -> bool:
    """Whether `code` stops inside an open (triple-quoted) string literal."""
    try:
        for _ in tokenize.generate_tokens(readline(code)):
            pass
    except tokenize.TokenError as error:
        return "string" in str(error.args[0])
    except SyntaxError:
        return False
    return False


class FenceReader:
    """Feed answer text, get code text and BLOCK_END markers of the runnable blocks."""

    def __init__(self) -> None:
        self._line = ""
        self._passed = 0
        self._block: _Block | None = None
        self._block_code: list[str] = []
        # The last line ended at a \r with nothing after it yet: whether it was code. A \n next is the rest of
        # that line end (code then, nothing otherwise): a line is judged at its \r, a fence closes there.
        self._cr_ended_code: bool | None = None

    def feed(self, text: str) -> list[str | BlockEnd]:
        out: list[str | BlockEnd] = []
        if text and self._cr_ended_code is not None:
            if text[0] == "\n":
                text = text[1:]
                if self._cr_ended_code:
                    self._emit("\n", out)
            self._cr_ended_code = None
        self._line += text
        while (end := LINE_END.search(self._line)) is not None:
            line, self._line = self._line[: end.end()], self._line[end.end() :]
            code = self._complete_line(line, out)
            self._passed = 0
            if not self._line and line.endswith("\r"):
                self._cr_ended_code = code
        self._partial_line(out)
        return out

    def eof(self) -> list[str | BlockEnd]:
        out: list[str | BlockEnd] = []
        if self._line:
            self._complete_line(self._line, out)
            self._line = ""
        if self._block is not None and self._block.runnable:
            out.append(BLOCK_END)
        self._block = None
        return out

    def _complete_line(self, line: str, out: list[str | BlockEnd]) -> bool:
        """Take one line (with its end); whether it was code."""
        block = self._block
        if block is None:
            opener = _OPENER.fullmatch(line)
            if opener is not None:
                runnable = opener["info"].lower() in RUNNABLE_LANGUAGES
                self._block = _Block(opener["fence"], opener["indent"], runnable)
                self._block_code = []
            return False
        if self._passed == 0 and block.closes(line) and not (
            block.runnable and ends_inside_string("".join(self._block_code))
        ):
            self._block = None
            if block.runnable:
                out.append(BLOCK_END)
            return False
        if block.runnable:
            self._pass(block.content(line), out)
        return block.runnable

    def _partial_line(self, out: list[str | BlockEnd]) -> None:
        block = self._block
        if block is None or not block.runnable or not self._line:
            return
        if self._passed == 0 and block.may_close(self._line):
            return
        self._pass(block.content(self._line), out)

    def _pass(self, content: str, out: list[str | BlockEnd]) -> None:
        """Emit what of this line's content was not emitted yet."""
        piece = content[self._passed :]
        if piece:
            self._emit(piece, out)
            self._passed = len(content)

    def _emit(self, code: str, out: list[str | BlockEnd]) -> None:
        out.append(code)
        self._block_code.append(code)
