"""Ground truth for the detector tests: a streamed run, an independent fence parser, and CPython's `ast`.

Deliberately simple and separate from detector/: a mistake shared by the implementation and its
oracle would go unseen. The fence parser here is line based (CommonMark-ish, not CommonMark):
it takes ``` and ~~~ fences, the info string's first word case-insensitively, an opener
indented by any whitespace; it strips the opener's indentation (or as many leading spaces, up
to its length) from content lines, closes on a line of at least as many of the same fence
character (any indentation), and keeps a fence-like line that sits inside an unterminated
triple-quoted string of the block's code (decided by `tokenize` on the block so far) as code.
"""

from __future__ import annotations

import ast
import bisect
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from eager.detector._events import Chunk, CodeEnded, CodeInvalid
from eager.detector._fences import ends_inside_string
from eager.detector.core import NEED_DATA, Detector

NEWLINES = ("\r\n", "\n", "\r")
RUNNABLE = {"", "python", "py", "python3", "py3"}
OPEN = re.compile(r"^([ \t]*)(`{3,}(?=[^`]*$)|~{3,})[ \t]*(\S*)")
CLOSE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*$")
COMPOUND = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.TryStar, ast.With, ast.AsyncWith,
            ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Match)
MAX_EVENTS = 100_000


# ---------------------------------------------------------------------------------------------
# Streaming a text through the detector


@dataclass(frozen=True)
class Seen:
    event: object
    fed: int  # characters fed when next_event returned the event
    before_eof: bool


@dataclass
class Run:
    text: str
    bounds: list[int]  # cumulative end offset of every piece fed
    seen: list[Seen]

    @property
    def chunk_seen(self) -> list[Seen]:
        return [s for s in self.seen if isinstance(s.event, Chunk)]

    @property
    def chunks(self) -> list[Chunk]:
        return [s.event for s in self.chunk_seen]

    @property
    def code(self) -> str:
        return "".join(c.code for c in self.chunks)

    @property
    def terminal(self):
        return self.seen[-1].event if self.seen else None

    @property
    def terminal_seen(self) -> Seen:
        return self.seen[-1]

    def fed_by(self, offset: int) -> int:
        """The amount fed at the first next_event round after `offset` characters had arrived."""
        i = bisect.bisect_left(self.bounds, offset)
        return self.bounds[min(i, len(self.bounds) - 1)]

    def ranges(self) -> list[tuple[int, int]]:
        return [(c.start_line, c.end_line) for c in self.chunks]


def _drain(detector: Detector, seen: list[Seen], fed: int, before_eof: bool) -> None:
    for _ in range(MAX_EVENTS):
        event = detector.next_event()
        if event is NEED_DATA:
            return
        seen.append(Seen(event, fed, before_eof))
    raise AssertionError("next_event never returned NEED_DATA")


def run(text: str, splits: Sequence[int] = (), raw: bool = False, eof: bool = True) -> Run:
    """Feed `text` cut at the offsets `splits`, draining events after every piece, then the end."""
    detector = Detector(raw=raw)
    bounds = sorted({c for c in splits if 0 < c < len(text)}) + [len(text)]
    seen: list[Seen] = []
    fed = 0
    for end in bounds:
        if end > fed:
            detector.receive_data(text[fed:end])
            fed = end
        _drain(detector, seen, fed, True)
    if eof:
        detector.receive_eof()
        _drain(detector, seen, fed, False)
        for _ in range(3):
            assert detector.next_event() is NEED_DATA, "events after the terminal one"
    return Run(text, bounds, seen)


def random_splits(rng: random.Random, length: int, max_piece: int = 12) -> list[int]:
    cuts, at = [], 0
    while True:
        at += rng.randint(1, max_piece)
        if at >= length:
            return cuts
        cuts.append(at)


def split_plans(text: str, n: int = 30, max_piece: int = 12, seed: str = "") -> Iterator[list[int]]:
    """Whole text, one character at a time, then `n` seeded random cuttings (piece sizes 1..max_piece)."""
    yield []
    yield list(range(1, len(text)))
    rng = random.Random(f"{seed}|{text}")
    for _ in range(n):
        yield random_splits(rng, len(text), max_piece)


# ---------------------------------------------------------------------------------------------
# Lines, the reference fence parser, and ast's statement spans


def split_lines(text: str) -> list[str]:
    """Lines with their endings, counted the way CPython's tokenizer counts them (\\r\\n, \\r, \\n)."""
    return [m.group() for m in re.finditer(r"[^\r\n]*(?:\r\n|\r|\n|\Z)", text) if m.group()]


def count_lines(text: str) -> int:
    return len(split_lines(text))


@dataclass
class Line:
    text: str  # the program line, its indentation-stripped content with its line ending
    start: int  # offset in the answer of the line's first program character
    end: int  # offset in the answer just after the line


@dataclass
class Block:
    first: int  # program lines first..last are this block's content (first > last: empty block)
    last: int
    close_start: int | None = None  # offset in the answer of the closing fence's first backtick
    close_end: int | None = None  # offset just after the closing fence line
    close_final: bool = False  # the closing fence line ends with a newline (so it is surely a fence)


@dataclass
class Extraction:
    answer: str
    raw: bool
    lines: list[Line]
    blocks: list[Block]

    @property
    def program(self) -> str:
        return "".join(line.text for line in self.lines)

    def block_of(self, line: int) -> Block:
        for block in self.blocks:
            if block.first <= line <= block.last:
                return block
        raise KeyError(line)


def extract(answer: str, raw: bool = False) -> Extraction:
    """The program the detector should run, with where each of its lines sits in the answer."""
    spans, at = [], 0
    for text in split_lines(answer):
        spans.append((at, at + len(text), text))
        at += len(text)
    if raw:
        lines = [Line(text, start, end) for start, end, text in spans]
        return Extraction(answer, raw, lines, [Block(1, len(lines))])
    lines: list[Line] = []
    blocks: list[Block] = []
    fence = None  # [indent, fence string, runnable, first line, block code so far]
    for start, end, text in spans:
        body = text.rstrip("\r\n")
        if fence is None:
            m = OPEN.match(body)
            if m:
                fence = [m.group(1), m.group(2), m.group(3).lower() in RUNNABLE, len(lines) + 1, ""]
            continue
        indent, opener, runnable, first, code = fence
        m = CLOSE.match(body)
        if (m and m.group(1)[0] == opener[0] and len(m.group(1)) >= len(opener)
                and not (runnable and ends_inside_string(code))):
            if runnable:
                blocks.append(Block(first, len(lines), start + m.start(1), end, body != text))
            fence = None
            continue
        if runnable:
            if text.startswith(indent):
                k = len(indent)
            else:
                k = 0
                while k < len(indent) and k < len(text) and text[k] == " ":
                    k += 1
            lines.append(Line(text[k:], start + k, end))
            fence[4] += text[k:]
    if fence is not None and fence[2]:
        blocks.append(Block(fence[3], len(lines)))
    return Extraction(answer, raw, lines, blocks)


def python_blocks(answer: str) -> str:
    return extract(answer).program


@dataclass
class Group:
    """Top-level statements that no chunk boundary may separate (they share a line)."""

    start: int
    end: int
    last: ast.stmt


def statement_groups(program: str) -> list[Group]:
    groups: list[Group] = []
    for node in ast.parse(program).body:
        decorators = getattr(node, "decorator_list", None)
        start = decorators[0].lineno if decorators else node.lineno
        if groups and start <= groups[-1].end:
            groups[-1].end = max(groups[-1].end, node.end_lineno)
            groups[-1].last = node
        else:
            groups.append(Group(start, node.end_lineno, node))
    return groups


def continuations(node: ast.stmt, lines: list[Line]) -> tuple[str, ...]:
    """Keywords that could still extend `node` if they came next at column 0."""
    if isinstance(node, ast.If):
        while (len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If)
               and lines[node.orelse[0].lineno - 1].text.lstrip().startswith("elif")):
            node = node.orelse[0]
        return () if node.orelse else ("elif", "else")
    if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
        return () if node.orelse else ("else",)
    if isinstance(node, (ast.Try, ast.TryStar)):
        if node.finalbody:
            return ()
        return ("finally",) if node.orelse else ("except", "else", "finally")
    return ()


def last_suite(node: ast.stmt, lines: list[Line]) -> list[ast.stmt]:
    if isinstance(node, (ast.Try, ast.TryStar)):
        return node.finalbody or node.orelse or node.handlers[-1].body
    if isinstance(node, ast.If) and node.orelse:
        tail = node.orelse[0]
        if (len(node.orelse) == 1 and isinstance(tail, ast.If)
                and lines[tail.lineno - 1].text.lstrip().startswith("elif")):
            return last_suite(tail, lines)
        return node.orelse
    if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
        return node.orelse or node.body
    return node.body


def final_at_newline(node: ast.stmt, lines: list[Line]) -> bool:
    """A statement no indented line could continue: simple, or compound ending in a one-line suite.

    (`class A: pass` then an indented line is an IndentationError, not a longer class.)
    """
    if not isinstance(node, COMPOUND):
        return True
    if isinstance(node, ast.Match) or continuations(node, lines):
        return False
    first = last_suite(node, lines)[0]
    head = lines[first.lineno - 1].text.encode()[:first.col_offset].decode(errors="ignore")
    return head.strip() != ""


def significant(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and not stripped.startswith("#")


# ---------------------------------------------------------------------------------------------
# Checks


def check_stream(r: Run, program: str | None = None) -> None:
    """What holds for every run, valid code or not."""
    assert r.seen, "no events at all"
    *body, last = r.seen
    assert all(isinstance(s.event, Chunk) for s in body), [s.event for s in r.seen]
    assert isinstance(last.event, (CodeEnded, CodeInvalid)), last.event
    prog_lines = split_lines(program) if program is not None else None
    line, prev_at = 1, 0
    for i, s in enumerate(r.chunk_seen):
        c = s.event
        assert c.seq == i, r.chunks
        assert c.start_line == line and c.end_line >= c.start_line, r.ranges()
        assert c.code and count_lines(c.code) == c.end_line - c.start_line + 1, c
        if prog_lines is not None:
            assert c.code == "".join(prog_lines[c.start_line - 1:c.end_line]), (c, program)
        assert prev_at <= c.emitted_at <= s.fed, (c, s.fed)
        prev_at = c.emitted_at
        if not s.before_eof:
            assert c.emitted_at == len(r.text), c
        if not c.code.endswith(NEWLINES):
            assert i == len(body) - 1 and not s.before_eof, "a chunk without a line end before the end"
        line = c.end_line + 1
    if isinstance(last.event, CodeEnded):
        assert not last.before_eof, "CodeEnded before receive_eof"
        assert last.event.chunks == len(body), last.event
        assert last.event.lines == line - 1, last.event
        if program is not None:
            assert r.code == program
            assert last.event.lines == count_lines(program)
    else:
        assert last.event.chunks == len(body), last.event
        assert isinstance(last.event.message, str) and last.event.message
        if program is not None:
            assert program.startswith(r.code)


def lower_bound(x: Extraction, groups: list[Group], chunk: Chunk) -> int | None:
    """The fewest characters of the answer that prove `chunk` final; None: only the end can.

    Even a simple statement waits for a character after its line ("never final until something
    after it proves it closed", DESIGN.md); a compound one for the next significant line's first
    token, when that token could still be a continuing keyword.
    """
    lines = x.lines
    last = lines[chunk.end_line - 1]
    if not last.text.endswith(NEWLINES) or last.end >= len(x.answer):
        return None
    bound = last.end + 1
    ended = [g for g in groups if g.end <= chunk.end_line]
    if not ended or final_at_newline(ended[-1].last, lines):
        return bound
    group = ended[-1]
    keywords = continuations(group.last, lines)
    block = x.block_of(group.end)
    for n_line in range(group.end + 1, block.last + 1):
        text = lines[n_line - 1].text
        if significant(text):
            n = 1
            while n <= len(text) and any(k.startswith(text[:n]) for k in keywords):
                n += 1
            if n > len(text):
                return None
            return max(bound, lines[n_line - 1].start + n)
    if block.close_start is None:
        return None
    return max(bound, block.close_start + 1)


def upper_bound(x: Extraction, groups: list[Group], i: int) -> int | None:
    """By this many characters group i must be out; None: not before the end."""
    group, lines = groups[i], x.lines
    block = x.block_of(group.end)
    after = groups[i + 1] if i + 1 < len(groups) else None
    if after is not None and x.block_of(after.start) is block:
        line = lines[min(after.start + 1, block.last) - 1]
        return line.end if line.text.endswith(NEWLINES) else None
    if block.close_start is None or not block.close_final:
        return None
    return block.close_end


def check_oracle(r: Run, x: Extraction) -> None:
    """A valid program: exact concatenation, ast boundaries, never early, never late."""
    program = x.program
    check_stream(r, program)
    assert isinstance(r.terminal, CodeEnded), r.terminal
    groups = statement_groups(program)
    starts = [g.start for g in groups]
    seen = r.chunk_seen
    chunks = r.chunks
    # (b) every boundary lies between statements; a leading comment block goes with the first one.
    # (Comments between two statements may go with either: DESIGN.md and ast do not say.)
    for c in chunks[:-1]:
        b = c.end_line
        i = bisect.bisect_right(starts, b)
        if i == 0:
            if groups:
                assert x.block_of(b) is not x.block_of(groups[0].start), \
                    f"boundary after line {b}, before the block's first statement: {r.ranges()}"
            continue
        g = groups[i - 1]
        assert b >= g.end, f"boundary after line {b} splits the statement at lines {g.start}-{g.end}: {r.ranges()}"
    # (c) nothing out before the text proves it final
    for s in seen:
        lb = lower_bound(x, groups, s.event)
        if lb is None:
            assert not s.before_eof, f"{s.event} emitted before the end, only the end proves it"
        else:
            assert s.event.emitted_at >= lb and s.fed >= lb, f"{s.event} emitted at {s.event.emitted_at} < {lb}"
    # (d) every statement out promptly
    for i, g in enumerate(groups):
        s = next(s for s in seen if s.event.start_line <= g.end <= s.event.end_line)
        ub = upper_bound(x, groups, i)
        if ub is None:
            continue
        limit = r.fed_by(ub)
        assert s.before_eof and s.fed <= limit, \
            f"lines {g.start}-{g.end} out at {s.fed} (eof={not s.before_eof}), due by {limit} ({ub})"


def check_plans(answer: str, raw: bool, x: Extraction, plans: Iterable[list[int]]) -> None:
    """The oracle for each way of cutting the answer; a failure names the answer and the cuts."""
    for splits in plans:
        r = run(answer, splits, raw)
        try:
            check_oracle(r, x)
        except AssertionError as error:
            raise AssertionError(f"{error}\nanswer={answer!r}\nraw={raw} splits={splits}") from None


def check_many(answer: str, raw: bool = False, n: int = 30, max_piece: int = 12) -> Extraction:
    """The oracle over the whole text, single characters and `n` random cuttings."""
    x = extract(answer, raw)
    check_plans(answer, raw, x, split_plans(answer, n, max_piece))
    return x


def parses(program: str) -> bool:
    try:
        ast.parse(program)
    except SyntaxError:
        return False
    return True


def fenced(program: str, info: str = "python", before: str = "Sure, here it is:\n\n",
           after: str = "\nHope this helps.\n") -> str:
    """A chat answer with one fence around `program`, as it is (its prose and fences in CRLF if it uses it)."""
    nl = "\r\n" if "\r\n" in program else "\n"
    if program and not program.endswith(NEWLINES):
        program += nl
    before, after = before.replace("\n", nl), after.replace("\n", nl)
    return f"{before}```{info}{nl}{program}```{nl}{after}"
