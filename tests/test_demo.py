"""The main job: `ragloom demo` over the embedded Wikipedia sample, from an empty cache; and
`ragloom ask` with the bundled spec. With tiny models: the demo's hot swap of a hybrid
retriever's knowledge base, and its refusal of a KB it cannot re-encode."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, ragloom_command
from ragloom.kb import KnowledgeBase

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
    assert "unpacked the prebuilt wikipedia knowledge base" in result.stderr, "never encoded"
    out = result.stdout
    assert "CC BY-SA" in out
    assert "Q: Who was the 16th president of the United States?" in out
    original = next(line for line in out.splitlines() if "original edition:" in line)
    edition = next(line for line in out.splitlines() if "new edition:" in line)
    assert "Orwell" in original and "Quill" not in original
    assert "Quill" in edition
    again = ragloom(cache, "demo")  # how long each run takes is docs/benchmarks.md's business
    assert again.returncode == 0, again.stderr[-3000:]
    assert "knowledge base in" not in again.stderr, "found in the cache"


@pytest.mark.slow
def test_ask_with_the_bundled_spec(cache: Path) -> None:
    spec = REPO / "examples" / "wikipedia.toml"
    result = ragloom(
        cache, "ask", str(spec), "What is the SI unit of electric current?", "--show-passages"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ampere" in result.stdout.lower()
    assert "1. Ampere (" in result.stdout


ORWELL = [
    ("Animal Farm", "Animal Farm is a novella by George Orwell, first published in 1945."),
    ("Nineteen Eighty-Four", "Orwell wrote Nineteen Eighty-Four after Animal Farm."),
    ("Ampere", "The ampere is the SI unit of electric current."),
    ("Albert Einstein", "Albert Einstein developed the theory of relativity."),
    ("Paris", "Paris is the capital of France and its largest city."),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A directory and ``--set`` texts for the demo's spec there: tiny models (a random BERT, a
    random causal LM) and a hybrid of bm25 over a KB of ORWELL's passages only (``text-kb``)
    and dense over one encoded by that BERT (``kb``), as ``asset:wikipedia`` gives the two."""
    pytest.importorskip("bm25s")
    from ragloom import Pipeline
    from ragloom.kb import Document, build_knowledge_base
    from ragloom.spec import parse_assignment
    from ragloom.testing.tiny_models import bert_dir, causal_lm_dir

    root = tmp_path_factory.mktemp("demo")
    member = "retriever.members"
    texts = [
        f"encoder.path={bert_dir(root / 'bert')}",
        "encoder.max_length=128",
        f"generator.path={causal_lm_dir(root / 'llm')}",
        "generation.max_length=4",
        "retriever.type=hybrid",
        "retriever.depth=5",
        f"{member}.bm25.type=bm25",  # first: the demo must still edit the encoded KB
        f"{member}.bm25.kb={root / 'text-kb'}",
        f"{member}.dense.type=dense",
        f"{member}.dense.kb={root / 'kb'}",
        f"{member}.dense.index.type=faiss-exact",
    ]
    assignments = dict(parse_assignment(text) for text in texts)
    encoder = Pipeline.from_spec(REPO / "examples" / "wikipedia.toml", assignments).encoder
    for name, by, kind in (("kb", encoder, "hf-mean-pool"), ("text-kb", None, "none")):
        documents = (Document(title, text, str(n)) for n, (title, text) in enumerate(ORWELL))
        build_knowledge_base(documents, by, root / name, encoder_type=kind, progress=False)
    return root, texts


def sets(texts: list[str]) -> list[str]:
    return [part for text in texts for part in ("--set", text)]


def test_demo_hot_swaps_a_hybrids_knowledge_base(
    tiny: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """The encoded KB is edited and every member reads the new edition: both build their
    index in it."""
    _, texts = tiny
    result = ragloom(tmp_path / "cache", "demo", *sets(texts))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(2 passages rewritten and re-encoded into" in result.stdout
    assert "new edition:" in result.stdout
    (edition,) = (tmp_path / "cache" / "kb").glob("kb-edition-*")
    assert "Quill" in KnowledgeBase.open(edition).passages.get([0])[0].text
    built = {path.parent.name.split("-")[0] for path in edition.glob("indexes/*/manifest.json")}
    assert built == {"bm25", "faiss"}, "both members search the new edition"


def test_demo_refuses_a_kb_of_passages_only_before_answering(
    tiny: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, texts = tiny
    bm25 = [*texts[:4], "retriever.type=bm25", f"retriever.kb={root / 'text-kb'}"]
    result = ragloom(tmp_path / "cache", "demo", *sets(bm25))
    assert result.returncode == 1 and "Q:" not in result.stdout
    assert f"{root / 'text-kb'} holds passages only. Use a dense retriever" in result.stderr
