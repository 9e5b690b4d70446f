"""Seeded random answers built from statement shapes, separators and fences, against the oracle.

Hand-written programs test the rules one at a time; bugs live where rules meet (a comment
between a decorator and a fence, a continuation line right before a closing fence, ...).
"""

from __future__ import annotations

import random

import pytest

from tests.detector.oracle import check_plans, count_lines, extract, parses, random_splits

STATEMENTS = [
    "x = 1\n",
    "print(x)\n",
    "a = 1; b = 2\n",
    "if x: y = 1\n",
    "if x:\n    y = 1\n",
    "if x:\n    y = 1\nelse:\n    y = 2\n",
    "if x:\n    y = 1\n# c\nelif x > 1:\n    y = 3\n",
    "for i in range(2):\n    pass\nelse:\n    pass\n",
    "for i in range(2): pass\n",
    "while False:\n    pass\n",
    "try:\n    pass\nexcept Exception:\n    pass\n",
    "try:\n    pass\nexcept Exception as e:\n    pass\nelse:\n    pass\nfinally:\n    pass\n",
    "try: pass\nfinally: pass\n",
    "def f(a, b=2):\n    return a + b\n",
    "def g(): return 1\n",
    "@staticmethod\ndef h():\n    pass\n",
    "@a.b(\n1)\n@c\nclass K:\n    z = 1\n",
    "class C:\n    def m(self):\n        pass\n\n    x = 1\n",
    "x = [\n1,\n2,\n]\n",
    "s = \"\"\"\nelse:\n```\n\"\"\"\n",
    "s = '''\n# not a comment\n  indented\n'''\n",
    "t = (1 +\n     2)\n",
    "u = 1 + \\\n2\n",
    "with open(__file__) as fh:\n    pass\n",
    "match x:\n    case 1:\n        pass\n    case _:\n        pass\n",
    "async def co():\n    await co()\n",
    "elsewhere = 1\n",
    "e = 1\n",
    "finally_ = 1\n",
    "exceptional = 2\n",
    "import os, sys\n",
    "from os import (\n    path,\n    sep,\n)\n",
    "assert x, 'msg é 🎉'\n",
    "lambda: (\n    1)\n",
    "d = {'k': [1, {2: 3}]}\n",
    "f'{x!r:>{10}}'\n",
    "if x:\n    s = '''\nelse:\n'''\n",
    "def k():\n    '''doc\n\nelse:\n'''\n    return 1\n",
]

SEPARATORS = ["", "", "", "\n", "\n\n", "# comment\n", "# é 中\n\n", "    # indented comment\n", "   \n", "\t\n"]


def random_program(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 8)):
        parts.append(rng.choice(SEPARATORS))
        parts.append(rng.choice(STATEMENTS))
    if rng.random() < 0.3:
        parts.append(rng.choice(SEPARATORS))
    program = restyle("".join(parts), rng)
    if rng.random() < 0.15:
        program = program.rstrip("\r\n")
    return program


def restyle(text: str, rng: random.Random) -> str:
    """Mostly \\n line ends; sometimes all \\r\\n, all lone \\r (CPython's three), or a mix, line by line."""
    style = rng.random()
    if style < 0.6:
        return text
    if style < 0.75:
        return text.replace("\n", "\r\n")
    if style < 0.85:
        return text.replace("\n", "\r")
    *lines, last = text.split("\n")
    return "".join(line + rng.choice(["\n", "\r\n", "\r"]) for line in lines) + last


def random_answer(rng: random.Random) -> tuple[str, bool]:
    """A raw program, or an answer of prose, python blocks and other blocks."""
    if rng.random() < 0.3:
        return random_program(rng), True
    parts = [rng.choice(["", "Here is the code:\n\n", "Sure.\n"])]
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        if kind < 0.75:
            indent = rng.choice(["", "", "", "   "])
            info = rng.choice(["python", "py", "", "python3"])
            program = random_program(rng).replace("\r\n", "\n").replace("\r", "\n")
            if program and not program.endswith("\n"):
                program += "\n"
            body = "".join(indent + line if line.strip() else line for line in program.splitlines(keepends=True))
            parts.append(f"{indent}```{info}\n{body}{indent}```\n")
        else:
            parts.append("```bash\npip install x\nelse:\n```\n")
        parts.append(rng.choice(["", "\n", "Then:\n\n", "Text with ``` inside.\n"]))
    answer = restyle("".join(parts), rng)
    if rng.random() < 0.2:  # the answer is cut off mid-way
        answer = answer[: rng.randint(len(answer) // 2, len(answer))]
    return answer, False


@pytest.mark.parametrize("seed", range(40))
def test_random_answers(seed: int) -> None:
    rng = random.Random(seed)
    checked = 0
    for _ in range(10):
        answer, raw = random_answer(rng)
        x = extract(answer, raw)
        if not parses(x.program):
            continue  # a cut-off answer can end inside a statement
        if count_lines(x.program) != len(x.lines):
            continue  # a code line ending at a lone \r, then one that is only \n: the two merge (README, Limits)
        checked += 1
        plans = [[], list(range(1, len(answer))), *(random_splits(rng, len(answer)) for _ in range(4))]
        check_plans(answer, raw, x, plans)
    assert checked
