"""`eager bench --live`: the task sets' prompts asked of a real model, at temperature 0.

Three phases, one after the other, so none runs beside another:
1. Live: every task asked under the serial gate and under the eager gate. Serial's stream is the recording
   (its code runs after generation, so nothing competes with the model while it writes); the two live runs
   give the model's speed with and without code running beside it on the same CPU.
2. Replay: serial's recording, its real pieces at their real times, replayed to both gates, so the A/B of
   latency and of pass@1 is exact: the same answer, the same token times.
3. Repair (`--repair N`): the tasks whose first answer failed, asked again live with up to N repairs under
   each gate: whether a working program came within N turns and within the budget, how long and how many
   tokens it took.

A task passes when its own test passes in the session's interpreter: for HumanEval, `run_hidden_tests` (defined
by the session's setup around the official `check`) is called by the program, as the prompt asks, and prints
a marker (a program that defines its own instead fails); for DS-1000, the program prints what the reference
program prints. Tasks, prompts and verdicts are pure; the phases do the I/O.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eager.bench.measure import Run, record
from eager.bench.tasks import Task
from eager.client import Client
from eager.common.config import Settings
from eager.common.protocol import Delta, Gate, Message, Summary
from eager.replay import Recording, SpeedProfile
from eager.replay_stack import replay_stack

MAX_TOKENS = 768  # a HumanEval function with an explanation fits; a model that rambles is cut, as any client would
DEFAULT_BUDGET_S = 120.0
GATES = (Gate.SERIAL, Gate.EAGER)  # serial first: its stream is the recording


@dataclass(frozen=True)
class LiveTask:
    """What the model is asked, what the session's interpreter holds before the answer runs, and how to judge."""

    id: str
    suite: str
    messages: list[dict[str, str]]
    setup: str | None
    passed_marker: str | None  # HumanEval: the check's line in the output
    expected_stdout: str | None  # DS-1000: the reference program's output

    def passed(self, summary: Summary | None, stdout: str | None = None) -> bool:
        if summary is None or summary.status.value != "ok":
            return False
        output = summary.stdout if stdout is None else stdout
        if self.passed_marker is not None:
            return self.passed_marker in output.splitlines()
        return output.strip() == (self.expected_stdout or "").strip()


def live_task(task: Task) -> LiveTask:
    """HumanEval: the official test goes into the setup and the prompt asks the program to call it, so the
    test runs in the very interpreter that ran the answer (and a failing test is an error the repair loop sees).
    DS-1000: the program must print the result the question asks for."""
    if task.test:
        marker = f"{task.entry_point}: all tests passed"
        # the official `check` is bound where the model's code cannot shadow it (models like to write their own)
        setup = (f"{task.test.strip()}\n\n\ndef run_hidden_tests(candidate, _check=check):\n    _check(candidate)\n"
                 f"    print({marker!r})\n\n\ndel check\n")
        ask = (f"{task.prompt}\n\nAnswer with one ```python code block that defines `{task.entry_point}`, then ends "
               f"with the line `run_hidden_tests({task.entry_point})` (that function is already defined; do not "
               "define it, and write no tests of your own).")
        return LiveTask(task.id, task.suite, [{"role": "user", "content": ask}], setup, marker, None)
    ask = (f"{task.prompt}\n\nAnswer with one ```python code block: a complete program that builds the example input "
           "from the question, solves it, and prints the result (only the result) as its last step.")
    return LiveTask(task.id, task.suite, [{"role": "user", "content": ask}], None, None, task.expected_stdout)


def recording(events: Sequence[Message]) -> Recording:
    """A session's stream as the model sent it: each delta and its arrival, in seconds from the request."""
    summary = next(e for e in reversed(events) if isinstance(e, Summary))
    deltas = [e for e in events if isinstance(e, Delta)]
    return Recording(tuple(d.text for d in deltas), tuple((d.at_ns - summary.submitted_ns) / 1e9 for d in deltas))


def tokens_per_s(summary: Summary) -> float | None:
    """The model's speed while it wrote: tokens after the first over the time from the first to the end."""
    if summary.tokens is None or summary.tokens < 2 or summary.first_token_ns is None or summary.generation_end_ns is None:
        return None
    seconds = (summary.generation_end_ns - summary.first_token_ns) / 1e9
    return (summary.tokens - 1) / seconds if seconds > 0 else None


@dataclass(frozen=True)
class Live:
    """One task's live run under one gate."""

    gate: str
    status: str
    passed: bool
    e2e_s: float
    ttft_s: float | None
    generation_s: float | None
    non_overlapped_s: float | None
    tokens: int | None
    tokens_per_s: float | None
    answer: str


@dataclass(frozen=True)
class Repair:
    """One task's repair loop under one gate."""

    gate: str
    succeeded: bool  # the last turn passed the task's test
    turns: int
    wall_s: float
    tokens: int
    cut_early: int  # turns early error interruption stopped mid-answer


@dataclass
class TaskResult:
    task: str
    suite: str
    live: dict[str, Live] = dataclasses.field(default_factory=dict)
    replay: dict[str, Run] = dataclasses.field(default_factory=dict)
    replay_passed: dict[str, bool] = dataclasses.field(default_factory=dict)
    repair: dict[str, Repair] = dataclasses.field(default_factory=dict)

    @property
    def same_answer(self) -> bool:
        """Temperature 0 gave both live gates the same answer (llama.cpp is deterministic here, most servers not)."""
        return len({live.answer for live in self.live.values()}) == 1


def _events(client: Client, task: LiveTask, gate: Gate, max_tokens: int, model: str | None = None) -> list[Message]:
    with client.conversation(max_turns=1, setup=task.setup, gate=gate, temperature=0.0, max_tokens=max_tokens,
                             model=model) as conversation:
        return list(conversation.send(messages=task.messages).events())


def run_live(settings: Settings, tasks: Sequence[LiveTask], results: dict[str, TaskResult], max_tokens: int,
             say: Callable[[str], None]) -> dict[str, Recording]:
    """Phase 1 on the configured model: each task under both gates; serial's stream is the recording."""
    recordings: dict[str, Recording] = {}
    with Client(settings) as client:
        for number, task in enumerate(tasks, 1):
            result = results.setdefault(task.id, TaskResult(task.id, task.suite))
            # llama.cpp reuses the previous request's prompt: the second gate of a task starts sooner, so which
            # gate goes second alternates from task to task
            for gate in GATES if number % 2 else reversed(GATES):
                events = _events(client, task, gate, max_tokens)
                summary = next(e for e in reversed(events) if isinstance(e, Summary))
                taken = recording(events)
                if gate is Gate.SERIAL:
                    recordings[task.id] = taken
                result.live[gate.value] = Live(
                    gate.value, summary.status.value, task.passed(summary), summary.e2e_s, summary.ttft_s,
                    summary.generation_s, summary.non_overlapped_s, summary.tokens, tokens_per_s(summary), taken.text)
            serial, eager = result.live["serial"], result.live["eager"]
            say(f"[{number}/{len(tasks)}] {task.id} live: {serial.tokens} tokens at {_rate(serial.tokens_per_s)} "
                f"(serial) / {_rate(eager.tokens_per_s)} (eager); {'pass' if serial.passed else serial.status}"
                f"{'' if result.same_answer else '; the two live answers differ'}")
    return recordings


def run_replay(settings: Settings, tasks: Sequence[LiveTask], recordings: dict[str, Recording],
               results: dict[str, TaskResult], say: Callable[[str], None]) -> None:
    """Phase 2: each recording replayed to both gates, its pieces at their recorded times."""
    with replay_stack(settings, dict(recordings), SpeedProfile(), label="live") as ready, Client(ready) as client:
        for number, task in enumerate(tasks, 1):
            taken = recordings[task.id]
            ttft = taken.offsets[0] if taken.offsets else 0.0
            live = results[task.id].live["serial"]
            for gate in GATES:
                events = _events(client, task, gate, MAX_TOKENS, model=task.id)
                summary = next(e for e in reversed(events) if isinstance(e, Summary))
                results[task.id].replay[gate.value] = record(task.id, task.suite, "live", ttft,
                                                             live.tokens_per_s or 1.0, list(taken.pieces), events)
                results[task.id].replay_passed[gate.value] = task.passed(summary)
            serial, eager = results[task.id].replay["serial"], results[task.id].replay["eager"]
            say(f"[{number}/{len(tasks)}] {task.id} replay: end-to-end {serial.e2e_s:.2f} s serial, "
                f"{eager.e2e_s:.2f} s eager")


def run_repair(settings: Settings, tasks: Sequence[LiveTask], results: dict[str, TaskResult], repairs: int,
               max_tokens: int, say: Callable[[str], None]) -> None:
    """Phase 3 on the configured model: the tasks whose first answer failed, repaired under each gate."""
    failing = [task for task in tasks if not results[task.id].live["serial"].passed]
    with Client(settings) as client:
        for number, task in enumerate(failing, 1):
            for gate in GATES:
                report = client.solve(messages=task.messages, repairs=repairs, setup=task.setup, gate=gate,
                                      temperature=0.0, max_tokens=max_tokens)
                last = report.turns[-1]
                passed = last.status == "ok" and (
                    task.passed_marker in report.stdout.splitlines() if task.passed_marker is not None
                    else report.stdout.strip() == (task.expected_stdout or "").strip())
                results[task.id].repair[gate.value] = Repair(gate.value, passed, len(report.turns), report.wall_s,
                                                             report.tokens, sum(t.cut_early for t in report.turns))
            serial, eager = results[task.id].repair["serial"], results[task.id].repair["eager"]
            say(f"[{number}/{len(failing)}] {task.id} repair: serial {_verdict(serial)}, eager {_verdict(eager)}")


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} tok/s"


def _verdict(repair: Repair) -> str:
    return f"{'solved' if repair.succeeded else 'unsolved'} in {repair.turns} turn(s), {repair.wall_s:.1f} s"


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(results: Sequence[TaskResult], model: str, command: str, repairs: int, budget_s: float) -> str:
    """The report: pass@1, latency on the recorded streams, the model's speed beside running code, repair."""
    n = len(results)
    lines = [f"# Live benchmark: {model}", "", f"`{command}`; {n} tasks, temperature 0.", ""]

    def count(predicate: Callable[[TaskResult], bool]) -> str:
        hits = sum(1 for r in results if predicate(r))
        return f"{hits}/{n} ({100 * hits / n:.0f}%)" if n else "-"

    lines += ["## pass@1", "", "| | serial | eager |", "|---|---|---|",
              f"| replayed recording (the same answer to both gates) | {count(lambda r: r.replay_passed['serial'])} | "
              f"{count(lambda r: r.replay_passed['eager'])} |",
              f"| live | {count(lambda r: r.live['serial'].passed)} | {count(lambda r: r.live['eager'].passed)} |",
              "", f"The two live runs wrote the same answer on {count(lambda r: r.same_answer)} tasks.", ""]
    runs = {gate: [r.replay[gate] for r in results] for gate in ("serial", "eager")}
    rows = [("end-to-end", lambda run: run.e2e_s), ("generation", lambda run: run.generation_s),
            ("non-overlapped execution", lambda run: run.non_overlapped_s), ("execution", lambda run: run.exec_s)]
    lines += ["## Latency on the recorded streams (median over tasks, seconds)", "",
              "| | serial | eager | eager / serial |", "|---|---|---|---|"]
    for name, value in rows:
        serial, eager = _median([value(run) for run in runs["serial"]]), _median([value(run) for run in runs["eager"]])
        ratio = f"{eager / serial:.3f}" if serial and eager is not None else "-"
        lines.append(f"| {name} | {_s(serial)} | {_s(eager)} | {ratio} |")
    e2e_ratios = [e.e2e_s / s.e2e_s for s, e in zip(runs["serial"], runs["eager"], strict=True) if s.e2e_s]
    saved = [s.e2e_s - e.e2e_s for s, e in zip(runs["serial"], runs["eager"], strict=True)]
    lines += ["", f"Per task, eager's end-to-end over serial's: median {_s(_median(e2e_ratios), 3)}, "
              f"best {_s(min(e2e_ratios, default=None), 3)}, worst {_s(max(e2e_ratios, default=None), 3)}; "
              f"time saved: median {_s(_median(saved), 3)} s, total {sum(saved):.2f} s.", ""]
    serial_rate = _median([r.live["serial"].tokens_per_s for r in results])
    eager_rate = _median([r.live["eager"].tokens_per_s for r in results])
    slowdowns = [1 - r.live["eager"].tokens_per_s / r.live["serial"].tokens_per_s for r in results
                 if r.live["eager"].tokens_per_s and r.live["serial"].tokens_per_s]
    lines += ["## The model's speed with code running beside it (live, median over tasks)", "",
              "| | serial (code runs after generation) | eager (code runs during generation) |", "|---|---|---|",
              f"| tokens/s | {_s(serial_rate, 1)} | {_s(eager_rate, 1)} |",
              f"| time to first token, s | {_s(_median([r.live['serial'].ttft_s for r in results]))} | "
              f"{_s(_median([r.live['eager'].ttft_s for r in results]))} |",
              f"| end-to-end, s | {_s(_median([r.live['serial'].e2e_s for r in results]))} | "
              f"{_s(_median([r.live['eager'].e2e_s for r in results]))} |",
              "", f"Generation slowdown under eager, per task: median {_s(_median(slowdowns) and 100 * _median(slowdowns), 1)}%"
              f" (positive: slower).", ""]
    repaired = [r for r in results if r.repair]
    if repairs:
        lines += [f"## Repair: the {len(repaired)} tasks whose first answer failed, up to {repairs} repairs", ""]
        if repaired:
            lines += ["| | serial | eager |", "|---|---|---|"]
            for name, value in [
                ("solved within the turns", lambda rep: str(sum(1 for r in rep if r.succeeded))),
                (f"solved within {budget_s:.0f} s", lambda rep: str(sum(1 for r in rep if r.succeeded and r.wall_s <= budget_s))),
                ("median time of the loop, s", lambda rep: _s(_median([r.wall_s for r in rep]))),
                ("total time, s", lambda rep: f"{sum(r.wall_s for r in rep):.1f}"),
                ("tokens generated", lambda rep: str(sum(r.tokens for r in rep))),
                ("turns cut short at an error", lambda rep: str(sum(r.cut_early for r in rep))),
            ]:
                lines.append(f"| {name} | {value([r.repair['serial'] for r in repaired])} | "
                             f"{value([r.repair['eager'] for r in repaired])} |")
            lines.append("")
    lines += ["## Per task", "", "| task | pass | tokens | tok/s serial / eager | e2e serial / eager (replay), s | "
              "non-overlapped serial / eager, s | repair serial / eager |", "|---|---|---|---|---|---|---|"]
    for r in results:
        s, e = r.replay["serial"], r.replay["eager"]
        fix = (f"{_verdict(r.repair['serial'])} / {_verdict(r.repair['eager'])}" if r.repair else "")
        lines.append(f"| {r.task} | {'yes' if r.replay_passed['serial'] else 'no'} | {r.live['serial'].tokens} | "
                     f"{_s(r.live['serial'].tokens_per_s, 1)} / {_s(r.live['eager'].tokens_per_s, 1)} | "
                     f"{s.e2e_s:.2f} / {e.e2e_s:.2f} | {_s(s.non_overlapped_s, 3)} / {_s(e.non_overlapped_s, 3)} | {fix} |")
    return "\n".join(lines) + "\n"


def write(results: Sequence[TaskResult], out: Path, model: str, command: str, repairs: int,
          budget_s: float) -> list[Path]:
    """live.md, live.json (every run, recordings' text included) and, with matplotlib, live-e2e.png."""
    from eager.bench import plots

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "live.md", out / "live.json"]
    written[0].write_text(markdown(results, model, command, repairs, budget_s))
    data: list[dict[str, Any]] = [{
        "task": r.task, "suite": r.suite, "same_answer": r.same_answer, "replay_passed": r.replay_passed,
        "live": {gate: dataclasses.asdict(live) for gate, live in r.live.items()},
        "replay": {gate: dataclasses.asdict(run) for gate, run in r.replay.items()},
        "repair": {gate: dataclasses.asdict(rep) for gate, rep in r.repair.items()},
    } for r in results]
    written[1].write_text(json.dumps({"model": model, "command": command, "tasks": data}, indent=1))
    if results:
        plots.end_to_end([run for r in results for run in r.replay.values()], out / "live-e2e.png")
        written.append(out / "live-e2e.png")
    return written
