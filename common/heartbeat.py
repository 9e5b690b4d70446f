"""Which stage processes are alive: each beats into its stage's sorted set.

A sorted set scored by the last beat (ms) lets a reader ask "who beat in the last
few seconds" in one command, and lets dead members be trimmed by score, so a
SIGKILLed process disappears from the answer within one liveness window.
"""

from __future__ import annotations

import os
import socket
import threading

import redis

from eager.common.clock import now_ns
from eager.common.protocol import Keys

BEAT_INTERVAL_S = 1.0
ALIVE_WITHIN_S = 3.0


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def beat(client: redis.Redis, keys: Keys, stage: str, name: str) -> None:
    now_ms = now_ns() // 1_000_000
    pipe = client.pipeline(transaction=False)
    pipe.zadd(keys.stage_heartbeats(stage), {name: now_ms})
    pipe.zremrangebyscore(keys.stage_heartbeats(stage), 0, now_ms - 60_000)
    pipe.execute()


def alive(client: redis.Redis, keys: Keys, stage: str, within_s: float = ALIVE_WITHIN_S) -> list[str]:
    since_ms = now_ns() // 1_000_000 - int(within_s * 1000)
    return list(client.zrangebyscore(keys.stage_heartbeats(stage), since_ms, "+inf"))


def start_beating(client: redis.Redis, keys: Keys, stage: str, name: str | None = None) -> threading.Event:
    """Beat from a daemon thread until the returned event is set (or the process dies)."""
    stop = threading.Event()
    name = name or process_name()

    def loop() -> None:
        while not stop.is_set():
            try:
                beat(client, keys, stage, name)
            except redis.RedisError:
                pass  # Redis down: the stage's own work reports it; liveness just lapses
            stop.wait(BEAT_INTERVAL_S)

    threading.Thread(target=loop, name=f"{stage}-heartbeat", daemon=True).start()
    return stop
