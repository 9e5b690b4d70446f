"""A replay model, a namespace of its own and a stack: what every replayed run stands on.

`eager run --replay`, the demo, the benchmarks, the load generator and the examples each point the stages at a
replay model. They need a namespace of their own, because a shared stack's producer is configured for its own
model, not for this replay; and, when they start stages, those stages are theirs to stop and forget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator

from eager.common.config import Settings
from eager.replay import Answers, ReplayServer, SpeedProfile
from eager.stack import LocalStack


def own_namespace(settings: Settings, label: str) -> Settings:
    """`settings` in a namespace no other run uses, named after the base one and `label` (e.g. `eager-bench-1f2e`)."""
    return dataclasses.replace(settings, namespace=f"{settings.namespace}-{label}-{uuid.uuid4().hex[:8]}")


def on_replay(settings: Settings, server: ReplayServer, model: str | None = None, label: str = "replay") -> Settings:
    """`settings` pointed at `server` (and its `model`, if given, as the default model), in a namespace of their
    own."""
    pointed = dataclasses.replace(settings, model_base_url=server.base_url, model=model or settings.model)
    return own_namespace(pointed, label)


@contextlib.contextmanager
def replay_model(settings: Settings, answers: Answers, profile: SpeedProfile, *, model: str | None = None,
                 label: str = "replay") -> Iterator[Settings]:
    """A replay model serving `answers` for the block, and settings pointed at it in a namespace of their own."""
    with ReplayServer(answers, profile) as server:
        yield on_replay(settings, server, model, label)


@contextlib.contextmanager
def replay_stack(settings: Settings, answers: Answers, profile: SpeedProfile, *, model: str | None = None,
                 label: str = "replay", executors: int = 1) -> Iterator[Settings]:
    """`replay_model` and stages of its own on it (`executors` executors), whose keys are deleted afterwards."""
    with replay_model(settings, answers, profile, model=model, label=label) as configured, \
            LocalStack(configured, executors=executors, forget=True) as ready:
        yield ready
