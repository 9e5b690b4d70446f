"""The real local model end to end: with no model configured, `eager run` serves the bundled
SmolLM2-135M-Instruct with llama.cpp and runs what it writes. Its code is often wrong; whatever it
writes, the session must end with a terminal status the code earned, not a model or executor failure."""

from __future__ import annotations

import json
import re

import pytest

from eager.local_model import answers
from tests.conftest import stage_env
from tests.e2e.test_cli import eager

CODE_STATUSES = {"ok", "error", "syntax_error", "exited", "no_code"}


@pytest.mark.slow
def test_with_no_model_configured_a_run_uses_the_real_local_model(settings):
    env = {k: v for k, v in stage_env(settings).items() if k not in ("EAGER_MODEL_BASE_URL", "OPENAI_BASE_URL")}
    result = eager("run", "Write a Python program that prints the numbers 1 to 3.", "--json", env=env)
    started = re.search(r"serving the bundled SmolLM2-135M-Instruct with llama.cpp at (\S+)\)", result.stderr)
    assert started, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    summary = events[-1]
    assert summary["kind"] == "summary" and summary["status"] in CODE_STATUSES, summary
    assert summary["tokens"] > 0 and summary["ttft_s"] is not None
    deltas = [e for e in events if e.get("kind") == "delta"]
    assert "".join(e["text"] for e in deltas).strip()  # the model wrote something
    assert not answers(started.group(1))  # the model server ended with the run


@pytest.mark.slow
def test_the_repair_loop_with_the_real_local_model_ends_every_turn_with_a_status_the_code_earned(settings):
    """A task whose first program almost surely fails (the file is not there): each failed turn's error goes
    back to the real model, until a turn succeeds or the limit is reached; every event names its turn."""
    env = {k: v for k, v in stage_env(settings).items() if k not in ("EAGER_MODEL_BASE_URL", "OPENAI_BASE_URL")}
    result = eager("run", "Write a Python program that opens the file numbers.txt and prints its first line. "
                   "Answer with one ```python code block.",
                   "--json", "--repair", "2", env=env)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    report = lines[-1]
    assert report["kind"] == "repair_report", report
    turns = report["per_turn"]
    assert 1 <= len(turns) <= 3 and all(turn["status"] in CODE_STATUSES for turn in turns), turns
    assert all(turn["status"] != "ok" for turn in turns[:-1])  # only a failure leads to another turn
    if not report["succeeded"]:
        assert len(turns) == 3 and report["stopped_because"] == "turn limit"
    summaries = [line for line in lines[:-1] if line.get("kind") == "summary"]
    assert [s["turn"] for s in summaries] == list(range(1, len(turns) + 1))
    assert [s["status"] for s in summaries] == [turn["status"] for turn in turns]
    assert result.returncode == (0 if report["succeeded"] else 1)
