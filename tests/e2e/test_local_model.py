"""The real local models end to end: with no model configured, `eager run` serves Qwen2.5-Coder-1.5B-Instruct
with llama.cpp and runs what it writes, printing what python prints for the same code; SmolLM2-135M stays a
setting. Whatever a model writes, the session must end with a terminal status the code earned, not a model or
executor failure."""

from __future__ import annotations

import json
import re

import pytest

from eager.detector.core import code_blocks
from eager.local_model import answers
from tests.conftest import stage_env
from tests.e2e.test_cli import eager
from tests.helpers import python_outcome

CODE_STATUSES = {"ok", "error", "syntax_error", "exited", "no_code"}


def _without_model(settings) -> dict[str, str]:
    return {k: v for k, v in stage_env(settings).items() if k not in ("EAGER_MODEL_BASE_URL", "OPENAI_BASE_URL")}


def _run(env: dict[str, str], prompt: str) -> tuple[str, str, list[dict]]:
    result = eager("run", prompt, "--json", env=env)
    started = re.search(r"serving the local model (.+) with llama.cpp at (\S+)\)", result.stderr)
    assert started, result.stderr
    assert not answers(started.group(2))  # the model server ended with the run
    return started.group(1), "".join(e["text"] for e in map(json.loads, result.stdout.splitlines())
                                     if e.get("kind") == "delta"), [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.slow
def test_with_no_model_configured_a_run_uses_the_real_code_model_and_prints_what_python_prints(settings, tmp_path):
    title, answer, events = _run(_without_model(settings), "Write a Python program that prints the squares of the "
                                 "numbers 1 to 4, one per line. Answer with one ```python code block.")
    assert title == "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)"
    summary = events[-1]
    assert summary["kind"] == "summary" and summary["status"] == "ok", summary
    assert summary["tokens"] > 0 and summary["ttft_s"] is not None
    (code,) = code_blocks(answer)
    assert summary["stdout"] == python_outcome(code, tmp_path).stdout == "1\n4\n9\n16\n"


@pytest.mark.slow
def test_the_small_model_is_one_setting_away(settings):
    title, answer, events = _run({**_without_model(settings), "EAGER_LOCAL_MODEL": "smollm2-135m"},
                                 "Write a Python program that prints the numbers 1 to 3.")
    assert title == "SmolLM2-135M-Instruct"
    assert events[-1]["kind"] == "summary" and events[-1]["status"] in CODE_STATUSES, events[-1]
    assert answer.strip()  # the model wrote something


@pytest.mark.slow
def test_the_repair_loop_with_the_real_local_model_ends_every_turn_with_a_status_the_code_earned(settings):
    """A task whose first program almost surely fails (the file is not there): each failed turn's error goes
    back to the real model, until a turn succeeds or the limit is reached; every event names its turn."""
    env = _without_model(settings)
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
