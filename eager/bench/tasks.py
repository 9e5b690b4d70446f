"""Benchmark tasks: model answers with programs whose output is known (benchmarks/tasks/README.md)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "tasks"
SUITES = ("ds1000", "humaneval", "humaneval-full")


@dataclass(frozen=True)
class Task:
    id: str
    suite: str
    answer: str
    expected_stdout: str
    exec_s: float  # measured by the task set's authors, interpreter start included
    needs: tuple[str, ...]
    prompt: str = ""  # what the task asks of a model, in words (the live benchmark sends it)
    test: str = ""  # HumanEval: the official test, defining `check(candidate)`
    entry_point: str = ""  # HumanEval: the function the test checks


def load(suite: str, directory: Path = TASKS_DIR) -> list[Task]:
    path = directory / f"{suite}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no task set {suite!r}: {path} does not exist (sets: {', '.join(SUITES)})")
    tasks = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        tasks.append(Task(row["id"], row["suite"], row["answer"], row["expected_stdout"], float(row["exec_s"]),
                          tuple(row.get("needs") or ()), row.get("prompt", ""), row.get("test", ""),
                          row.get("entry_point", "")))
    return tasks


def spread(tasks: list[Task], count: int | None) -> list[Task]:
    """`count` tasks spread evenly over the set (its order groups libraries), all when None."""
    if count is None or count >= len(tasks):
        return tasks
    step = len(tasks) / count
    return [tasks[int(i * step)] for i in range(count)]


def importable(python: str, modules: set[str]) -> set[str]:
    """Which of `modules` the interpreter that runs generated code can import."""
    found = set()
    for module in sorted(modules):
        name = {"scikit-learn": "sklearn"}.get(module, module)
        if subprocess.run([python, "-c", f"import {name}"], capture_output=True, timeout=60, check=False).returncode == 0:
            found.add(module)
    return found
