"""`ragloom index compare` on small knowledge bases of random vectors: every index type with its
defaults, names that say what was built."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragloom.cli import main
from ragloom.plugins.faiss_index import auto_factory
from ragloom.testing.random_kb import random_knowledge_base

FOUR_TYPES = "faiss-exact,faiss-compressed,faiss-hnsw-sq8,hnsw"


@pytest.fixture(scope="module")
def tiny_kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 vectors of dim 64 (the width of transformers' tiny RAG test models)."""
    out = tmp_path_factory.mktemp("compare") / "kb"
    random_knowledge_base(out, 1_000, 64)
    return out


def compare(capsys: pytest.CaptureFixture[str], *argv: str) -> list[list[str]]:
    """Run ``ragloom index compare``; the rows of its table, split into cells."""
    assert main(["index", "compare", *argv]) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    return [line.split() for line in lines if line.split()]


def test_every_index_type_with_its_defaults(
    tiny_kb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "compare.png"
    rows = compare(
        capsys, str(tiny_kb), "--types", FOUR_TYPES, "--num-queries", "100", "--plot", str(plot)
    )
    table = {row[0]: row for row in rows}
    factory = auto_factory(1_000, 64, 1_000).replace(",", ".")
    names = [
        "faiss-exact",
        f"faiss-compressed-factory{factory}-seed0-train_size262144",
        "faiss-hnsw-sq8-M128-ef_construction200",
        "hnsw-M32-ef_construction200-seed100",
    ]
    assert set(names) <= set(table), rows
    assert table["faiss-exact"][1] == "1.0000"
    assert 0.0 < float(table[names[1]][1]) < 1.0
    built = [path.name for path in (tiny_kb / "indexes").iterdir() if not path.name.startswith(".")]
    assert sorted(built) == sorted(names)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shards_are_sized_alike(tiny_kb: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every shard of a split gets the factory of the smallest shard, so they share one name."""
    command = ["index", "build", str(tiny_kb), "--type", "faiss-compressed", "--shards", "3"]
    assert main(command) == 0, capsys.readouterr().err
    factory = auto_factory(333, 64, 333)
    parent = (
        tiny_kb
        / "indexes"
        / (f"faiss-compressed-factory{factory.replace(',', '.')}-seed0-train_size262144.shards-3")
    )
    assert f"built {parent} (3 shards, 1000 vectors)" in capsys.readouterr().out
    assert all((parent / f"shard-{number}" / "manifest.json").is_file() for number in range(3))
