"""The benchmark harness on one small task through the real stack (stages as processes, sandbox)."""

from __future__ import annotations

import pytest

from eager.common.protocol import CodeTool, Gate, ToolShape
from eager.bench import harness, suite
from eager.bench.profiles import Profile
from eager.bench.tasks import load

FAST = Profile("test-fast", 0.05, 400.0, "a profile fast enough for the test suite")


@pytest.mark.slow
@pytest.mark.parametrize("tool", [None, CodeTool(shape=ToolShape.RESPONSES)], ids=["markdown", "tool-calls"])
def test_a_task_runs_under_each_gate_and_is_reported(settings, tmp_path, tool):
    task = min(load("humaneval"), key=lambda t: len(t.answer))
    seen = []
    runs = list(harness.run_profile(settings, FAST, [task], [Gate.SERIAL, Gate.EAGER], seen.append, tool))

    assert seen == runs and [run.gate for run in runs] == ["serial", "eager"]
    serial, eager = runs
    for run in runs:
        assert run.status == "ok", run
        assert run.stdout == task.expected_stdout
        assert run.task == task.id and run.profile == "test-fast" and run.chunks > 1
        assert 0 < run.ideal_s <= run.e2e_s  # nothing finishes before its own ideal bound
        assert run.predicted_s > 0 and run.generation_s > FAST.ttft_s
    assert len(serial.batches) == 1 and len(eager.batches) >= 2
    assert serial.batches[0].started_s >= serial.generation_s  # serial runs only after generation
    proofs = [batch.proof_token for batch in eager.batches]  # the streamed pieces counted, JSON ones too
    assert 0 < proofs[0] and proofs == sorted(proofs)

    written = suite.write(runs, tmp_path)
    assert [path.name for path in written] == ["report.md", "runs.json", "e2e.png", "waterfall.png"]
    assert all(path.stat().st_size > 0 for path in written)
    assert "### humaneval, profile `test-fast`" in written[0].read_text()
