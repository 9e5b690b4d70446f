"""Configuration from the environment, one table for every stage.

Each setting is a dataclass field whose metadata names its environment variable and
says what it is for; the README's configuration table is generated from the same
metadata (`eager config`), so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eager.common.protocol import MAX_OUTPUT_BYTES


def _setting(default: Any, env: str, doc: str, fallback_env: str | None = None, shown: str | None = None) -> Any:
    """`shown`: the default as the table prints it, when the empty default stands for a choice made at run time."""
    return field(default=default, metadata={"env": env, "doc": doc, "fallback_env": fallback_env, "shown": shown})


@dataclass(frozen=True)
class Settings:
    redis_url: str = _setting("redis://127.0.0.1:6379/0", "EAGER_REDIS_URL", "Redis every stage meets in (redis:// or unix://)")
    namespace: str = _setting("eager", "EAGER_NAMESPACE", "prefix of every key and of the executor queue; one per deployment")
    model_base_url: str = _setting(
        "http://127.0.0.1:8080/v1", "EAGER_MODEL_BASE_URL", "OpenAI-compatible endpoint", fallback_env="OPENAI_BASE_URL"
    )
    model_api_key: str = _setting("not-needed", "EAGER_MODEL_API_KEY", "key for that endpoint", fallback_env="OPENAI_API_KEY")
    model: str = _setting("default", "EAGER_MODEL", "model name sent to the endpoint")
    local_model: str = _setting("qwen2.5-coder-1.5b", "EAGER_LOCAL_MODEL", "the model llama.cpp serves here when no endpoint is configured: qwen2.5-coder-1.5b (writes working code) or smollm2-135m (small and fast)")
    model_dir: str = _setting(os.path.expanduser("~/.cache/eager/models"), "EAGER_MODEL_DIR", "where `eager model-install` joins a local model's parts into one file", shown="~/.cache/eager/models")
    model_timeout_s: float = _setting(60.0, "EAGER_MODEL_TIMEOUT_S", "longest wait for the endpoint to connect or send the next token")
    key_ttl_s: int = _setting(3600, "EAGER_KEY_TTL_S", "expiry of every per-session key")
    session_timeout_s: float = _setting(300.0, "EAGER_SESSION_TIMEOUT_S", "wall time of a whole session, generation included (a session may ask for less: timeout_s)")
    batch_timeout_s: float = _setting(60.0, "EAGER_BATCH_TIMEOUT_S", "wall time of one batch in the interpreter")
    lease_s: float = _setting(3.0, "EAGER_LEASE_S", "a stage that stops renewing its lease on a session for this long is presumed dead, and the session ends")
    cancel_wait_s: float = _setting(2.0, "EAGER_CANCEL_WAIT_S", "how long an executor waits, after cancelling, to learn how generation ended")
    interpreter_python: str = _setting("", "EAGER_INTERPRETER_PYTHON", "the Python that runs generated code (the sandbox user must be able to run it)",
                                       shown="the checkout's .venv-sandbox, else the executor's Python if the sandbox user can run it, else /usr/bin/python3")
    sandbox_cpu_s: int = _setting(300, "EAGER_SANDBOX_CPU_S", "CPU seconds of each sandboxed process (RLIMIT_CPU; past it the session ends limit_exceeded)")
    sandbox_memory_mb: int = _setting(4096, "EAGER_SANDBOX_MEMORY_MB", "address space of each sandboxed process (RLIMIT_AS; past it allocations raise MemoryError) and memory of the whole sandbox (its cgroup), MB")
    sandbox_processes: int = _setting(128, "EAGER_SANDBOX_PROCESSES", "processes and threads of one sandbox (its cgroup's pids.max and RLIMIT_NPROC of its slot uid; only when the executor is root)")
    sandbox_open_files: int = _setting(512, "EAGER_SANDBOX_OPEN_FILES", "open files of each sandboxed process (RLIMIT_NOFILE)")
    sandbox_file_size_mb: int = _setting(256, "EAGER_SANDBOX_FILE_SIZE_MB", "largest file a sandboxed process may write, MB (RLIMIT_FSIZE)")
    sandbox_disk_mb: int = _setting(1024, "EAGER_SANDBOX_DISK_MB", "size of the jail's private tmpfs: working directory, /tmp and /dev/shm together, MB (its pages count as the sandbox's memory)")
    sandbox_isolation: str = _setting("", "EAGER_SANDBOX_ISOLATION", "require: refuse to run code without every layer of the jail (see `eager config`); best-effort: run with the layers the host allows",
                                      shown="require as root, else best-effort")
    sandbox_output_bytes: int = _setting(MAX_OUTPUT_BYTES, "EAGER_SANDBOX_OUTPUT_BYTES", f"stdout+stderr kept per session (at most {MAX_OUTPUT_BYTES}, what one message carries); the rest is cut with a marker and the session goes on")
    sandbox_uid_base: int = _setting(20001, "EAGER_SANDBOX_UID_BASE", "first slot uid: as root each interpreter runs as a uid of its own from here on")
    sandbox_slots: int = _setting(64, "EAGER_SANDBOX_SLOTS", "number of slot uids, shared by every executor on the host")
    sandbox_slot_dir: str = _setting("/run/eager-slots", "EAGER_SANDBOX_SLOT_DIR", "lock files claiming slot uids across processes (root-owned, not writable by others)")
    gate_preset: str = _setting("sandboxed", "EAGER_GATE_PRESET", "what the gate holds until the program is complete: sandboxed (only what changes meaning if run early) or strict (every external effect, timing, dynamic execution)")
    gate_escapes: str = _setting("", "EAGER_GATE_ESCAPES", "ways out of the sandbox this deployment opens (comma list of network, files); under sandboxed, calls that use them are held")
    gate_hold: str = _setting("", "EAGER_GATE_HOLD", "more calls to hold under any preset (comma list of dotted names; a module holds all its functions)")
    gate_batch_chunks: int = _setting(4, "EAGER_GATE_BATCH_CHUNKS", "gate batch: run when this many chunks wait (a session may choose its own)")
    gate_batch_wait_ms: int = _setting(200, "EAGER_GATE_BATCH_WAIT_MS", "gate batch: or when the oldest waiting chunk has waited this long")
    metrics_port: int = _setting(0, "EAGER_METRICS_PORT", "port of this process's /metrics (0: none); honcho's $PORT when unset", fallback_env="PORT")
    metrics_addr: str = _setting("127.0.0.1", "EAGER_METRICS_ADDR", "address /metrics listens on (0.0.0.0 for a Prometheus on another host)")
    warm_interpreters: int = _setting(2, "EAGER_WARM_INTERPRETERS", "started interpreters each executor keeps ready for its next session")
    preload: str = _setting("numpy,pandas", "EAGER_PRELOAD", "modules warm interpreters import while they wait (comma list; hidden from the program until it imports them)")
    turn_idle_s: float = _setting(120.0, "EAGER_TURN_IDLE_S", "how long an executor keeps a conversation's interpreter waiting for its next turn")
    max_queued: int = _setting(0, "EAGER_MAX_QUEUED", "admission limit: a client refuses a new session (Overloaded) while this many wait in the executor queue (0: no limit)")

    def __post_init__(self) -> None:
        """A session's kept output travels in its Summary, one message: a larger cap would lose the Summary."""
        if not 0 <= self.sandbox_output_bytes <= MAX_OUTPUT_BYTES:
            raise ValueError(f"EAGER_SANDBOX_OUTPUT_BYTES={self.sandbox_output_bytes}: expected 0 to {MAX_OUTPUT_BYTES}, "
                             "what one message can carry")

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

    def session_timeout(self, requested_s: float | None) -> float:
        """A session's wall time: its own limit if it asked for one, never more than the deployment's."""
        return self.session_timeout_s if requested_s is None else min(requested_s, self.session_timeout_s)

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables, to hand the same configuration to child stages."""
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def table(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for every setting; the README prints this."""
        rows = []
        for f in dataclasses.fields(cls):
            env = f.metadata["env"] + (f" (or {f.metadata['fallback_env']})" if f.metadata["fallback_env"] else "")
            default = f.metadata["shown"] or str(f.default)
            rows.append((env, default, f.metadata["doc"]))
        return rows
