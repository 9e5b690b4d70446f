"""Configuration from the environment, one table for every stage.

Each setting is a dataclass field whose metadata names its environment variable and
says what it is for; the README's configuration table is generated from the same
metadata (`eager config`), so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _setting(default: Any, env: str, doc: str, fallback_env: str | None = None) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc, "fallback_env": fallback_env})


@dataclass(frozen=True)
class Settings:
    redis_url: str = _setting("redis://127.0.0.1:6379/0", "EAGER_REDIS_URL", "Redis every stage meets in (redis:// or unix://)")
    namespace: str = _setting("eager", "EAGER_NAMESPACE", "prefix of every key and of the executor queue; one per deployment")
    model_base_url: str = _setting(
        "http://127.0.0.1:8080/v1", "EAGER_MODEL_BASE_URL", "OpenAI-compatible endpoint", fallback_env="OPENAI_BASE_URL"
    )
    model_api_key: str = _setting("not-needed", "EAGER_MODEL_API_KEY", "key for that endpoint", fallback_env="OPENAI_API_KEY")
    model: str = _setting("default", "EAGER_MODEL", "model name sent to the endpoint")
    model_timeout_s: float = _setting(60.0, "EAGER_MODEL_TIMEOUT_S", "longest wait for the endpoint to connect or send the next token")
    key_ttl_s: int = _setting(3600, "EAGER_KEY_TTL_S", "expiry of every per-session key")
    session_timeout_s: float = _setting(300.0, "EAGER_SESSION_TIMEOUT_S", "wall time of a whole session, generation included")
    batch_timeout_s: float = _setting(60.0, "EAGER_BATCH_TIMEOUT_S", "wall time of one batch in the interpreter")
    cancel_wait_s: float = _setting(2.0, "EAGER_CANCEL_WAIT_S", "how long an executor waits, after cancelling, to learn how generation ended")
    interpreter_python: str = _setting(sys.executable, "EAGER_INTERPRETER_PYTHON", "the Python that runs generated code")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None and f.metadata["fallback_env"]:
                raw = environ.get(f.metadata["fallback_env"])
            if raw is None:
                continue
            kind = type(f.default)
            try:
                values[f.name] = kind(raw)
            except ValueError as exc:
                raise ValueError(f"{f.metadata['env']}={raw!r}: expected {kind.__name__}") from exc
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables, to hand the same configuration to child stages."""
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def table(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for every setting; the README prints this."""
        rows = []
        for f in dataclasses.fields(cls):
            env = f.metadata["env"] + (f" (or {f.metadata['fallback_env']})" if f.metadata["fallback_env"] else "")
            default = "the Python running the executor" if f.name == "interpreter_python" else str(f.default)
            rows.append((env, default, f.metadata["doc"]))
        return rows
