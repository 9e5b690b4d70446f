"""A whole benchmark: choose tasks, run them under every profile and gate, write the reports."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from eager.common.config import Settings
from eager.common.protocol import CodeTool, Gate
from eager.bench import harness, plots, report
from eager.bench.measure import Run
from eager.bench.profiles import PROFILES
from eager.bench.tasks import Task, importable, load, spread
from eager.executor_pool.sandbox import SANDBOX_VENV_PYTHON

QUICK_TASKS = {"ds1000": 3, "humaneval": 1}  # under two minutes on 2 cores
QUICK_PROFILES = ("api-fast", "served-mid")
SANDBOX_VENV = Path(SANDBOX_VENV_PYTHON)


@dataclass(frozen=True)
class Plan:
    tasks: list[Task]
    profiles: list[str]
    gates: list[Gate]
    skipped: dict[str, set[str]]  # task id -> packages the interpreter lacks
    tool: CodeTool | None = None  # the answers stream as this code tool's calls, not as markdown

    @property
    def runs(self) -> int:
        return len(self.tasks) * len(self.profiles) * len(self.gates)


def interpreter_for(settings: Settings) -> Settings:
    """The configured interpreter, else the sandbox venv that `deploy/setup.sh` builds."""
    if settings.interpreter_python or not SANDBOX_VENV.exists():
        return settings
    return dataclasses.replace(settings, interpreter_python=str(SANDBOX_VENV))


def plan(settings: Settings, suites: Sequence[str], profiles: Sequence[str], gates: Sequence[Gate],
         per_suite: int | None, quick: bool, tool: CodeTool | None = None) -> Plan:
    """Serial comes first among the gates: the others are measured against it."""
    tasks: list[Task] = []
    for suite in suites:
        tasks += spread(load(suite), QUICK_TASKS.get(suite, 2) if quick else per_suite)
    python = settings.interpreter_python or "/usr/bin/python3"
    available = importable(python, {need for task in tasks for need in task.needs})
    skipped = {task.id: set(task.needs) - available for task in tasks if set(task.needs) - available}
    chosen_profiles = [p for p in profiles if not quick or p in QUICK_PROFILES]
    ordered_gates = sorted(set(gates), key=lambda gate: (gate is not Gate.SERIAL, gate.value))
    return Plan([task for task in tasks if task.id not in skipped], chosen_profiles, ordered_gates, skipped, tool)


def run(settings: Settings, chosen: Plan, on_run: Callable[[Run], None]) -> list[Run]:
    runs: list[Run] = []
    for name in chosen.profiles:
        runs += harness.run_profile(settings, PROFILES[name], chosen.tasks, chosen.gates, on_run, chosen.tool)
    return runs


def write(runs: Sequence[Run], out: Path) -> list[Path]:
    """report.md, runs.json and, with matplotlib, e2e.png and waterfall.png; returns what it wrote."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.md", out / "runs.json"]
    written[0].write_text(report.markdown(runs))
    report.write_json(runs, written[1])
    if any(run.gate != "serial" for run in runs):
        plots.end_to_end(runs, out / "e2e.png")
        written.append(out / "e2e.png")
        pair = showcase(runs)
        if pair is not None:
            plots.waterfall(*pair, out / "waterfall.png")
            written.append(out / "waterfall.png")
    return written


def showcase(runs: Sequence[Run]) -> tuple[Run, Run] | None:
    """The serial and eager runs (same task and profile) where eager saved the most time."""
    serial = {(run.task, run.profile): run for run in runs if run.gate == "serial" and run.status == "ok"}
    eager = [run for run in runs if run.gate == "eager" and run.status == "ok" and (run.task, run.profile) in serial
             and len(run.batches) > 1]
    if not eager:
        return None
    best = max(eager, key=lambda run: serial[run.task, run.profile].e2e_s - run.e2e_s)
    return serial[best.task, best.profile], best
