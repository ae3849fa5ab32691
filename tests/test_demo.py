"""The main job: `ragloom demo` over the embedded Wikipedia sample, from an empty cache; and
`ragloom ask` with the bundled spec."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, ragloom_command

pytest.importorskip("gensim")
pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ragloom-cache")


def ragloom(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAGLOOM_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(ragloom_command(*args), capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_demo_answers_and_hot_swaps_from_an_empty_cache(cache: Path) -> None:
    result = ragloom(cache, "demo")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "knowledge base in" in result.stderr, "the first run builds the KB into the cache"
    out = result.stdout
    assert "CC BY-SA" in out
    assert "Q: Who was the 16th president of the United States?" in out
    original = next(line for line in out.splitlines() if "original edition:" in line)
    edition = next(line for line in out.splitlines() if "new edition:" in line)
    assert "Lincoln" in original and "Quill" not in original
    assert "Quill" in edition
    again = ragloom(cache, "demo")  # how long each run takes is docs/benchmarks.md's business
    assert again.returncode == 0 and "knowledge base in" not in again.stderr, "found in the cache"


@pytest.mark.slow
def test_ask_with_the_bundled_spec(cache: Path) -> None:
    spec = REPO / "examples" / "wikipedia.toml"
    result = ragloom(
        cache, "ask", str(spec), "What is the SI unit of electric current?", "--show-passages"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ampere" in result.stdout.lower()
    assert "1. Ampere (" in result.stdout
