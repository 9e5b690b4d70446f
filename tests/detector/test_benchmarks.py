"""Every benchmark answer through the detector: real model-shaped markdown, real programs.

The expected program comes from the test's own line-based fence parser (oracle.extract), not
from detector/. It differs from CommonMark in ways these answers do not exercise (see
oracle.py's docstring); a disagreement on an answer is a finding either way.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from eager.detector._events import CodeEnded
from tests.detector.oracle import check_oracle, check_stream, extract, parses, run

BENCHMARKS = Path("/work/shared/benchmarks")


def answers() -> list[tuple[str, str]]:
    out = []
    for path in sorted(BENCHMARKS.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                task = json.loads(line)
                out.append((task["id"], task["answer"]))
    return out


ANSWERS = answers()


def test_benchmarks_are_there() -> None:
    assert len(ANSWERS) >= 50, "benchmark answers missing"


@pytest.mark.parametrize("task_id, answer", ANSWERS, ids=[t for t, _ in ANSWERS])
def test_benchmark_answer(task_id: str, answer: str) -> None:
    """~4-character deltas (as tokens arrive) and one random cutting agree with ast on the fenced code."""
    x = extract(answer)
    assert x.program.strip(), "no python block found by the reference parser"
    rng = random.Random(task_id)
    plans = {
        "4-char": list(range(4, len(answer), 4)),
        "random": sorted(rng.sample(range(1, len(answer)), k=min(len(answer) - 1, len(answer) // 5))),
    }
    for name, splits in plans.items():
        r = run(answer, splits)
        try:
            if parses(x.program):
                check_oracle(r, x)
            else:
                check_stream(r, x.program)
        except AssertionError as error:
            raise AssertionError(f"{task_id} ({name} deltas): {error}") from None
        if parses(x.program):
            assert r.terminal == CodeEnded(len(r.chunks), len(x.program.splitlines()))
