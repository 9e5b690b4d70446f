"""Every exception a user can meet has one root, eager.EagerError, and keeps its historical base."""

import pytest

import eager
from eager.common.connection import RedisUnavailable
from eager.common.protocol import ProtocolError
from eager.detector.core import DetectorError
from eager.client import ConversationClosed, Overloaded
from eager.local_model import LocalModelUnavailable
from eager.stack import StackError
from eager.executor_pool.gate import GateError
from eager.executor_pool.interpreter import BatchTimeout, InterpreterDied, InterpreterError
from eager.executor_pool.sandbox import SandboxError


@pytest.mark.parametrize("error, base", [
    (ProtocolError, ValueError), (GateError, ValueError), (RedisUnavailable, RuntimeError),
    (Overloaded, RuntimeError), (ConversationClosed, RuntimeError), (StackError, RuntimeError),
    (LocalModelUnavailable, RuntimeError), (DetectorError, RuntimeError), (InterpreterError, Exception),
    (InterpreterDied, InterpreterError), (BatchTimeout, InterpreterError), (SandboxError, Exception),
])
def test_every_user_visible_error_is_an_eager_error_and_keeps_its_base(error: type, base: type) -> None:
    assert issubclass(error, eager.EagerError)
    assert issubclass(error, base)


def test_a_protocol_error_is_caught_as_eager_error() -> None:
    with pytest.raises(eager.EagerError):
        raise ProtocolError("bad message")
