"""The repair-loop benchmark: how long until a working program, eager vs serial, when the first answer fails.

Each task's reference answer is broken by one injected mistake (a line raising NameError part way
through the code), and the replay model answers the first turn with the broken answer and the repair
turn with the reference. Serial must receive the whole broken answer before anything runs; eager runs
the code as it arrives, stops the model at the fault, and starts the repair turn sooner. Both gates of
a task run back to back under one profile, serial first, through `Client.solve` on the real stack.

`break_answer` and the report are pure; `run_profile` does the I/O.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eager.common.config import Settings
from eager.common.protocol import Gate
from eager.bench import suite
from eager.bench.harness import PROMPT
from eager.bench.profiles import JITTER, PROFILES, SEED, Profile
from eager.bench.tasks import Task
from eager.client import Client
from eager.quantiles import quantile
from eager.repair import RepairReport
from eager.replay_stack import replay_stack

FAULT = "_ = undefined_name\n"  # a model's typical slip: a name it never defined
FRACTION = 0.33
MIN_STATEMENTS = 3  # shorter programs leave too little code around the fault for a cut to matter
GATES = (Gate.SERIAL, Gate.EAGER)  # serial first: eager is measured against it
REPAIRS = 1  # the broken answer, then the reference: a working program in two turns
_FENCE = re.compile(r"^```python[ \t]*\n(?P<code>.*?)^```", re.DOTALL | re.MULTILINE)


def _start_line(statement: ast.stmt) -> int:
    """The statement's first line, its decorators included (ast puts a decorated def at its `def`)."""
    decorators = getattr(statement, "decorator_list", [])
    return min([statement.lineno, *(decorator.lineno for decorator in decorators)])


def break_answer(answer: str, fraction: float = FRACTION) -> str | None:
    """`answer` with FAULT inserted before the top-level statement that starts nearest `fraction` of the way
    through its code's lines (the earlier one on a tie), everything else byte for byte as it was: serial then
    generates the whole broken answer, while eager is cut at the fault. Only statements after the first, on a
    line of their own, are candidates, so something runs before the fault and something follows it. None when
    the code has fewer than MIN_STATEMENTS top-level statements (or no candidate); ValueError when the answer
    has no ```python fence."""
    fence = _FENCE.search(answer)
    if fence is None:
        raise ValueError("the answer has no ```python fence")
    code = fence["code"]
    statements = ast.parse(code).body
    # a statement sharing its first line with the one before (`a = 1; b = 2`) has no line to insert before
    candidates = [_start_line(statement) for previous, statement in itertools.pairwise(statements)
                  if _start_line(statement) > (previous.end_lineno or previous.lineno)]
    if len(statements) < MIN_STATEMENTS or not candidates:
        return None
    lines = code.split("\n")  # as ast numbers them: the code ends with a newline, so the last piece is empty
    target = fraction * (len(lines) - 1)
    line = min(candidates, key=lambda start: (abs(start - 1 - target), start))
    offset = fence.start("code") + sum(len(text) + 1 for text in lines[:line - 1])
    return answer[:offset] + FAULT + answer[offset:]


@dataclass(frozen=True)
class RepairRun:
    """One task under one gate and profile: the repair loop's report."""

    task: str
    suite: str
    profile: str
    gate: str
    report: RepairReport

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "suite": self.suite, "profile": self.profile, "gate": self.gate,
                **self.report.to_json()}


def breakable(tasks: Sequence[Task], fraction: float = FRACTION) -> tuple[dict[Task, str], list[Task]]:
    """Each task's broken answer, and the tasks whose code is too short to break."""
    broken = {task: break_answer(task.answer, fraction) for task in tasks}
    return ({task: answer for task, answer in broken.items() if answer is not None},
            [task for task, answer in broken.items() if answer is None])


@dataclass(frozen=True)
class Plan:
    broken: dict[Task, str]  # the tasks to run, each with its broken answer
    profiles: list[str]
    skipped: dict[str, str]  # task id -> why it does not run
    interpreter: str

    @property
    def runs(self) -> int:
        return len(self.broken) * len(self.profiles) * len(GATES)


def plan(settings: Settings, suites: Sequence[str], profiles: Sequence[str], per_suite: int | None,
         quick: bool) -> Plan:
    """The tasks `eager bench` would choose (suite.plan), less those it cannot break."""
    chosen = suite.plan(settings, suites, profiles, GATES, per_suite, quick)
    broken, short = breakable(chosen.tasks)
    skipped = {task_id: f"the interpreter lacks {', '.join(sorted(missing))} (deploy/setup.sh --bench installs them)"
               for task_id, missing in chosen.skipped.items()}
    skipped |= {task.id: f"fewer than {MIN_STATEMENTS} top-level statements to put a fault between" for task in short}
    return Plan(broken, chosen.profiles, skipped, settings.interpreter_python
                or "the executor's default (EAGER_INTERPRETER_PYTHON unset)")


def parameters(chosen: Plan, per_suite: int | None, quick: bool) -> dict[str, str]:
    """What the report states above its table, so it can be reproduced."""
    counts = Counter(task.suite for task in chosen.broken)
    speeds = [f"`{name}` ({PROFILES[name].ttft_s} s to the first token, {PROFILES[name].tokens_per_s:g} tokens/s)"
              for name in chosen.profiles]
    return {
        "tasks": ", ".join(f"{name} {count}" for name, count in counts.items())
                 + (" (--quick)" if quick else f" ({per_suite or 'all'} per set, spread over it)"),
        "profiles": ", ".join(speeds) + f"; gaps between tokens jittered ±{JITTER:.0%}, seed {SEED}",
        "gates": "serial then eager, back to back per task, through `Client.solve(..., repairs=1)`",
        "fault": f"`{FAULT.strip()}` inserted before the top-level statement nearest {FRACTION:.0%} of the way "
                 "through the code's lines; turn 2 is answered with the task's reference answer",
        "interpreter": chosen.interpreter,
        "skipped": ", ".join(f"{task_id} ({why})" for task_id, why in chosen.skipped.items()) or "none",
    }


def run_profile(settings: Settings, profile: Profile, broken: Mapping[Task, str],
                on_run: Callable[[RepairRun], None] = lambda run: None) -> Iterator[RepairRun]:
    """Every task's repair loop under each gate at one speed; the stages are this profile's own. The replay
    model answers a chat with k assistant messages with answer k: the broken one first, then the reference."""
    answers = {task.id: [answer, task.answer] for task, answer in broken.items()}
    with replay_stack(settings, answers, profile.speed, label="bench") as ready:
        with Client(ready) as client:
            for task in broken:
                for gate in GATES:
                    report = client.solve(messages=PROMPT, model=task.id, gate=gate, repairs=REPAIRS)
                    run = RepairRun(task.id, task.suite, profile.name, gate.value, report)
                    on_run(run)
                    yield run


def run(settings: Settings, chosen: Plan, on_run: Callable[[RepairRun], None]) -> list[RepairRun]:
    runs: list[RepairRun] = []
    for name in chosen.profiles:
        runs += run_profile(settings, PROFILES[name], chosen.broken, on_run)
    return runs


@dataclass(frozen=True)
class Row:
    """One task set under one profile: eager's repair loops against serial's, paired per task."""

    suite: str
    profile: str
    tasks: int  # tasks with both gates' runs
    compared: int  # of those, tasks where both gates reached a working program (the walls and ratios below)
    serial_wall_p50_s: float | None
    eager_wall_p50_s: float | None
    ratio_p50: float | None  # eager wall / serial wall, same task
    ratio_p90: float | None
    repair_turn_ratio_p50: float | None  # the second turn alone (no fault in it): the error-free ratio, same runs
    serial_tokens: int  # generated in all turns, all tasks
    eager_tokens: int
    cut_early: int  # eager first turns the fault cut short
    same_stdout: int  # eager's final stdout equals serial's
    two_turns: int  # runs (both gates) that succeeded in exactly two turns


def _two_turns(report: RepairReport) -> bool:
    return report.succeeded and len(report.turns) == REPAIRS + 1


def _p(values: list[float], q: float) -> float | None:
    return quantile(values, q) if values else None


def rows(runs: Sequence[RepairRun]) -> list[Row]:
    """Per task set, then per profile, each in the order they ran."""
    pairs: dict[tuple[str, str], dict[str, dict[str, RepairReport]]] = {}
    for run in runs:
        pairs.setdefault((run.suite, run.profile), {}).setdefault(run.task, {})[run.gate] = run.report
    suites = list(dict.fromkeys(run.suite for run in runs))
    out = []
    for (suite_name, profile), tasks in sorted(pairs.items(), key=lambda item: suites.index(item[0][0])):
        both = [(gates["serial"], gates["eager"]) for gates in tasks.values() if {"serial", "eager"} <= gates.keys()]
        ok = [(serial, eager) for serial, eager in both if _two_turns(serial) and _two_turns(eager)]
        ratios = [eager.wall_s / serial.wall_s for serial, eager in ok]
        out.append(Row(
            suite=suite_name, profile=profile, tasks=len(both), compared=len(ok),
            serial_wall_p50_s=_p([serial.wall_s for serial, _ in ok], 0.5),
            eager_wall_p50_s=_p([eager.wall_s for _, eager in ok], 0.5),
            ratio_p50=_p(ratios, 0.5), ratio_p90=_p(ratios, 0.9),
            repair_turn_ratio_p50=_p([eager.turns[1].e2e_s / serial.turns[1].e2e_s for serial, eager in ok], 0.5),
            serial_tokens=sum(serial.tokens for serial, _ in both), eager_tokens=sum(eager.tokens for _, eager in both),
            cut_early=sum(eager.turns[0].cut_early for _, eager in both),
            same_stdout=sum(eager.stdout == serial.stdout for serial, eager in both),
            two_turns=sum(_two_turns(serial) + _two_turns(eager) for serial, eager in both),
        ))
    return out


HEADER = ("| task set | profile | tasks | serial wall p50 | eager wall p50 | eager / serial p50 / p90 "
          "| repair turn alone, eager / serial p50 | tokens serial → eager | eager turn 1 cut early "
          "| same final stdout | working in 2 turns |")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(runs: Sequence[RepairRun]) -> list[str]:
    """The markdown table, one line per task set and profile."""
    lines = [HEADER, "|---" * HEADER.count(" | ") + "|---|"]
    for row in rows(runs):
        tasks = f"{row.tasks}" if row.compared == row.tasks else f"{row.tasks} ({row.compared} compared)"
        lines.append(f"| {row.suite} | `{row.profile}` | {tasks} | {_seconds(row.serial_wall_p50_s)} | "
                     f"{_seconds(row.eager_wall_p50_s)} | {_ratio(row.ratio_p50)} / {_ratio(row.ratio_p90)} | "
                     f"{_ratio(row.repair_turn_ratio_p50)} | {row.serial_tokens} → {row.eager_tokens} | "
                     f"{row.cut_early}/{row.tasks} | {row.same_stdout}/{row.tasks} | {row.two_turns}/{2 * row.tasks} |")
    return lines


def findings(runs: Sequence[RepairRun]) -> list[RepairRun]:
    """Runs that did not reach a working program in two turns, or whose eager stdout differs from serial's."""
    serial = {(run.suite, run.profile, run.task): run.report for run in runs if run.gate == "serial"}
    return [run for run in runs if not _two_turns(run.report)
            or (run.gate == "eager" and (run.suite, run.profile, run.task) in serial
                and run.report.stdout != serial[run.suite, run.profile, run.task].stdout)]


def markdown(runs: Sequence[RepairRun], command: str, parameters: Mapping[str, str]) -> str:
    """The command and parameters that produced it, the table, and every finding."""
    lines = ["# Repair loop: time until a working program, eager vs serial", "", "```sh", command, "```", ""]
    lines += [f"- {name}: {value}" for name, value in parameters.items()]
    lines += ["", *table(runs), "",
              ("Walls run from the first turn's request to the end of the working turn's execution. Ratios are per "
               "task (eager's wall over serial's for the same task), then their nearest-rank percentiles, over the "
               "tasks where both gates worked in two turns. \"Repair turn alone\" is the same ratio for the second "
               "turn only, which has no fault: what eager gains on an error-free answer, in the same runs."), ""]
    bad = findings(runs)
    lines.append(f"Runs not working in 2 turns, or with an eager stdout differing from serial's: {len(bad)}")
    lines += [f"- {run.task} ({run.profile}, {run.gate}): {len(run.report.turns)} turn(s), "
              f"{run.report.stopped_because}, last status {run.report.status}" for run in bad]
    return "\n".join(lines) + "\n"


def write(runs: Sequence[RepairRun], out: Path, command: str, parameters: Mapping[str, str]) -> list[Path]:
    """repair.md and repair.json (every run, every turn) in `out`; returns what it wrote."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "repair.md", out / "repair.json"]
    written[0].write_text(markdown(runs, command, parameters))
    written[1].write_text(json.dumps({"command": command, "parameters": dict(parameters),
                                      "runs": [run.to_json() for run in runs]}, indent=1))
    return written
