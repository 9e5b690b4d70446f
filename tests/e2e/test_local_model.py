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
