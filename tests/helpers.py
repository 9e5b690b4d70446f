"""Helpers for tests that build answers and run programs the serial way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common.protocol import Message, Summary
from eager.client import Session


def answer_of(code: str, before: str = "Here is the program:\n\n", after: str = "\nThat is all.\n") -> str:
    """A chat answer the way models write them: a sentence, one python fence, a sentence."""
    return f"{before}```python\n{code}```\n{after}"


def run_with_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "program.py"
    path.write_text(code)
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path)


def collect(session: Session) -> tuple[list[Message], Summary]:
    events = list(session.events())
    assert isinstance(events[-1], Summary)
    return events, events[-1]


def assert_session_keys_expire(settings, session_id: str) -> None:  # type: ignore[no-untyped-def]
    """No key of the session may outlive it: each one that exists carries an expiry."""
    from common.connection import connect
    from common.protocol import Keys

    client = connect(settings)
    for key in Keys(settings.namespace).session_keys(session_id):
        assert client.ttl(key) != -1, f"{key} never expires"
    client.close()
