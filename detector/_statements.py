"""The pending tail of the program, parsed incrementally, cut into final statements.

tree-sitter keeps a parse of the tail (the code not yet emitted): each delta is an edit
at the end and a reparse that reuses the old tree; each emission is an edit that cuts
the front. Its top-level nodes at column 0 name the candidate boundaries cheaply; the
rules in `_rules` (tokenize and `ast`, CPython's own word) decide each candidate once.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import tree_sitter
import tree_sitter_python

from eager.detector._rules import Judgement, Verdict, judge, parse_whole
from eager.detector.lines import count_line_ends, known_line_starts, lf_only, split_lines

_LANGUAGE = tree_sitter.Language(tree_sitter_python.language())


@dataclass(frozen=True, slots=True)
class Statements:
    """Final code: lines `start_line`..`end_line` of the program."""

    start_line: int
    end_line: int
    code: str


@dataclass(frozen=True, slots=True)
class SyntaxProblem:
    line: int
    message: str
    error_type: str


Result = Statements | SyntaxProblem


def _end_point(data: bytes) -> tuple[int, int]:
    """tree-sitter's Point for the end of `data`, which ends lines at \\n only: (row, column in bytes)."""
    return data.count(b"\n"), len(data) - (data.rfind(b"\n") + 1)


class StatementSplitter:
    """Feed program text; get `Statements` as they become final, or the `SyntaxProblem`."""

    def __init__(self) -> None:
        self._parser = tree_sitter.Parser(_LANGUAGE)
        self._first_line = 1  # program line of the tail's first line
        self._judged_line = 0  # program line of the last candidate judged
        self._reset("")

    def _reset(self, tail: str) -> None:
        self._tail = tail
        self._data = lf_only(tail).encode()  # tree-sitter's copy: its rows are CPython's lines
        self._line_starts = [0, *known_line_starts(tail)]
        self._tree = self._parser.parse(self._data)

    def feed(self, code: str) -> list[Result]:
        old_end, old_point = len(self._data), _end_point(self._data)
        offset = len(self._tail)
        self._tail += code
        # A \r that ended the tail ends its line alone or with this code's \n: look at it again.
        since = offset - 1 if self._tail[offset - 1 : offset] == "\r" else offset
        edit_from = old_end - (offset - since)
        self._data = self._data[:edit_from] + lf_only(self._tail[since:]).encode()
        self._line_starts.extend(known_line_starts(self._tail, since))
        self._tree.edit(edit_from, old_end, len(self._data), _end_point(self._data[:edit_from]), old_point,
                        _end_point(self._data))
        self._tree = self._parser.parse(self._data, self._tree)
        return self._judge_candidates()

    def end_block(self) -> list[Result]:
        """The code so far is complete (its block closed, or the answer ended): emit all of it."""
        if not self._tail:
            return []
        tail = self._tail
        judgement = parse_whole(tail)
        if judgement.verdict is Verdict.INVALID:
            return [self._problem(judgement)]
        results = self._split(tail, judgement.body or [])
        self._first_line += count_line_ends(tail)
        self._judged_line = self._first_line - 1
        self._reset("")
        return results

    def _judge_candidates(self) -> list[Result]:
        results: list[Result] = []
        for row in self._candidate_rows():
            line_number = self._first_line + row
            if line_number <= self._judged_line:
                continue
            start = self._line_starts[row]
            end = self._line_starts[row + 1] if row + 1 < len(self._line_starts) else len(self._tail)
            judgement = judge(self._tail[:start], self._tail[start:end])
            if judgement.verdict is Verdict.NOT_YET:
                break
            self._judged_line = line_number
            if judgement.verdict is Verdict.INVALID:
                return [*results, self._problem(judgement)]
            if judgement.verdict is Verdict.FINAL:
                results.extend(self._split(self._tail[:start], judgement.body or []))
                self._cut(row)
                return [*results, *self._judge_candidates()]
        return results

    def _candidate_rows(self) -> list[int]:
        """Rows where a top-level node starts at column 0, in order (inside ERROR nodes too)."""
        rows: set[int] = set()
        for node in self._tree.root_node.children:
            nodes = [node, *node.children] if node.type == "ERROR" else [node]
            for candidate in nodes:
                row, column = candidate.start_point
                if column == 0 and row > 0 and candidate.type != "comment":
                    rows.add(row)
        return sorted(rows)

    def _cut(self, row: int) -> None:
        """Drop the tail's first `row` lines (emitted) by editing the tree, then reparse."""
        start = self._line_starts[row]
        cut_bytes = len(self._tail[:start].encode())
        self._tail = self._tail[start:]
        self._data = self._data[cut_bytes:]
        self._line_starts = [offset - start for offset in self._line_starts[row:]]
        self._first_line += row
        self._tree.edit(0, cut_bytes, 0, (0, 0), (row, 0), (0, 0))
        self._tree = self._parser.parse(self._data, self._tree)

    def _split(self, code: str, body: list[ast.stmt]) -> list[Result]:
        """One `Statements` per top-level statement; `;` lines stay whole, comments go with the next."""
        lines = split_lines(code)
        cuts = [0]
        for previous, statement in zip(body, body[1:]):
            start = min([statement.lineno, *(d.lineno for d in getattr(statement, "decorator_list", []))])
            end = previous.end_lineno or previous.lineno
            if start > end:
                cut = start - 1  # index of the statement's first line
                while cut - 1 >= end and lines[cut - 1].lstrip().startswith("#"):
                    cut -= 1  # the comment lines right above a statement go with it
                cuts.append(cut)
        cuts.append(len(lines))
        results: list[Result] = []
        for first, last in zip(cuts, cuts[1:]):
            results.append(Statements(self._first_line + first, self._first_line + last - 1, "".join(lines[first:last])))
        return results

    def _problem(self, judgement: Judgement) -> SyntaxProblem:
        error = judgement.error
        assert error is not None
        line = self._first_line + (error.lineno or 1) - 1
        return SyntaxProblem(line, error.msg, judgement.error_type)
