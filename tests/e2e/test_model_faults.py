"""A model endpoint that fails in each way it can, behind the Procfile stack: every session ends with a
clear model_error within a bounded time, and the next session on the same stack works."""

from __future__ import annotations

import dataclasses
import time

import pytest

from eager.common.protocol import SessionStatus
from eager.client import Client
from tests.conftest import ProcfileStack
from tests.faulty_model import FaultyModel
from tests.helpers import collect

MODEL_TIMEOUT_S = 1.0
FAULTS = {
    "http-500": "answered HTTP 500",
    "stall": f"sent nothing for {MODEL_TIMEOUT_S} s",
    "drop": "stream broke",
    "malformed": "stream broke",
    "truncated": "without a finish reason",
}


@pytest.mark.slow
def test_each_model_failure_ends_its_session_clearly_and_the_next_session_works(settings, tmp_path):
    with FaultyModel() as model:
        configured = dataclasses.replace(settings, model_base_url=model.base_url, model_timeout_s=MODEL_TIMEOUT_S)
        stack = ProcfileStack(configured, tmp_path).start()
        try:
            with Client(configured) as client:
                for fault, detail in FAULTS.items():
                    started = time.monotonic()
                    _, summary = collect(client.submit(messages=[{"role": "user", "content": "go"}], model=fault))
                    assert summary.status is SessionStatus.MODEL_ERROR, (fault, summary)
                    assert detail in summary.detail, (fault, summary.detail)
                    assert time.monotonic() - started < 10 * MODEL_TIMEOUT_S, fault  # not the 300 s deadline
                    _, after = collect(client.submit(messages=[{"role": "user", "content": "go"}], model="good"))
                    assert after.status is SessionStatus.OK and after.stdout == "42\n", (fault, after)
        finally:
            stack.stop()
