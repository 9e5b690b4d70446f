"""Joining a model's part packages into one file: in order, hashed as written, refused when the hash is not the
published one (and then nothing is left behind), kept when it is already there. Real files and real imports:
each test builds its own small part packages on sys.path."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from eager.common.config import Settings
from eager.local_model import DEFAULT, MODELS, LocalModel, LocalModelUnavailable, Parts, chosen, install


def _parts(root: Path, package: str, pieces: list[bytes]) -> None:
    for n, piece in enumerate(pieces, 1):
        data = root / f"{package}{n}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"part{n:02d}.bin").write_bytes(piece)


@pytest.fixture
def packages(tmp_path, monkeypatch):
    root = tmp_path / "site"
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [name for name in sys.modules if name.startswith("eagertest_")]:
        del sys.modules[name]


def _model(package: str, pieces: list[bytes], sha256: str | None = None) -> LocalModel:
    whole = b"".join(pieces)
    return LocalModel(name="test", title="Test model", context_tokens=512,
                      parts=Parts(f"{package}{{n}}", len(pieces), "test.gguf", len(whole),
                                  sha256 or hashlib.sha256(whole).hexdigest()))


def test_the_parts_are_joined_in_order_into_one_file(packages, tmp_path):
    pieces = [b"GGUF" + bytes(range(256)) * 40, b"second" * 1000, b"third"]
    _parts(packages, "eagertest_order", pieces)
    seen: list[int] = []
    path = install(_model("eagertest_order", pieces), tmp_path / "models", seen.append)
    assert path.read_bytes() == b"".join(pieces)
    assert sum(seen) == len(b"".join(pieces))
    assert path.stat().st_mode & 0o044 == 0o044  # a model server running as another user can read it


def test_a_hash_other_than_the_published_one_is_refused_and_leaves_nothing(packages, tmp_path):
    pieces = [b"one" * 100, b"two" * 100]
    _parts(packages, "eagertest_bad", pieces)
    with pytest.raises(LocalModelUnavailable, match="refusing test.gguf.*sha256"):
        install(_model("eagertest_bad", pieces, sha256="0" * 64), tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_a_missing_part_is_named(packages, tmp_path):
    _parts(packages, "eagertest_missing", [b"only the first"])
    model = _model("eagertest_missing", [b"only the first", b"never installed"])
    with pytest.raises(LocalModelUnavailable, match="part 2 of test.gguf is not installed"):
        install(model, tmp_path / "models")


def test_a_joined_file_is_kept_and_a_truncated_one_is_not_loaded(packages, tmp_path):
    pieces = [b"a" * 1000, b"b" * 1000]
    _parts(packages, "eagertest_kept", pieces)
    model = _model("eagertest_kept", pieces)
    path = install(model, tmp_path / "models")
    first = path.stat().st_mtime_ns
    assert install(model, tmp_path / "models") == path and path.stat().st_mtime_ns == first
    assert model.gguf(tmp_path / "models") == path
    path.write_bytes(b"a" * 10)
    with pytest.raises(LocalModelUnavailable, match="not assembled"):
        model.gguf(tmp_path / "models")


def test_the_default_local_model_writes_code_and_the_small_one_stays_a_setting():
    assert chosen(Settings()) is DEFAULT and DEFAULT.name == "qwen2.5-coder-1.5b"
    assert chosen(Settings(local_model="smollm2-135m")) is MODELS["smollm2-135m"]
    with pytest.raises(LocalModelUnavailable, match="none of qwen2.5-coder-1.5b, smollm2-135m"):
        chosen(Settings(local_model="gpt-5"))


def test_setup_assembled_the_published_default_model():
    """deploy/setup.sh ran `eager model-install`: the file the model server loads is the published one."""
    settings = Settings.from_env()
    path = DEFAULT.gguf(Path(settings.model_dir))
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while piece := file.read(1 << 24):
            digest.update(piece)
    assert DEFAULT.parts is not None and digest.hexdigest() == DEFAULT.parts.sha256
