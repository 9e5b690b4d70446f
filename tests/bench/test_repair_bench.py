"""The repair-loop benchmark: the fault injector, the report, and one small run through the real stack."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from eager.bench import repair
from eager.bench.profiles import Profile
from eager.bench.repair import FAULT, RepairRun, break_answer
from eager.bench.tasks import load
from eager.cli import main
from eager.repair import RepairReport, TurnReport
from eager.replay import tokenize_answer
from tests.helpers import answer_of

FAST = Profile("test-fast", 0.05, 400.0, "a profile fast enough for the test suite")
TASKS = load("humaneval") + load("ds1000")
# what `sys.executable` can run: the standard library, and numpy (a dev dependency through matplotlib)
RUNNABLE = [task for task in TASKS if set(task.needs) <= {"numpy"}]
FENCE = re.compile(r"```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def code_of(answer: str) -> str:
    match = FENCE.search(answer)
    assert match is not None
    return match[1]


def fault_line(broken: str) -> int:
    """The 1-based line of the code block that holds the injected fault."""
    return code_of(broken).split("\n").index(FAULT.rstrip("\n")) + 1


def statement_starts(code: str) -> list[int]:
    return [min([s.lineno, *(d.lineno for d in getattr(s, "decorator_list", []))]) for s in ast.parse(code).body]


# ------------------------------------------------------------------------------------------- break_answer


@pytest.mark.parametrize("task", TASKS, ids=lambda task: task.id)
def test_every_task_gets_one_fault_before_a_top_level_statement_and_nothing_else_changes(task):
    broken = break_answer(task.answer)
    assert broken is not None
    at = broken.index(FAULT)
    assert broken.count(FAULT) == 1 and broken[at - 1] == "\n"  # a line of its own
    assert broken[:at] + broken[at + len(FAULT):] == task.answer  # the rest is byte for byte the same
    line = fault_line(broken)
    starts = statement_starts(code_of(task.answer))
    assert line in starts[1:]  # the original code's line `line` starts a statement, and not the first one
    assert break_answer(task.answer) == broken  # deterministic


def test_the_fault_goes_before_the_statement_nearest_the_fraction_of_the_code_s_lines():
    code = "".join(f"x{i} = {i}\n" for i in range(10))  # ten one-line statements, lines 1-10
    for fraction, before in [(0.33, 4), (0.0, 2), (0.1, 2), (0.5, 6), (0.95, 10), (1.0, 10)]:
        broken = break_answer(answer_of(code), fraction)
        assert broken is not None and fault_line(broken) == before, fraction
        assert code_of(broken).split("\n")[before] == f"x{before - 1} = {before - 1}"  # the statement follows it


def test_a_tie_goes_to_the_earlier_statement_and_blank_lines_count():
    # four lines, statements at lines 1, 2 and 4: a target of 2 lines in is 1 line from both line 2 and line 4
    broken = break_answer(answer_of("a = 1\nb = 2\n\nc = 3\n"), 0.5)
    assert broken is not None and code_of(broken) == "a = 1\n" + FAULT + "b = 2\n\nc = 3\n"


def test_the_fault_goes_above_a_decorated_function_s_decorators():
    code = "import functools\n\n\n@functools.cache\n@functools.wraps(print)\ndef f():\n    return 1\n\nprint(f())\n"
    broken = break_answer(answer_of(code), 0.5)
    assert broken is not None
    assert FAULT + "@functools.cache\n@functools.wraps(print)\ndef f():" in broken


def test_statements_that_share_a_line_are_not_split():
    broken = break_answer(answer_of("a = 1; b = 2; c = 3\nd = 4\n"), 0.0)
    assert broken is not None and code_of(broken) == "a = 1; b = 2; c = 3\n" + FAULT + "d = 4\n"
    assert break_answer(answer_of("a = 1; b = 2; c = 3\n")) is None  # three statements, no line between them


@pytest.mark.parametrize("code", [
    "print(1)\n",
    "import math\nprint(math.pi)\n",
    "def f():\n" + "".join(f"    x{i} = {i}\n" for i in range(30)) + "    return x0\n\n\nprint(f())\n",
])
def test_code_with_fewer_than_three_top_level_statements_is_skipped(code):
    assert break_answer(answer_of(code)) is None


def test_the_prose_around_the_code_and_other_fences_stay_as_they_were():
    answer = "Some text.\n\n```text\nnot code\n```\n\n```python\na = 1\nb = 2\nc = 3\n```\n\nThe end.\n"
    broken = break_answer(answer, 0.5)
    assert broken == "Some text.\n\n```text\nnot code\n```\n\n```python\na = 1\n" + FAULT + "b = 2\nc = 3\n```\n\nThe end.\n"


def test_an_answer_without_a_python_fence_is_refused():
    with pytest.raises(ValueError, match="no ```python fence"):
        break_answer("Just prose, no code.\n")


@pytest.mark.parametrize("task", RUNNABLE, ids=lambda task: task.id)
def test_the_broken_program_raises_name_error_at_the_inserted_line(task, tmp_path):
    broken = break_answer(task.answer)
    assert broken is not None
    program = tmp_path / "program.py"
    program.write_text(code_of(broken))
    ran = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         check=False)
    assert ran.returncode == 1
    assert ran.stderr.rstrip().splitlines()[-1] == "NameError: name 'undefined_name' is not defined"
    assert f'File "{program}", line {fault_line(broken)}, in <module>' in ran.stderr
    assert ran.stdout == ""  # nothing the task prints comes before its fault: the first third defines and imports


# ------------------------------------------------------------------------------------------- the report


def turn(number: int, status: str, e2e_s: float, tokens: int, cut_early: bool = False) -> TurnReport:
    return TurnReport(turn=number, session_id=f"s{number}", status=status, e2e_s=e2e_s, ttft_s=0.1, generation_s=e2e_s,
                      non_overlapped_s=0.0, execution_busy_s=0.01, tokens=tokens, finish_reason="stop",
                      cut_early=cut_early, kept_state=number > 1, error=None)


def loop(wall_s: float, first: tuple[float, int], second: tuple[float, int], cut: bool = False, stdout: str = "ok\n",
         succeeded: bool = True) -> RepairReport:
    """Two turns: a failing one, then the repair (which worked unless `succeeded` is False)."""
    turns = (turn(1, "error", *first, cut_early=cut), turn(2, "ok" if succeeded else "error", *second))
    return RepairReport(turns=turns, succeeded=succeeded, stopped_because="succeeded" if succeeded else "turn limit",
                        wall_s=wall_s, stdout=stdout)


def pair(task: str, serial: RepairReport, eager: RepairReport, suite: str = "humaneval",
         profile: str = "fast") -> list[RepairRun]:
    return [RepairRun(task, suite, profile, "serial", serial), RepairRun(task, suite, profile, "eager", eager)]


T1 = (loop(10.0, (6.0, 100), (4.0, 80)), loop(6.0, (2.5, 40), (3.5, 80), cut=True))
RUNS = (pair("t1", *T1)
        + pair("t2", loop(20.0, (12.0, 200), (8.0, 150)), loop(16.0, (9.0, 120), (7.0, 150), cut=True))
        + pair("t3", loop(4.0, (2.0, 30), (2.0, 30)), loop(3.0, (1.2, 20), (1.8, 30), cut=False)))


def test_a_row_pairs_each_task_s_gates_and_takes_nearest_rank_percentiles_of_per_task_ratios():
    (row,) = repair.rows(RUNS)
    assert (row.suite, row.profile, row.tasks, row.compared) == ("humaneval", "fast", 3, 3)
    assert row.serial_wall_p50_s == 10.0 and row.eager_wall_p50_s == 6.0
    # per task: 0.6, 0.8, 0.75 -> p50 0.75 (the 2nd of 3), p90 0.8 (the largest)
    assert row.ratio_p50 == pytest.approx(0.75) and row.ratio_p90 == pytest.approx(0.8)
    # second turns alone: 3.5/4, 7/8, 1.8/2 -> 0.875, 0.875, 0.9
    assert row.repair_turn_ratio_p50 == pytest.approx(0.875)
    assert (row.serial_tokens, row.eager_tokens) == (100 + 80 + 200 + 150 + 30 + 30, 40 + 80 + 120 + 150 + 20 + 30)
    assert (row.cut_early, row.same_stdout, row.two_turns) == (2, 3, 6)
    assert repair.findings(RUNS) == []


def test_runs_that_fail_or_differ_are_counted_kept_out_of_the_ratios_and_listed():
    failed = pair("t4", loop(5.0, (3.0, 50), (2.0, 40)), loop(9.0, (1.0, 10), (8.0, 40), cut=True, succeeded=False))
    differs = pair("t5", loop(5.0, (3.0, 50), (2.0, 40)), loop(4.0, (2.0, 30), (2.0, 40), cut=True, stdout="other\n"))
    one_turn = [RepairRun("t6", "humaneval", "fast", "serial",
                          RepairReport((turn(1, "ok", 1.0, 10),), True, "succeeded", 1.0, "ok\n")),
                RepairRun("t6", "humaneval", "fast", "eager", loop(1.0, (0.5, 5), (0.5, 5)))]
    runs = RUNS + failed + differs + one_turn
    (row,) = repair.rows(runs)
    assert (row.tasks, row.compared) == (6, 4)  # t4: eager did not work; t6: serial worked at once
    assert (row.same_stdout, row.two_turns) == (5, 10)  # t5 differs; t4 eager and t6 serial not in two turns
    assert row.ratio_p90 == pytest.approx(0.8)  # t4's 9/5 is not a time to a working program
    bad = repair.findings(runs)
    assert [(run.task, run.gate) for run in bad] == [("t4", "eager"), ("t5", "eager"), ("t6", "serial")]
    text = repair.markdown(runs, "eager bench --repair", {"tasks": "six"})
    assert "Runs not working in 2 turns, or with an eager stdout differing from serial's: 3" in text
    assert "- t4 (fast, eager): 2 turn(s), turn limit, last status error" in text
    assert "- t6 (fast, serial): 1 turn(s), succeeded, last status ok" in text


def test_rows_go_task_set_by_task_set_profiles_in_the_order_they_ran_and_a_set_with_no_working_pair_shows_dashes():
    broken = loop(5.0, (3.0, 50), (2.0, 40), succeeded=False)
    runs = (pair("a", *T1, suite="ds1000", profile="slow") + pair("b", *T1, suite="humaneval", profile="slow")
            + pair("a", broken, broken, suite="ds1000", profile="quick"))
    table = repair.rows(runs)
    assert [(row.suite, row.profile) for row in table] == [("ds1000", "slow"), ("ds1000", "quick"),
                                                           ("humaneval", "slow")]
    assert table[1].compared == 0 and table[1].ratio_p50 is None
    lines = repair.table(runs)
    assert lines[0] == repair.HEADER and lines[1].count("|---") == lines[0].count(" | ") + 1
    assert lines[3] == "| ds1000 | `quick` | 1 (0 compared) | - | - | - / - | - | 90 → 90 | 0/1 | 1/1 | 0/2 |"
    assert lines[2] == ("| ds1000 | `slow` | 1 | 10.00 s | 6.00 s | 0.60 / 0.60 | 0.88 | 180 → 120 | 1/1 | 1/1 "
                        "| 2/2 |")


def test_the_report_states_its_command_and_parameters_first_and_the_json_holds_every_run_and_turn(tmp_path):
    written = repair.write(RUNS, tmp_path / "out", "eager bench --repair --tasks 3", {"tasks": "humaneval 3",
                                                                                     "fault": "`_ = undefined_name`"})
    assert [path.name for path in written] == ["repair.md", "repair.json"]
    text = written[0].read_text()
    assert text.startswith("# Repair loop: time until a working program, eager vs serial\n\n```sh\n"
                           "eager bench --repair --tasks 3\n```\n\n- tasks: humaneval 3\n- fault: `_ = undefined_name`\n")
    assert repair.HEADER in text and "| humaneval | `fast` | 3 |" in text
    data = json.loads(written[1].read_text())
    assert data["command"] == "eager bench --repair --tasks 3" and data["parameters"]["tasks"] == "humaneval 3"
    assert [(run["task"], run["gate"]) for run in data["runs"]] == [(run.task, run.gate) for run in RUNS]
    assert data["runs"][1]["per_turn"][0]["cut_early"] is True and data["runs"][1]["wall_s"] == 6.0


def test_the_plan_breaks_the_chosen_tasks_and_says_what_it_ran_with(settings):
    chosen = repair.plan(settings, ["humaneval"], ["api-fast", "local-slow"], 3, quick=False)
    assert len(chosen.broken) == 3 and chosen.skipped == {} and chosen.runs == 3 * 2 * 2
    assert all(broken == break_answer(task.answer) for task, broken in chosen.broken.items())
    described = repair.parameters(chosen, 3, quick=False)
    assert described["tasks"] == "humaneval 3 (3 per set, spread over it)"
    assert "`api-fast` (0.25 s to the first token, 150 tokens/s)" in described["profiles"]
    assert "`_ = undefined_name`" in described["fault"] and described["skipped"] == "none"


def test_the_cli_refuses_a_gate_with_repair():
    result = CliRunner().invoke(main, ["bench", "--repair", "--gate", "batch"])
    assert result.exit_code == 2 and "--repair always runs the serial and eager gates" in result.output


# ------------------------------------------------------------------------------------------- the real stack


@pytest.mark.slow
def test_eager_cuts_the_broken_answer_at_the_fault_and_both_gates_work_after_one_repair(settings):
    tasks = sorted(load("humaneval"), key=lambda task: len(task.answer))[:2]
    broken, short = repair.breakable(tasks)
    assert not short
    seen: list[RepairRun] = []
    runs = list(repair.run_profile(settings, FAST, broken, seen.append))

    assert seen == runs and [(run.task, run.gate) for run in runs] == [(t.id, g) for t in tasks
                                                                       for g in ("serial", "eager")]
    for task, (serial, eager) in zip(tasks, zip(runs[::2], runs[1::2], strict=True), strict=True):
        line = fault_line(broken[task])
        for run in (serial, eager):
            report = run.report
            assert report.succeeded and len(report.turns) == 2, report.text()
            assert report.turns[0].error == f"NameError at line {line}: name 'undefined_name' is not defined"
            assert report.turns[1].status == "ok" and report.turns[1].kept_state
        assert eager.report.turns[0].cut_early and not serial.report.turns[0].cut_early
        assert serial.report.turns[0].tokens == len(tokenize_answer(broken[task]))  # serial got all of it
        assert eager.report.turns[0].tokens < serial.report.turns[0].tokens
        assert eager.report.stdout == serial.report.stdout == task.expected_stdout
    (row,) = repair.rows(runs)
    assert (row.tasks, row.compared, row.cut_early, row.same_stdout, row.two_turns) == (2, 2, 2, 2, 4)
