"""The public surface: `import eager` holds what a user needs, and a closed client refuses to submit."""

from __future__ import annotations

import typing

import pytest

import eager
from eager.common.config import Settings


def test_import_eager_gives_the_client_the_events_and_the_errors() -> None:
    for name in ("Client", "AsyncClient", "Session", "Conversation", "Settings", "SessionEvent", "SessionStatus",
                 "Gate", "Summary", "EagerError", "CodeTool", "ToolShape"):
        assert name in eager.__all__ and hasattr(eager, name)
    assert eager.Summary in typing.get_args(eager.SessionEvent)
    assert all(issubclass(getattr(eager, name), eager.EagerError) for name in eager.__all__
               if isinstance(getattr(eager, name), type) and issubclass(getattr(eager, name), BaseException))


def test_a_closed_client_submits_nothing(settings: Settings) -> None:
    client = eager.Client(settings)
    client.close()
    client.close()
    with pytest.raises(eager.ClientClosed):
        client.submit(prompt="print(1)")
    with pytest.raises(eager.ClientClosed):
        client.conversation()
    assert client._queue.count == 0
