"""One test per detection rule (DESIGN.md, "Detection rules"), each streamed in many cuttings.

The oracle (check_many) already proves, for a whole program, that nothing came out early or
late and that boundaries agree with ast. The tests here add what a finished program cannot
show: prefixes that must hold a statement back, because the next characters could still
change it, whatever those characters turn out to be.
"""

from __future__ import annotations

import ast

import pytest

from eager.detector._events import Chunk, CodeEnded, CodeInvalid
from eager.detector.core import NEED_DATA, Detector
from tests.detector.oracle import (
    check_many,
    check_stream,
    count_lines,
    extract,
    fenced,
    run,
    split_plans,
)

MODES = [pytest.param(True, id="raw"), pytest.param(False, id="fenced")]


def as_mode(code: str, raw: bool) -> str:
    """`code` as a raw text, or as the start of a fenced answer (no closing fence: still streaming)."""
    return code if raw else "Here you go:\n\n```python\n" + code


def assert_held(prefix: str, line: int, raw: bool, n: int = 20) -> None:
    """No cutting of `prefix` (without its end) may emit a chunk reaching program line `line`."""
    for splits in split_plans(prefix, n):
        r = run(prefix, splits, raw, eof=False)
        early = [c for c in r.chunks if c.end_line >= line]
        assert not early, f"{early} out of {prefix!r} (splits={splits})"
        assert not any(isinstance(s.event, (CodeEnded, CodeInvalid)) for s in r.seen), (prefix, r.seen)


def assert_out(prefix: str, last_line: int, raw: bool, n: int = 20) -> None:
    """Every cutting of `prefix` (without its end) emits lines 1..last_line."""
    for splits in split_plans(prefix, n):
        r = run(prefix, splits, raw, eof=False)
        assert r.chunks and r.chunks[-1].end_line >= last_line, f"{r.ranges()} of {prefix!r} (splits={splits})"


def ranges_all(answer: str, raw: bool, n: int = 20) -> set[tuple[tuple[int, int], ...]]:
    """The chunk ranges of every cutting (after checking each against the oracle)."""
    x = extract(answer, raw)
    out = set()
    for splits in split_plans(answer, n):
        r = run(answer, splits, raw)
        check_stream(r, x.program)
        out.add(tuple(r.ranges()))
    return out


def together(answer: str, raw: bool, first: int, last: int) -> None:
    """Lines first..last come out in one chunk, in every cutting."""
    check_many(answer, raw, n=20)
    for ranges in ranges_all(answer, raw):
        assert any(a <= first and last <= b for a, b in ranges), (ranges, first, last)


# --------------------------------------------------------------------------------------------
# else / elif / except / finally belong to the statement before them


CLAUSE_PROGRAMS = {
    "if_else_comment": "if x:\n    a()\n# comment\nelse:\n    b()\n",
    "elif_chain": "if x:\n    a()\nelif y:\n    b()\n\n# c\nelif z:\n    c()\nelse:\n    d()\n",
    "try_all": ("try:\n    a()\nexcept ValueError:\n    b()\n# c\nexcept:\n    pass\nelse:\n    c()\n"
                "# c2\nfinally:\n    d()\n"),
    "try_finally": "try:\n    a()\n\n\nfinally:\n    d()\n",
    "for_else": "for i in r:\n    a()\n# c\nelse:\n    b()\n",
    "while_else": "while x:\n    a()\n\nelse:\n    b()\n",
    "one_line_if_else": "if x: a()\n# c\nelse: b()\n",
}


@pytest.mark.parametrize("raw", MODES)
@pytest.mark.parametrize("name", list(CLAUSE_PROGRAMS))
def test_following_clause_belongs_to_the_statement(name: str, raw: bool) -> None:
    """A column-0 else/elif/except/finally (even after a column-0 comment) continues the statement."""
    code = CLAUSE_PROGRAMS[name] + "print('next')\n"
    n = count_lines(CLAUSE_PROGRAMS[name])
    together(code if raw else fenced(code), raw, 1, n)


HELD = [
    ("if x:\n    pass\n", ["", "e", "el", "els", "else", "eli", "elif", "else:", "elif y", "# c\n", "# c\ne", "\n\n    ",
                          "    # indented comment\n", "\n\nel"]),
    ("try:\n    pass\nexcept E:\n    pass\n", ["e", "ex", "exc", "excep", "except", "el", "else", "f", "fin",
                                               "finally", "# c\nexc"]),
    ("try:\n    pass\n", ["", "e", "exc", "f", "fin", "finally"]),
    ("try:\n    pass\nexcept E:\n    pass\nelse:\n    pass\n", ["f", "fina", "finally"]),
    ("for i in r:\n    pass\n", ["e", "el", "else", "\n# c\nels"]),
    ("while x:\n    pass\n", ["e", "els", "else"]),
    ("if x: y()\n", ["", "e", "el", "else", "eli"]),
    ("for i in r: print(i)\n", ["", "e", "else"]),
    ("def f():\n    return 1\n", ["", "\n", "# c\n", "    "]),
    ("class A:\n    x = 1\n", ["", "\n\n", "  "]),
    ("@a\n", ["", "@b(1)\n", "@b(1)\ndef", "@b(1)\ndef f(): pass", "\n# c\n"]),
    ("@decorator\nclass C: ...\n", ["", "e"]),
    ("x = [\n", ["1,\n", "1,\n2", "1,\n2]", "1,\nelse\n"]),
    ("s = \"\"\"\n", ["print(1)\n", "print(1)\nif x:\n", "else:\n", "```\n", "\"\"", "\"\"\""]),
    ("f = f\"\"\"\n", ["{x}\n", "print(1)\n", "{x\n}\n"]),
    ("s = '''\n", ["'''", "x'''"]),
    ("x = 1 + \\\n", ["", "2", "2 \\\n", "2 \\\n+ 3"]),
    ("a = 1;", ["", " b = 2", " b = 2;"]),
    ("a = 1; b", [" = 2"]),
    ("print(1", ["", ")"]),
    ("x = 1\r\nif x:\r\n    pass\r\n", ["", "e", "\r\n", "# c\r\n"]),
    ("match x:\n    case 1:\n        pass\n", ["", "# c\n", "\n"]),
    ("if x:\n\tpass\n", ["", "e", "\t"]),
]


@pytest.mark.parametrize("raw", MODES)
@pytest.mark.parametrize("head, tails", HELD, ids=[h[:14] for h, _ in HELD])
def test_nothing_proves_the_statement_closed(head: str, tails: list[str], raw: bool) -> None:
    """The last statement stays back while the text after it could still extend it.

    A partial token (`e`, `el`, `exc`, `fin`) proves nothing; nor does a comment, a blank line,
    an indentation, an open bracket, string or continuation, or a line without its end.
    """
    line = 2 if head.startswith("x = 1\r\n") else 1  # the held statement's first line
    for tail in tails:
        assert_held(as_mode(head + tail, raw), line, raw)


@pytest.mark.parametrize("raw", MODES)
def test_backslash_at_column_0_joins_the_next_line(raw: bool) -> None:
    """A line that is only `\\` joins the next one, so `\\\nelse:` still continues the if (ast agrees)."""
    head = "if x:\n    pass\n"
    program = head + "\\\nelse:\n    pass\n"
    assert len(ast.parse(program).body) == 1
    for tail in ["\\", "\\\n", "\\\ne"]:
        assert_held(as_mode(head + tail, raw), 1, raw)
    together(program if raw else fenced(program), raw, 1, 5)


PROVEN = [
    ("if x:\n    pass\n", ["x", "print(1)", "elsewhere", "else_", "elifx", "e1", "@", "(", "'", "#c\nx"], 2),
    ("try:\n    pass\nexcept E:\n    pass\n", ["x", "exceptional ", "finally_", "elsewhere "], 4),
    ("try:\n    pass\nfinally:\n    pass\n", ["x", "y = 1\n"], 4),
    ("x = 1\n", ["y = 2\n", "if y:\n"], 1),
    ("@a\ndef f(): pass\n", ["x", "@b"], 2),
]


@pytest.mark.parametrize("raw", MODES)
@pytest.mark.parametrize("head, tails, last", PROVEN, ids=[h[:14] for h, _, _ in PROVEN])
def test_a_new_statement_proves_the_previous_closed(head: str, tails: list[str], last: int, raw: bool) -> None:
    """Once the next column-0 line has provably begun a new statement, the previous one is out.

    (The tail's first token is complete, plus a line: the promptness the oracle demands.)
    """
    for tail in tails:
        assert_out(as_mode(head + tail + "\nz = 0\n", raw), last, raw)


# --------------------------------------------------------------------------------------------
# decorators, column-0 text that is not a statement start, one-liners, semicolons


@pytest.mark.parametrize("raw", MODES)
@pytest.mark.parametrize("code, first, last", [
    ("x = 1\n@a\n@b(1)\ndef f(): pass\ny = 2\n", 2, 4),
    ("@a\n@b(1)\ndef f(): pass\n", 1, 3),
    ("@decorator\nclass C: ...\nC()\n", 1, 2),
    ("@a(\n1,\n)\n\n# c\n@b\nclass C:\n    pass\nC()\n", 1, 8),
    ("x = [\n1,\n2]\ny = 3\n", 1, 3),
    ("s = \"\"\"\nprint(1)\nif x:\n\"\"\"\nt = 1\n", 1, 4),
    ("f = f\"\"\"\n{x}\nprint(1)\nelse:\n\"\"\"\nt = 1\n", 1, 5),
    ("x = 1 + \\\n2\ny = 3\n", 1, 2),
    ("c = \"abc\\\ndef\"\ny = 3\n", 1, 2),
    ("a = 1; b = 2\nc = 3\n", 1, 1),
    ("if x: a = 1; b = 2\nc = 3\n", 1, 1),
])
def test_statement_comes_out_whole(code: str, first: int, last: int, raw: bool) -> None:
    """Decorator chains, bracketed/quoted/continued lines and `;` lines are one statement (one chunk)."""
    together(code if raw else fenced(code), raw, first, last)


@pytest.mark.parametrize("raw", MODES)
@pytest.mark.parametrize("code", [
    "if x: y()\nz = 1\n", "for i in r: print(i)\nz = 1\n", "def f(): return 1\nz = 1\n",
    "class A: pass\nz = 1\n", "while 0: pass\nz = 1\n", "with a: pass\nz = 1\n",
])
def test_one_line_compound_statements(code: str, raw: bool) -> None:
    """A compound statement on one line is a chunk of its own, out before the next one."""
    check_many(code if raw else fenced(code), raw, n=20)
    for ranges in ranges_all(code if raw else fenced(code), raw):
        assert ranges[0] == (1, 1), ranges


# --------------------------------------------------------------------------------------------
# line ends, blank lines, comments


@pytest.mark.parametrize("raw", MODES)
def test_crlf_and_tabs(raw: bool) -> None:
    """\\r\\n is one line end, also when a delta ends between \\r and \\n; tabs indent."""
    code = "x = 1\r\nif x:\r\n\tprint(1)\r\n# c\r\nelse:\r\n\tprint(2)\r\n\r\ny = 2\r\n"
    answer = code if raw else fenced(code)
    check_many(answer, raw)
    cr = [i + 1 for i, ch in enumerate(answer) if ch == "\r"]
    r = run(answer, cr, raw)
    check_stream(r, extract(answer, raw).program)
    assert r.ranges()[:2] in ([(1, 1), (2, 7)], [(1, 1), (2, 6)]), r.ranges()
    assert all(c.code.endswith("\r\n") for c in r.chunks)


@pytest.mark.parametrize("text", ["x = 1\ry = 2\r", "x = 1\ry = (\r1)\rif y:\r    pass\rz = 3\r"])
def test_lone_carriage_return_ends_a_line(text: str) -> None:
    """CPython ends a line at a lone \\r too; chunks and line numbers must follow it."""
    assert len(ast.parse(text).body) >= 2
    check_many(text, raw=True, n=5)


def cr_answer(code: str, before: str = "Sure:\r\r", after: str = "\rDone.\r") -> str:
    """A chat answer written with lone \\r line ends throughout: prose, fences and code."""
    return f"{before}```python\r{code}```{after}"


LONE_CR_CHUNKS = [  # (code, the chunks' line ranges: the same in every cutting)
    ("x = 1\ry = 2\r", [(1, 1), (2, 2)]),
    ("x = 1\r\r\ry = 2\r", [(1, 3), (4, 4)]),  # blank lines go with the statement before
    ("if x:\r    a()\r# c\relse:\r    b()\rz = 1\r", [(1, 5), (6, 6)]),
    ("s = \"\"\"\rif x:\r\"\"\"\rt = 1\r", [(1, 3), (4, 4)]),
    ("t = (1,\r2)\ru = 1 + \\\r2\rv = 3\r", [(1, 2), (3, 4), (5, 5)]),
    ("@a\r@b\rdef f(): pass\rg = 1\r", [(1, 3), (4, 4)]),
    ("x = 1\r\ny = 2\rz = 3\n", [(1, 1), (2, 2), (3, 3)]),
    ("x = 1\r", [(1, 1)]),
]


@pytest.mark.parametrize("raw", MODES)
@pytest.mark.parametrize("code, ranges", LONE_CR_CHUNKS)
def test_chunks_end_where_cpython_ends_lines(code: str, ranges: list[tuple[int, int]], raw: bool) -> None:
    """Line spans count a lone \\r as a line end, as `ast` does: no line is off by one, no chunk is empty."""
    answer = code if raw else cr_answer(code)
    x = check_many(answer, raw, n=20)
    assert x.program == code
    for splits in split_plans(answer, 20):
        r = run(answer, splits, raw)
        assert r.ranges() == ranges, (r.ranges(), splits)
        assert r.terminal == CodeEnded(len(ranges), ranges[-1][1])


HELD_CR = [
    ("x = 1\rif x:\r    pass\r", ["", "e", "el", "else", "\n", "\r", "\r\n", "# c\r", "# c\re", "\relif", "    "]),
    ("x = 1\rtry:\r    pass\r", ["exc", "\nfin", "\r\rfinally"]),
    ("x = 1\r@a\r", ["", "\r", "@b\r", "def"]),
    ("x = 1\ry = (\r", ["1,\r", "1,\r2", "\r\r"]),
    ("x = 1\rs = '''\r", ["else:\r", "```\r", "'''"]),
    ("x = 1\ry = 1 + \\\r", ["", "2"]),
]


@pytest.mark.parametrize("raw", MODES)
@pytest.mark.parametrize("head, tails", HELD_CR, ids=[h[:14] for h, _ in HELD_CR])
def test_after_a_lone_cr_nothing_proves_the_statement_closed(head: str, tails: list[str], raw: bool) -> None:
    """The lone-\\r twins of the held prefixes: line 2 stays back, however the text is cut."""
    for tail in tails:
        assert_held(as_mode(head + tail, raw), 2, raw)


@pytest.mark.parametrize("raw", MODES)
@pytest.mark.parametrize("head, last", [("x = 1\r", 1), ("if x:\r    pass\r", 2), ("x = 1\r\n", 1)])
def test_after_a_lone_cr_a_new_statement_proves_the_previous_closed(head: str, last: int, raw: bool) -> None:
    for tail in ["y = 2\r", "y\r", "print(1)\n"]:
        assert_out(as_mode(head + tail + "z = 0\r", raw), last, raw)


@pytest.mark.parametrize("answer, program", [
    ("A\r```python\rx = 1\r```\rB\r```py\ry = 2\r```", "x = 1\ry = 2\r"),  # the last fence ends the stream
    ("A\r\n```python\rx = 1\r\n```\r\r```\ry = 2\n```\n", "x = 1\r\ny = 2\n"),
    ("```python\rs = '''\r```\r'''\r```\rtext ```\r", "s = '''\r```\r'''\r"),  # a fence inside a string
    ("```python\rx = 1\r   ```   \rz\r", "x = 1\r"),
    ("```python\rx = 1\r````\r```bash\rls\r```\r", "x = 1\r"),
    ("   ```python\r   x = 1\r   if x:\r       y = 2\r   ```\r", "x = 1\rif x:\r    y = 2\r"),
])
def test_fence_lines_end_at_a_lone_cr(answer: str, program: str) -> None:
    """Markdown ends lines at a lone \\r as CPython does: openers and closers ending so are fences."""
    x = check_many(answer, n=20)
    assert x.program == program


def test_no_final_newline() -> None:
    """The last line without its end is complete only at the end; the chunk keeps it unterminated."""
    for text in ["print(1)", "x = 1\nprint(x)", "if x:\n    pass", "x = 1\n# tail comment"]:
        x = check_many(text, raw=True)
        for splits in split_plans(text, 10):
            r = run(text, splits, raw=True)
            last = r.chunk_seen[-1]
            assert not last.before_eof and last.event.code.endswith(text.rsplit("\n", 1)[-1])
            assert r.terminal == CodeEnded(len(r.chunks), count_lines(x.program))


@pytest.mark.parametrize("text", [
    "if x:\n    pass\ne", "try:\n    pass\nexcept E:\n    pass\nfin", "@a\ndef f(): pass", "x = [\n1]",
    "for i in r:\n    pass\n\n# c\nel",
])
def test_last_line_without_end_that_looks_like_a_keyword(text: str) -> None:
    """`e` at the very end is a name, not an unfinished `else`: the end settles it, nothing earlier."""
    check_many(text, raw=True, n=20)


def test_print_one_at_eof() -> None:
    r = run("print(1)", [], raw=True)
    assert r.chunks == [Chunk(0, 1, 1, "print(1)", 8)]
    assert r.terminal == CodeEnded(1, 1)


@pytest.mark.parametrize("raw", MODES)
@pytest.mark.parametrize("code", [
    "", "\n", "\n\n\n", "   \n\t\n", "# only a comment\n", "# one\n\n# two\n", "# no newline",
    "x = 1\n# tail\n", "x = 1\n\n\n", "x = 1\n   # indented tail", "\n\n# c1\n# c2\nx = 1\ny = 2\n",
])
def test_blank_and_comment_only_text_is_still_emitted(code: str, raw: bool) -> None:
    """Concatenating the chunks gives exactly the code, even when some of it is blank or comments."""
    if not raw and code == "# no newline":
        code += "\n"
    answer = code if raw else fenced(code)
    x = check_many(answer, raw, n=10)
    r = run(answer, [], raw)
    assert r.code == x.program
    assert r.terminal == CodeEnded(len(r.chunks), count_lines(x.program))


@pytest.mark.parametrize("raw", MODES)
def test_leading_comments_go_with_the_first_statement(raw: bool) -> None:
    """A comment block before the first statement is not a chunk of its own."""
    code = "# Step 1: set up\n# (no imports needed)\n\nx = 1\ny = 2\n"
    for ranges in ranges_all(code if raw else fenced(code), raw):
        assert ranges[0][0] == 1 and ranges[0][1] >= 4, ranges


# --------------------------------------------------------------------------------------------
# markdown: fences, several blocks, indentation, non-code


def test_fence_inside_a_string_does_not_close_the_block() -> None:
    """A ``` line inside an open triple-quoted string is code; the real fence comes after."""
    answer = "Code:\n\n```python\ns = \"\"\"\n```\n\"\"\"\nx = \"```\"\nprint(s, x)\n```\n\nThe end: ```\n"
    x = check_many(answer)
    assert x.program == "s = \"\"\"\n```\n\"\"\"\nx = \"```\"\nprint(s, x)\n"
    assert_held("Code:\n\n```python\ns = \"\"\"\n```\n", 1, raw=False)
    assert_held("Code:\n\n```python\ns = \"\"\"\n```\nprose\n", 1, raw=False)


@pytest.mark.parametrize("code", [
    "x = 1  # don't use ''' here\n",
    "x = \"'''\"\n",
    "x = '\"\"\"'\n",
    "print(f\"\"\"\n```\n{1}\n\"\"\")\n",
    "print(rb'''\n```\n''')\n",
    "d = {'k': \"\"\"\n```\n\"\"\"}\n",
    "s = '''a''' + '''\n```\n'''\n",
    "s = 'it''s'\n",
    "s = '\\''\n",
    "s = \"\"\"x\\\"\"\"\"\n",
    "s = \"\"\"\n\\\"\"\"\n```\n\"\"\"\n",
    "# '''\nx = 1\n",
])
def test_which_quotes_open_a_string_around_a_fence(code: str) -> None:
    """Only a really open triple-quoted string keeps a ``` line in the block: not one in a
    comment, inside another string, escaped, or closed on the same line."""
    answer = f"A\n```python\n{code}```\nprose ''' and \"\"\" more\n```python\nz = 0\n```\n"
    x = check_many(answer, n=10)
    assert x.program == code + "z = 0\n"


def test_fence_inside_an_unterminated_string_runs_to_the_end() -> None:
    """If the string never closes, the ``` was code after all: the block runs to EOF and is invalid."""
    answer = "```python\ns = \"\"\"\n```\nMore prose\n"
    program = "s = \"\"\"\n```\nMore prose\n"
    lineno = syntax_error_line(program)
    for splits in split_plans(answer, 10):
        r = run(answer, splits)
        check_stream(r, program)
        assert isinstance(r.terminal, CodeInvalid) and r.terminal.line == lineno == 1, r.terminal


SEVERAL = (
    "Let me explain.\n"
    "\n"
    "```python\n"
    "import os\n"
    "x = 1\n"
    "def f():\n"
    "    return x\n"
    "```\n"
    "\n"
    "Run it with:\n"
    "\n"
    "```bash\n"
    "python main.py\n"
    "x = oops(\n"
    "```\n"
    "\n"
    "```json\n"
    "{\"a\": 1}\n"
    "```\n"
    "Then:\n"
    "```py\n"
    "print(f())\n"
    "if x:\n"
    "    print('yes')\n"
    "```\n"
    "Bye.\n"
)


def test_several_blocks_join_into_one_program() -> None:
    """Only python blocks run, in order; lines count on across blocks; a fence closes a block's last statement."""
    x = check_many(SEVERAL)
    assert x.program == "import os\nx = 1\ndef f():\n    return x\nprint(f())\nif x:\n    print('yes')\n"
    block2 = SEVERAL.index("```py\n")
    fence1_end = SEVERAL.index("```\n", SEVERAL.index("return x")) + 4
    for splits in split_plans(SEVERAL, 20):
        r = run(SEVERAL, splits)
        def_chunk = next(s for s in r.chunk_seen if s.event.start_line <= 3 <= s.event.end_line)
        assert def_chunk.event.end_line == 4 and def_chunk.fed <= max(r.fed_by(fence1_end), r.fed_by(block2)), \
            (r.ranges(), splits)
        assert [c.start_line for c in r.chunks if c.start_line >= 5][0] == 5
        assert r.terminal == CodeEnded(len(r.chunks), 7)


@pytest.mark.parametrize("info", ["python", "py", "python3", "py3", "", "Python"])
def test_runnable_fence_languages(info: str) -> None:
    answer = f"Text.\n```{info}\nx = 1\n```\n```sh\nls\n```\n```text\nplain\n```\n"
    x = check_many(answer, n=5)
    assert x.program == "x = 1\n"


@pytest.mark.parametrize("indent", [2, 3])
def test_indented_fence(indent: int) -> None:
    """A fence in a list item: the opener's indentation is stripped from every content line."""
    pad = " " * indent
    answer = (
        "Steps:\n\n"
        f"1. First define it:\n{pad}```python\n{pad}x = 1\n{pad}if x:\n{pad}    print(x)\n\n"
        f"{pad}# done\n{pad}y = 2\n{pad}```\n"
        f"2. Then call it:\n{pad}```python\n{pad}print(x, y)\n{pad}```\n"
    )
    x = check_many(answer)
    assert x.program == "x = 1\nif x:\n    print(x)\n\n# done\ny = 2\nprint(x, y)\n"


def test_tilde_fence() -> None:
    """~~~ fences are fences too (CommonMark); a ``` line inside one is content, and closes nothing."""
    answer = "Text.\n~~~python\ns = \"\"\"\n```\n\"\"\"\nx = 1\n~~~\nMore.\n~~~text\nnot code\n~~~\n"
    x = check_many(answer, n=10)
    assert x.program == "s = \"\"\"\n```\n\"\"\"\nx = 1\n"


def test_tab_indented_fence() -> None:
    """If a tab-indented opener counts as a fence, its tab is indentation to strip, not code's."""
    answer = "1.\tDefine:\n\t```python\n\tx = 1\n\tif x:\n\t    print(x)\n\t```\nDone.\n"
    for splits in split_plans(answer, 10):
        r = run(answer, splits)
        assert r.code in ("", "x = 1\nif x:\n    print(x)\n"), (r.seen, splits)
        assert isinstance(r.terminal, CodeEnded), (r.seen, splits)


def test_unterminated_block_is_judged_at_eof() -> None:
    answer = "Here:\n```python\nx = 1\nif x:\n    print(x)\n"
    x = check_many(answer)
    assert x.program == "x = 1\nif x:\n    print(x)\n"
    check_many("Here:\n```python\nx = 1\nif x:\n    print(x)")


@pytest.mark.parametrize("answer", [
    "", "Just prose, no code.\n", "Use `x = 1` inline, or ``` in the middle of a line.\n",
    "```bash\npip install numpy\n```\n", "Text\n```json\n{\"a\": 1}\n```\nmore ```python\n",
])
def test_no_code_at_all(answer: str) -> None:
    for splits in split_plans(answer, 10):
        r = run(answer, splits)
        assert [s.event for s in r.seen] == [CodeEnded(0, 0)], r.seen


def test_raw_mode_has_no_markdown() -> None:
    """For completion models the fence itself is (invalid) Python."""
    text = "```python\nx = 1\n```\n"
    r = run(text, [], raw=True)
    check_stream(r, text)
    assert isinstance(r.terminal, CodeInvalid) and r.terminal.line == 1


@pytest.mark.parametrize("raw", MODES)
def test_non_ascii(raw: bool) -> None:
    """Tree-sitter counts bytes; lines, code and emitted_at must stay in characters."""
    code = "s = 'é🎉中文'  # コメント 🚀\nt = \"\"\"\nü\n𝔘𝔫𝔦𝔠𝔬𝔡𝔢\n\"\"\"\n# ß\nif s:\n    print('✓')\nprint(s, t)\n"
    answer = code if raw else fenced(code)
    check_many(answer, raw)
    r = run(answer, list(range(1, len(answer))), raw)
    assert r.code == code
    assert all(s.event.emitted_at <= s.fed for s in r.chunk_seen)


@pytest.mark.parametrize("raw", MODES)
def test_unicode_line_separators_are_not_line_ends(raw: bool) -> None:
    """U+2028, U+0085 and form feed end no line for CPython (str.splitlines would split them)."""
    code = "s = 'a\u2028b'\nt = 'c\x85d'\n\x0cx = 1\nprint(s, t, x)\n"
    assert [n.lineno for n in ast.parse(code).body] == [1, 2, 3, 4]
    check_many(code if raw else fenced(code), raw, n=10)


def test_empty_deltas_are_harmless() -> None:
    detector = Detector(raw=True)
    events = []
    for piece in ["", "x = 1\n", "", "", "y = 2\n", ""]:
        detector.receive_data(piece)
        while (event := detector.next_event()) is not NEED_DATA:
            events.append(event)
    detector.receive_eof()
    while (event := detector.next_event()) is not NEED_DATA:
        events.append(event)
    assert "".join(e.code for e in events if isinstance(e, Chunk)) == "x = 1\ny = 2\n"
    assert events[-1] == CodeEnded(len(events) - 1, 2)


# --------------------------------------------------------------------------------------------
# syntax errors


def syntax_error_line(program: str) -> int:
    try:
        ast.parse(program)
    except SyntaxError as error:
        return error.lineno
    raise AssertionError(f"{program!r} parses")


ERRORS = [
    "x = 1\ny = (\nprint(2\n",
    "x = 1\ny = = 2\nz = 3\n",
    "x = 1\n    y = 2\n",
    "def f(:\n  pass\n",
    "x = \"abc\ny = 1\n",
    "if x\n    pass\n",
    "else:\n  pass\n",
    "x = 1\nprint(1 +)\n",
    "if x:\n    a\n  b\n",
    "x = [1, 2\ny = 3\n",
    "s = '''\nabc\n",
    "x = 1\nif x:\ny = 2\n",
    "x = 1\ndef f():\n",
    "x = 1\n)\n",
    "x = 1\nfor in range(3):\n    pass\n",
    "x = 1\nif x:\n    pass\n  else:\n    pass\n",
    "x = (1,\n2,\ny = 3\nz = 4\n",
    "print('a'\n\n\nz = 1\n",
    "x = 1\nclass:\n    pass\n",
    "import os\nos.path.join('a' 'b' c)\n",
    "def f():\n    return 1\nx = f(\n",
    "x = 1\nif x:\n    print(1)\nelse\n    print(2)\n",
    "try:\n    pass\nx = 1\n",
    "x = 1\ny = 2 +\n",
    "x = 1\n\ty = 2\n",
    "a = 1\n@dec\nx = 2\n",
    "x = 1\ny = 'é🎉' +\nz = 3\n",
    # errors only CPython's parser knows (tree-sitter takes these for statements)
    "x = 1\nf() = 2\ny = 3\n",
    "x = 1\ndel f()\ny = 2\n",
    "x = 1\nprint 'hello'\ny = 2\n",
    "x = 1\ndef f(a=1, b): pass\ny = 2\n",
    "x = 1\nf(x for x in y, 1)\ny = 2\n",
    "x = 1\ny = 0777\nz = 2\n",
    "x = 1\ns = b'é'\nz = 2\n",
    "x = 1\ny = f\"{\"a\"}\"\nz = 2\n",
    "x = 1\na, b += 1\nz = 2\n",
    "x = 1\ndef f():\n    x() = 2\nz = 2\n",
    "x = 1\n€ = 2\nz = 3\n",
    "x = 1\n@dec\n",
]


@pytest.mark.parametrize("raw", MODES)
@pytest.mark.parametrize("program", ERRORS)
def test_syntax_error_line_is_asts(program: str, raw: bool) -> None:
    """CodeInvalid names the line CPython names; what ran before it was whole, valid statements."""
    lineno = syntax_error_line(program)
    answer = program if raw else fenced(program)
    for splits in split_plans(answer, 10):
        r = run(answer, splits, raw)
        check_stream(r, program)
        assert isinstance(r.terminal, CodeInvalid), (r.seen, splits)
        assert r.terminal.line == lineno, (r.terminal, lineno, splits)
        ast.parse(r.code)
        assert all(c.end_line < lineno for c in r.chunks), (r.ranges(), lineno)


@pytest.mark.parametrize("raw", MODES)
@pytest.mark.parametrize("end", ["\r", "\r\n"])
@pytest.mark.parametrize("program", ERRORS)
def test_syntax_error_line_is_asts_whatever_the_line_ends(program: str, end: str, raw: bool) -> None:
    """The same errors written with lone \\r or \\r\\n line ends: CodeInvalid names `ast`'s line."""
    program = program.replace("\n", end)
    lineno = syntax_error_line(program)
    answer = program if raw else cr_answer(program)
    for splits in split_plans(answer, 4):
        r = run(answer, splits, raw)
        check_stream(r, program)
        assert isinstance(r.terminal, CodeInvalid) and r.terminal.line == lineno, (r.terminal, lineno, splits)
        assert all(c.end_line < lineno for c in r.chunks), (r.ranges(), lineno)


@pytest.mark.parametrize("raw", MODES)
@pytest.mark.parametrize("program, line", [
    ("x = 1\rs = 'a\rb'\r", 2),  # a lone \r ends a line inside a one-quote string too: unterminated
    ("x = 1\rs = 'a\r\nb'\r", 2),
    ("x = 1\ry = 2\rprint(x +)\r", 3),
    ("x = 1\r)\r", 2),
])
def test_a_lone_cr_in_a_one_line_string_is_the_error_python_reports(program: str, line: int, raw: bool) -> None:
    assert syntax_error_line(program) == line
    answer = program if raw else cr_answer(program)
    for splits in split_plans(answer, 10):
        r = run(answer, splits, raw)
        check_stream(r, program)
        assert isinstance(r.terminal, CodeInvalid) and r.terminal.line == line, (r.terminal, splits)


@pytest.mark.parametrize("raw", MODES)
def test_syntax_error_is_reported_early(raw: bool) -> None:
    """An error that no later text can repair is reported before the answer ends."""
    program = "x = 1\ny = = 2\nz = 3\n" + "".join(f"w{i} = {i}\n" for i in range(8))
    answer = program if raw else fenced(program, after="\n" + "More words. " * 20 + "\n")
    for splits in split_plans(answer, 20):
        r = run(answer, splits, raw)
        check_stream(r, program)
        assert isinstance(r.terminal, CodeInvalid) and r.terminal.line == 2
        assert r.terminal_seen.before_eof, "reported only at the end"
        assert r.ranges() in ([], [(1, 1)]), r.ranges()


def test_syntax_error_in_second_block_counts_program_lines() -> None:
    answer = ("A:\n```python\nx = 1\ny = 2\n```\nB:\n```bash\nls\n```\nC:\n```python\nprint(x)\nz = = 3\n"
              "w = 4\n```\nDone.\n")
    program = "x = 1\ny = 2\nprint(x)\nz = = 3\nw = 4\n"
    assert syntax_error_line(program) == 4
    for splits in split_plans(answer, 20):
        r = run(answer, splits)
        check_stream(r, program)
        assert isinstance(r.terminal, CodeInvalid) and r.terminal.line == 4, (r.terminal, splits)
        assert r.terminal_seen.before_eof


def test_fence_closes_the_statement() -> None:
    """A block's last statement ends at its fence: an `else` opening the next block continues nothing."""
    answer = "A\n```python\nx = 1\nif x:\n    y = 1\n```\nB\n```python\nelse:\n    y = 2\n```\n"
    for splits in split_plans(answer, 20):
        r = run(answer, splits)
        check_stream(r, "x = 1\nif x:\n    y = 1\nelse:\n    y = 2\n")
        assert r.ranges() == [(1, 1), (2, 3)], (r.ranges(), splits)
        assert isinstance(r.terminal, CodeInvalid) and r.terminal.line == 4, (r.terminal, splits)


def test_block_left_open_at_its_fence_is_invalid() -> None:
    """Each block is judged complete at its closing fence: an open bracket there is an error then."""
    answer = "A:\n```python\nx = 1\ny = (\n```\nB:\n```python\nprint(3)\n```\n" + "More. " * 30 + "\n"
    program = "x = 1\ny = (\nprint(3)\n"
    assert syntax_error_line(program) == 2
    block2 = answer.index("```python\nprint")
    for splits in split_plans(answer, 20):
        r = run(answer, splits)
        check_stream(r, program)
        assert isinstance(r.terminal, CodeInvalid) and r.terminal.line == 2, (r.terminal, splits)
        assert r.terminal_seen.before_eof and r.terminal_seen.fed <= r.fed_by(block2 + 1), (r.terminal_seen, splits)


@pytest.mark.parametrize("name", ["keyword_lookalikes", "decorators", "column0_in_strings", "crlf"])
@pytest.mark.parametrize("raw", MODES)
def test_draining_late_changes_nothing(name: str, raw: bool) -> None:
    """A caller that feeds many deltas before asking gets the same chunks, none marked too early."""
    from tests.detector.oracle import lower_bound, statement_groups
    from tests.detector.programs import PROGRAMS

    code = PROGRAMS[name]
    answer = code if raw else fenced(code)
    x = extract(answer, raw)
    groups = statement_groups(x.program)
    for every in [1, 7, 50]:
        detector = Detector(raw=raw)
        events = []
        for i in range(0, len(answer), every):
            detector.receive_data(answer[i:i + every])
            if (i // every) % 10 == 9:
                while (event := detector.next_event()) is not NEED_DATA:
                    events.append(event)
        detector.receive_eof()
        while (event := detector.next_event()) is not NEED_DATA:
            events.append(event)
        chunks = [e for e in events if isinstance(e, Chunk)]
        assert "".join(c.code for c in chunks) == x.program
        assert events[-1] == CodeEnded(len(chunks), count_lines(x.program))
        for c in chunks:
            lb = lower_bound(x, groups, c)
            assert c.emitted_at <= len(answer) and (lb is None or c.emitted_at >= lb), (c, lb, every)


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("cut", [None, 7, 20000])
def test_a_statement_too_deep_for_the_compiler_is_invalid_where_it_starts(raw: bool, cut: int | None) -> None:
    """python refuses a 10,000-term sum while compiling (RecursionError) and runs nothing: the detector says so
    at the statement's line, after the statements before it, instead of dying with the parser's RecursionError."""
    code = "print('a')\nx = " + "+".join(["1"] * 10000) + "\nprint(x)\n"
    text = code if raw else f"```python\n{code}```\n"
    detector = Detector(raw=raw)
    for piece in ([text] if cut is None else [text[:cut], text[cut:]]):
        detector.receive_data(piece)
    detector.receive_eof()
    events = []
    while (event := detector.next_event()) is not NEED_DATA:
        events.append(event)
    assert [type(event) for event in events[:2]] == [Chunk, CodeInvalid]
    assert events[0].code == "print('a')\n"
    assert (events[1].line, events[1].error_type) == (2, "RecursionError")
    assert "during compilation" in events[1].message
