"""The `eager` command line as a user runs it: real subprocesses, embedded stacks, a private Redis."""

from __future__ import annotations

import base64
import itertools
import json
import os
import pty
import re
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import BIN, stage_env
from tests.helpers import Outcome, python_outcome
from tests.helpers import answer_of, run_with_python
from tests.test_visible import acts_on_a_terminal

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


# --------------------------------------------------------------------------------------------
# --replay reads the answer as written; --raw replays a completion; the human view obeys nothing


def replay(tmp_path: Path, answer: str, *args: str, env: dict[str, str], name: str = "answer.md"
           ) -> subprocess.CompletedProcess:
    """`eager run --replay FILE ARGS` with FILE holding `answer` byte for byte."""
    path = tmp_path / name
    path.write_bytes(answer.encode())
    return eager("run", "--replay", str(path), "--ttft", "0.05", *args, env=env)


def json_events(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def outcome(summary: dict) -> Outcome:
    error = summary["error"] or {}
    return Outcome(summary["stdout"], error.get("type"), error.get("line"))


def both(*runs: Callable[[], subprocess.CompletedProcess]) -> list[subprocess.CompletedProcess]:
    """Runs side by side: each `eager run --replay` brings up a stack of its own."""
    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(lambda run: run(), runs))


# Lines ending at \r\n, at a lone \r and at \n; a string holding each; an error on the last line.
LINE_ENDS = ("x = 1\ry = 2\r\nprint(x + y)\rs = '''a\rb\r\nc'''\nprint(repr(s))\rfor i in range(2):\r"
             "    print(i)\r\nprint(undefined)\r")
# CommonMark too ends lines at a lone \r: the prose and the fences end so as well.
LINE_ENDS_ANSWER = f"Here it is:\r\r```python\r{LINE_ENDS}```\rDone.\r\n"


@pytest.mark.slow
def test_run_replay_reads_the_answer_as_written_and_runs_it_as_python_would(settings, tmp_path):
    """No newline translation: the deltas are the file, the chunks the code in it, the lines python's."""
    expected = python_outcome(LINE_ENDS, tmp_path)
    assert expected.error_type == "NameError" and expected.error_line == 10
    env = stage_env(settings)
    runs = both(lambda: replay(tmp_path, LINE_ENDS_ANSWER, "--json", "--tps", "400", env=env, name="fast.md"),
                lambda: replay(tmp_path, LINE_ENDS_ANSWER, "--json", "--tps", "60", "--gate", "serial", env=env,
                               name="slow.md"))
    for result in runs:
        assert result.returncode == 1, result.stdout + result.stderr
        events = json_events(result)
        streamed = "".join(e["text"] for e in events if e["kind"] == "delta")  # the error may cut the prose after
        assert LINE_ENDS_ANSWER.startswith(streamed) and LINE_ENDS in streamed, streamed
        chunks = [e for e in events if e["kind"] == "chunk"]
        assert "".join(c["code"] for c in chunks) == LINE_ENDS
        assert chunks[-1]["end_line"] == 10
        summary = events[-1]
        assert summary["status"] == "error" and outcome(summary) == expected, summary


@pytest.mark.slow
def test_run_replay_raw_runs_the_recorded_completion(settings, tmp_path):
    """`--raw` asks for a completion (/v1/completions) and takes its text as bare code: not `no_code`."""
    expected = python_outcome(LINE_ENDS, tmp_path)
    env = stage_env(settings)
    fast, slow, human = both(
        lambda: replay(tmp_path, LINE_ENDS, "--raw", "--json", "--tps", "400", env=env, name="fast.py"),
        lambda: replay(tmp_path, LINE_ENDS, "--raw", "--json", "--tps", "60", "--gate", "serial", env=env,
                       name="slow.py"),
        lambda: replay(tmp_path, LINE_ENDS, "--raw", "--tps", "400", env=env, name="human.py"))
    for result in (fast, slow):
        assert result.returncode == 1, result.stdout + result.stderr
        events = json_events(result)
        assert "".join(c["code"] for c in events if c["kind"] == "chunk") == LINE_ENDS
        assert events[-1]["status"] == "error" and outcome(events[-1]) == expected, events[-1]
    assert human.returncode == 1, human.stdout + human.stderr
    assert "  │ 3\n" in human.stdout and "  ✗ NameError at line 10: name 'undefined' is not defined" in human.stdout
    assert "session error (gate eager)" in human.stdout


# Prints what a terminal obeys: clipboard (OSC 52), clear screen, window title, C1 CSI, a bidi override,
# NUL, \r; on stderr and in its error too. The answer's own prose carries a raw escape sequence.
HOSTILE = (
    'print("\\x1b]52;c;SGVsbG8=\\x07copied")\n'
    'print("\\x1b[2J\\x1b]0;owned\\x07\\x9b31m\\u202eevil\\x00", "tab\\there", "cr\\rover")\n'
    "import sys\n"
    'sys.stderr.write("\\x1b[31mon stderr\\n")\n'
    'raise ValueError("\\x1b]52;c;aGk=\\x07")\n'
)
HOSTILE_ANSWER = answer_of(HOSTILE, before="Here \x1b]0;answer title\x07 it is:\n\n")
SHOWN = ["Here \\x1b]0;answer title\\x07 it is:", "  │ \\x1b]52;c;SGVsbG8=\\x07copied",
         "  │ \\x1b[2J\\x1b]0;owned\\x07\\x9b31m\\u202eevil\\x00 tab\there cr\\rover", "  │ \\x1b[31mon stderr",
         "  ✗ ValueError at line 5: \\x1b]52;c;aGk=\\x07", "    ValueError: \\x1b]52;c;aGk=\\x07"]


def read_terminal(tmp_path: Path, answer: str, env: dict[str, str]) -> str:
    """`eager run --replay` on a real terminal (a pty): all it wrote there, until it exits."""
    path = tmp_path / "tty.md"
    path.write_bytes(answer.encode())
    parent, child = pty.openpty()
    process = subprocess.Popen([str(BIN / "eager"), "run", "--replay", str(path), "--ttft", "0.05", "--tps", "400"],
                               stdout=child, stderr=child, stdin=subprocess.DEVNULL, env=env)
    os.close(child)
    out = bytearray()
    while True:
        try:
            data = os.read(parent, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not data:
            break
        out += data
    os.close(parent)
    assert process.wait(timeout=120) == 1
    return out.decode().replace("\r\n", "\n")  # the terminal's own line discipline writes \r\n for \n


@pytest.mark.slow
def test_the_human_view_shows_control_characters_and_json_keeps_them(settings, tmp_path):
    """On a pipe and on a terminal, nothing the program prints or the model wrote drives the terminal;
    the `--json` summary still has the exact text, python's."""
    expected = python_outcome(HOSTILE, tmp_path)
    env = stage_env(settings)
    piped, exact, terminal = both(lambda: replay(tmp_path, HOSTILE_ANSWER, "--tps", "400", env=env),
                                  lambda: replay(tmp_path, HOSTILE_ANSWER, "--json", "--gate", "serial", env=env,
                                                 name="json.md"),
                                  lambda: read_terminal(tmp_path, HOSTILE_ANSWER, env))
    assert piped.returncode == 1
    for out in (piped.stdout + piped.stderr, re.sub(r"\x1b\[[0-9;]*m", "", terminal)):  # less the view's own colours
        assert not [char for char in out if acts_on_a_terminal(char)], out
        lines = out.split("\n")
        assert all(line in lines for line in SHOWN), out
    summary = json_events(exact)[-1]
    assert summary["status"] == "error" and outcome(summary) == expected and "\x1b]52;c;" in summary["stdout"]


FIGURE_ANSWER = ("```python\nimport matplotlib.pyplot as plt\nprint('before')\nplt.plot([1, 2])\nplt.show()\n"
                 "print('after')\n```\n")


@pytest.mark.slow
def test_run_writes_each_figure_to_a_file_where_it_appeared_and_json_carries_it(settings, tmp_path):
    figures = tmp_path / "figures"
    human, as_json = both(lambda: replay(tmp_path, FIGURE_ANSWER, "--figures", str(figures), env=stage_env(settings)),
                          lambda: replay(tmp_path, FIGURE_ANSWER, "--json", env=stage_env(settings), name="json.md"))
    assert human.returncode == 0, human.stdout + human.stderr
    lines = [line.strip() for line in human.stdout.splitlines()]
    shown = f"🖼 figure 1: {figures / 'figure-1.png'}"
    assert lines.index("│ before") < lines.index(shown) < lines.index("│ after")
    assert (figures / "figure-1.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    events = json_events(as_json)
    kinds = [event["kind"] for event in events if event["kind"] in ("output", "figure")]
    assert [kind for kind, _ in itertools.groupby(kinds)] == ["output", "figure", "output"]
    png = next(event["png"] for event in events if event["kind"] == "figure")
    assert base64.b64decode(png) == (figures / "figure-1.png").read_bytes()
