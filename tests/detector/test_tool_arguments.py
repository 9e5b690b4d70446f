"""Programs streamed as code tool calls' JSON arguments, cut anywhere, through the producer's decoding and the
detector, against CPython's `ast`.

The detector sees what the producer publishes: each arguments piece decoded to the code it completes. So a
JSON cutting of the arguments is a cutting of the program, and the oracle checks that cutting as it checks
a markdown answer's: the chunks concatenate to exactly the program, every boundary lies between top-level
statements of `ast.parse`, and nothing is out before the text proves it final. Escapes (`\\n`, `\\"`, `\\\\`,
`\\uXXXX`, surrogate pairs) fall on every cut because every program line ends in one.
"""

from __future__ import annotations

import json
import random

import pytest

from eager.common.protocol import CodeTool
from eager.producer.tool_calls import ToolCallStream
from tests.detector.oracle import check_plans, extract, parses, random_splits
from tests.detector.programs import PROGRAMS
from tests.detector.test_fuzz import random_program

ESCAPED = "s = 'tab\\there \"quoted\" back\\\\slash é 中 🎉 \\u2028'\nprint(s, '\\x00', r'\\n')\n"


def arguments(code: str, rng: random.Random) -> str:
    """A call's arguments as models write them: other keys on either side, any spacing, ASCII or not."""
    before = rng.choice([{}, {"explanation": 'runs "it" {now}'}])
    after = rng.choice([{}, {"timeout": 30}, {"files": ["code", {"code": 0}]}])
    return json.dumps({**before, "code": code, **after}, ensure_ascii=rng.random() < 0.5,
                      indent=rng.choice([None, 1]))


def cut(text: str, rng: random.Random) -> list[str]:
    """One character at a time, or random pieces of 1 to 8 characters."""
    cuts = list(range(1, len(text))) if rng.random() < 0.2 else random_splits(rng, len(text), 8)
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def streamed_program(codes: list[str], rng: random.Random) -> tuple[str, list[int]]:
    """The codes as chat tool calls of `python` (a call of another tool between), fed piece by piece:
    the program the detector receives and the offsets at which its pieces end."""
    stream = ToolCallStream(CodeTool())
    program, offsets = "", []
    for index, code in enumerate(codes):
        if index and rng.random() < 0.5:
            for k, piece in enumerate(cut(json.dumps({"query": "not code"}), rng)):
                program += stream.piece(100 + index, piece, "web_search" if k == 0 else None)
        for k, piece in enumerate(cut(arguments(code, rng), rng)):
            program += stream.piece(index, piece, "python" if k == 0 else None, f"call_{index}" if k == 0 else None)
            offsets.append(len(program))
    calls, error = stream.finish(cut=False)
    assert error is None, error
    assert [c.ran for c in calls if c.name == "python"] == [True] * len(codes)
    return program, offsets


def joined(codes: list[str]) -> str:
    """The program several calls make: each call's code on a line of its own, after the code before it."""
    program = ""
    for code in codes:
        if program and not program.endswith(("\n", "\r")):
            program += "\n"
        program += code
    return program


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_each_program_as_one_call_in_random_cuttings(name: str) -> None:
    program = joined([PROGRAMS[name], ESCAPED])
    x = extract(program, raw=True)
    rng = random.Random(name)
    plans = []
    for _ in range(12):
        streamed, offsets = streamed_program([PROGRAMS[name], ESCAPED], rng)
        assert streamed == program
        plans.append(offsets)
    check_plans(program, True, x, plans)


@pytest.mark.parametrize("seed", range(30))
def test_random_programs_over_several_calls(seed: int) -> None:
    rng = random.Random(seed)
    codes = [random_program(rng) for _ in range(rng.randint(1, 3))]
    while not parses(program := joined(codes)):  # a statement cut between calls, or mixed indentation
        codes = [random_program(rng) for _ in range(rng.randint(1, 3))]
    streamed, offsets = streamed_program(codes, rng)
    assert streamed == program
    check_plans(program, True, extract(program, raw=True), [offsets])
