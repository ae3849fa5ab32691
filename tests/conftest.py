"""Shared test set-up: no hub access, and the example plugin package is tested by its own suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from ragloom.registry import Owner, Registrar, Registry

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

collect_ignore = ["plugin_pkg"]

TESTS = Path(__file__).parent
REPO = TESTS.parent


TINY_ENCODER_SPEC = """
schema = 1
[encoder]
type = "dpr"
path = "{model}"
pooling = "mean"
normalize = true
"""
"""A spec whose only table is a tiny random BERT encoder at ``{model}`` (tiny_models.bert_dir)."""


def encoder_workspace(root: Path) -> Path:
    """``root`` holding a tiny random BERT (``bert/``) and ``spec.toml`` declaring it."""
    from ragloom.testing.tiny_models import bert_dir

    model = bert_dir(root / "bert")
    (root / "spec.toml").write_text(TINY_ENCODER_SPEC.format(model=model), encoding="utf-8")
    return root


def write_documents(path: Path, count: int, seed: int = 4) -> None:
    """``count`` generated JSONL documents (id, title, text of about 24 words)."""
    import json

    from ragloom.testing.tiny_models import corpus

    with path.open("w", encoding="utf-8") as handle:
        for number, text in enumerate(corpus(count, seed=seed)):
            doubled = f"{text} {text}"
            handle.write(json.dumps({"id": number, "title": text[:12], "text": doubled}) + "\n")


def ragloom_command(*args: object) -> list[str]:
    """The command line that runs ``ragloom ARGS...`` with this interpreter."""
    return [sys.executable, "-m", "ragloom.cli", *(str(arg) for arg in args)]


def kill_midway(command: Sequence[str], progress: Callable[[], int], at_least: int) -> int:
    """Run ``command``, SIGKILL it once ``progress()`` reaches ``at_least``, and return the
    progress it had when it died (the run must not have finished by then)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while progress() < at_least and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = progress()
    assert killed_at >= at_least
    return killed_at


def pip_install_target(source: Path, target: Path, build: Path) -> None:
    """``pip install --target`` without dependencies or network: a site directory to put on
    PYTHONPATH, as a real install would lay it out (dist-info with entry points included)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        cwd=build,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[[str], Path]:
    """Write TOML text to a spec file in a temporary directory and return its path."""

    def write(text: str, name: str = "spec.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A registry with only ragloom's built-ins (no entry-point plugins)."""
    from ragloom.plugin_manager import build_registry, plugin_manager

    monkeypatch.setenv("RAGLOOM_DISABLE_PLUGIN_AUTOLOAD", "1")
    return build_registry(*plugin_manager())


@pytest.fixture
def register(registry: Registry) -> Registrar:
    """A ``register`` callable adding to ``registry`` as a test plugin would."""
    return Registrar(registry, Owner("test-plugins", "0", "tests"))


@pytest.fixture
def toy_registry(registry: Registry, register: Registrar) -> Registry:
    """The built-ins plus the toy components of tests/toy_components.py."""
    from toy_components import register_toys

    register_toys(register)
    return registry


@pytest.fixture(scope="session")
def tiny_rag(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Writes specs over one tiny RAG checkpoint (transformers' RagTokenForGeneration, a
    64-wide BART) and its imported knowledge base of 120 passages, built once per session:
    ``tiny_rag(name, marginalizer=..., n_docs=..., max_length=...)`` → the spec's path."""
    import faiss

    from ragloom import Pipeline
    from ragloom.kb.hf import import_hf
    from ragloom.testing.tiny_models import Size, rag_checkpoint, rag_spec, recipe_knowledge_base

    root = tmp_path_factory.mktemp("tiny-rag")
    checkpoint, _, context = rag_checkpoint(root, seed=3, size=Size(generator_hidden=64))
    passages, index = recipe_knowledge_base(root, context, faiss.IndexFlatIP(32))

    def write(name: str, **settings: object) -> Path:
        path = root / f"{name}.toml"
        path.write_text(rag_spec(checkpoint, context, root / "kb", **settings))  # type: ignore[arg-type]
        return path

    import_hf(passages, root / "kb", index, Pipeline.from_spec(write("spec")).encoder, "dpr")
    return write
