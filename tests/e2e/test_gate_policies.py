"""Gate policies and presets through the real stack: what is held, why, and that the output is plain python's.

The preset is the deployer's setting, so each test sets it in the settings the stages start with.
"""

from __future__ import annotations

import dataclasses

import pytest

from eager.common.protocol import BatchStarted, Gate, GateAction, GateDecision, SessionStatus
from eager.client import Client
from eager.replay import SpeedProfile
from tests.helpers import answer_of, collect, run_with_python

CSV_PIPELINE = '''import csv
import os

rows = [(n, n * n) for n in range(1, 6)]
print("rows", len(rows))


def describe(path):
    return f"{os.path.basename(path)}: {os.path.getsize(path)} bytes"


path = os.path.join(os.getcwd(), "squares.csv")
with open(path, "w", newline="") as f:
    csv.writer(f).writerows(rows)
print(describe(path))
with open(path) as f:
    print(f.read().strip())
total = sum(square for _, square in rows)
print("total of squares", total)
'''
WRITE_LINE = CSV_PIPELINE.splitlines().index('with open(path, "w", newline="") as f:') + 1
DEF_LINE = CSV_PIPELINE.splitlines().index("def describe(path):") + 1

HELD_THEN_SYNTAX_ERROR = '''print("before")
import shutil
shutil.rmtree("data", ignore_errors=True)
print("after")
x = (1 +
y = 2
'''

ANSWERS = {"csv": answer_of(CSV_PIPELINE), "held-then-invalid": answer_of(HELD_THEN_SYNTAX_ERROR)}
PROFILE = SpeedProfile(ttft_s=0.2, tokens_per_s=60.0)


@pytest.fixture
def settings(settings, request):
    """The deployer's preset, set before the stack starts (the stages read it from their environment)."""
    return dataclasses.replace(settings, gate_preset=getattr(request, "param", "sandboxed"))


def run(settings, model: str, gate: Gate = Gate.EAGER, **limits):
    with Client(settings) as client:
        return collect(client.submit(messages=[{"role": "user", "content": "go"}], model=model, gate=gate, **limits))


def batch_with(events, line: int) -> BatchStarted:
    return next(e for e in events if isinstance(e, BatchStarted) and e.start_line <= line <= e.end_line)


@pytest.mark.parametrize("settings", ["strict"], indirect=True)
def test_strict_holds_the_csv_write_until_the_program_is_complete_and_says_why(replay_stack, tmp_path):
    settings, _ = replay_stack(ANSWERS, PROFILE)
    events, summary = run(settings, "csv")

    assert summary.status is SessionStatus.OK, summary
    assert summary.stdout == run_with_python(CSV_PIPELINE, tmp_path).stdout
    holds = [e for e in events if isinstance(e, GateDecision) and e.action is GateAction.HOLD]
    assert len(holds) == 1, holds
    held = holds[0]
    assert (held.line, held.start_line, held.preset) == (WRITE_LINE, WRITE_LINE, "strict")
    assert held.reason == f"calls open(..., 'w') at line {WRITE_LINE} (file write; preset strict)"
    assert held.at_ns < summary.generation_end_ns, "the reason is published while the model is still writing"

    write = batch_with(events, WRITE_LINE)
    assert write.at_ns >= summary.generation_end_ns, "the held chunk waited for the end of the program"
    assert write.end_line == CSV_PIPELINE.count("\n"), "everything after the held chunk ran with it"
    assert batch_with(events, 1).at_ns < summary.generation_end_ns, "the prefix still ran early"


def test_sandboxed_runs_the_csv_pipeline_eagerly_and_merges_the_definition_with_its_use(replay_stack, tmp_path):
    settings, _ = replay_stack(ANSWERS, PROFILE)
    events, summary = run(settings, "csv")

    assert summary.status is SessionStatus.OK, summary
    assert summary.stdout == run_with_python(CSV_PIPELINE, tmp_path).stdout
    decisions = [e for e in events if isinstance(e, GateDecision)]
    assert [(d.action, d.start_line) for d in decisions] == [(GateAction.MERGE, DEF_LINE)]
    assert batch_with(events, WRITE_LINE).at_ns < summary.generation_end_ns, "the write ran while the model wrote"
    definition = batch_with(events, DEF_LINE)
    assert definition.end_line > DEF_LINE + 1, "the definition ran together with the next chunk"


@pytest.mark.parametrize("settings", ["strict"], indirect=True)
def test_a_syntax_error_after_a_held_chunk_runs_nothing_more(replay_stack):
    settings, _ = replay_stack(ANSWERS, PROFILE)
    events, summary = run(settings, "held-then-invalid")

    with pytest.raises(SyntaxError) as python:
        compile(HELD_THEN_SYNTAX_ERROR, "program.py", "exec")
    assert summary.status is SessionStatus.SYNTAX_ERROR
    assert summary.error["line"] == python.value.lineno
    assert summary.stdout == "before\n", "the valid prefix ran and stays reported; nothing after the hold ran"
    held = next(e for e in events if isinstance(e, GateDecision))
    assert held.action is GateAction.HOLD and held.line == 3 and "shutil.rmtree" in held.reason
    assert all(not (e.start_line <= 3 <= e.end_line) for e in events if isinstance(e, BatchStarted))


def test_the_batch_policy_prints_what_python_prints(replay_stack, tmp_path):
    settings, _ = replay_stack(ANSWERS, PROFILE)
    events, summary = run(settings, "csv", Gate.BATCH, batch_chunks=3, batch_wait_ms=5000)

    assert summary.status is SessionStatus.OK and summary.gate is Gate.BATCH
    assert summary.stdout == run_with_python(CSV_PIPELINE, tmp_path).stdout
    batches = [e for e in events if isinstance(e, BatchStarted)]
    assert 1 < len(batches) < summary.chunks, "chunks ran in groups, not one by one nor all at the end"
