"""The `eager` command line as a user runs it: real subprocesses, embedded stacks, a private Redis."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import BIN, stage_env
from tests.helpers import answer_of, run_with_python

PROGRAM = 'import time\nfor i in range(3):\n    print("tick", i)\nx = sum(range(10))\ntime.sleep(0.2)\nprint("x", x)\n'


def eager(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "eager"), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_chunk_prints_one_json_object_per_chunk_that_concatenate_to_the_code(tmp_path):
    answer = answer_of(PROGRAM)
    deltas = tmp_path / "deltas.jsonl"
    deltas.write_text("".join(json.dumps(answer[i:i + 5]) + "\n" for i in range(0, len(answer), 5)))
    result = eager("chunk", "--deltas", str(deltas), "--json", env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    chunks = [json.loads(line) for line in result.stdout.splitlines()]
    assert [c["seq"] for c in chunks] == list(range(len(chunks))) and len(chunks) == 5
    assert "".join(c["code"] for c in chunks) == PROGRAM
    assert all(set(c) >= {"seq", "start_line", "end_line", "code", "emitted_at"} for c in chunks)
    assert chunks[1]["start_line"] == 2 and chunks[1]["end_line"] == 3
    assert all(c["emitted_at"] <= len(answer) for c in chunks)


def test_chunk_raw_mode_and_a_bad_deltas_file(tmp_path):
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps("a = 1\nb = 2\n") + "\n")
    result = eager("chunk", "--deltas", str(raw), "--json", "--raw", env=os.environ.copy())
    assert [json.loads(line)["code"] for line in result.stdout.splitlines()] == ["a = 1\n", "b = 2\n"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    result = eager("chunk", "--deltas", str(bad), "--json", env=os.environ.copy())
    assert result.returncode == 2 and "line 1" in result.stderr


@pytest.mark.slow
def test_run_replay_json_with_no_redis_running_starts_a_private_one(settings, tmp_path):
    """Nothing answers at the configured URL: `eager run` brings up its own Redis and stages for the run."""
    answer_file = tmp_path / "answer.md"
    answer_file.write_text(answer_of(PROGRAM))
    env = {**stage_env(settings), "EAGER_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = eager("run", "--replay", str(answer_file), "--json", "--tps", "200", "--ttft", "0.05", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    summary = events[-1]
    assert summary["kind"] == "summary" and summary["status"] == "ok"
    assert summary["stdout"] == run_with_python(PROGRAM, tmp_path).stdout
    assert summary["error"] is None
    assert summary["e2e_s"] > 0 and summary["generation_s"] > 0 and summary["non_overlapped_s"] >= 0
    assert {"delta", "chunk", "batch_started", "output"} <= {e["kind"] for e in events}


def test_run_without_redis_or_redis_server_says_how_to_get_one(settings, tmp_path):
    answer_file = tmp_path / "answer.md"
    answer_file.write_text(answer_of(PROGRAM))
    env = {**stage_env(settings), "EAGER_REDIS_URL": "redis://127.0.0.1:1/0", "PATH": str(BIN)}
    result = eager("run", "--replay", str(answer_file), env=env)
    assert result.returncode == 1
    assert "redis-server" in result.stderr and "EAGER_REDIS_URL" in result.stderr


@pytest.mark.slow
def test_run_against_an_unreachable_model_ends_with_a_clear_model_error(settings):
    env = {**stage_env(settings), "EAGER_MODEL_BASE_URL": "http://127.0.0.1:9/v1"}
    result = eager("run", "print hello", "--json", env=env)
    assert result.returncode == 1
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["status"] == "model_error"
    assert "unreachable" in summary["detail"]
