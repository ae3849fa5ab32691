"""The faiss indexes pass the Index contract and fail clearly on bad files and parameters."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from ragloom.commands.index import declared_index
from ragloom.errors import IndexBuildError, IndexFileError
from ragloom.kb.manifest import IndexManifest
from ragloom.plugins.faiss_index import (
    FaissCompressedIndex,
    FaissExactIndex,
    FaissHnswIndex,
    FaissHnswSq8Index,
    auto_factory,
)
from ragloom.testing import IndexContract, unit_vectors
from ragloom.testing.random_kb import random_knowledge_base


class TestFaissExactContract(IndexContract):
    index_class = FaissExactIndex
    params = FaissExactIndex.Params()


class TestFaissCompressedContract(IndexContract):
    index_class = FaissCompressedIndex
    params = FaissCompressedIndex.Params(factory="IVF16,PQ16x4", nprobe=8)
    corpus_size = 4000
    min_recall_at_10 = 0.3
    reconstruct_atol = 0.5


class TestFaissCompressedHnswQuantizerContract(IndexContract):
    index_class = FaissCompressedIndex
    params = FaissCompressedIndex.Params(factory="IVF32_HNSW16,PQ8x4", nprobe=16)
    corpus_size = 2000
    min_recall_at_10 = 0.2
    reconstruct_atol = 0.5


class TestFaissCompressedAutoContract(IndexContract):
    """The default, sized to the training sample when created without a knowledge base."""

    index_class = FaissCompressedIndex
    params = FaissCompressedIndex.Params()
    min_recall_at_10 = 0.2
    reconstruct_atol = 0.5


class TestFaissHnswContract(IndexContract):
    index_class = FaissHnswIndex
    params = FaissHnswIndex.Params(M=16, ef_search=64)
    min_recall_at_10 = 0.9


class TestFaissHnswSq8Contract(IndexContract):
    index_class = FaissHnswSq8Index
    params = FaissHnswSq8Index.Params(M=16, ef_search=64)
    min_recall_at_10 = 0.9
    reconstruct_atol = 0.02


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    index = FaissExactIndex.create(8, FaissExactIndex.Params())
    index.add(unit_vectors(20, 8), np.arange(20))
    index.save(tmp_path / "exact")
    return tmp_path / "exact"


def test_truncated_file_is_a_clear_error(saved: Path) -> None:
    data = (saved / "index.faiss").read_bytes()
    (saved / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFileError, match=r"index.faiss is truncated or corrupt"):
        FaissExactIndex.load(saved)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IndexFileError, match="is not a saved faiss-exact index"):
        FaissExactIndex.load(tmp_path / "absent")


def test_corrupt_metadata_is_a_clear_error(saved: Path) -> None:
    (saved / "index.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(IndexFileError, match=r"index\.json is corrupt"):
        FaissExactIndex.load(saved)


def test_an_index_of_another_type_is_refused(saved: Path) -> None:
    with pytest.raises(IndexFileError, match='holds a "faiss-exact" index, not "faiss-hnsw-sq8"'):
        FaissHnswSq8Index.load(saved)


@pytest.mark.parametrize(
    ("n", "dim", "factory"),
    [
        (1_000, 64, "IVF25,PQ16x4np"),  # 39 training vectors per list and per PQ centroid
        (1_077, 768, "IVF27,PQ192x4np"),
        (4_857, 384, "IVF124,PQ96x6np"),  # the embedded Wikipedia KB
        (100_000, 768, "IVF1265,PQ192x8np"),  # 4·sqrt(n) lists
        (21_015_324, 768, "IVF6721,PQ192x8np"),  # psgs_w100: 262,144 training vectors cap lists
        (500, 100, "IVF12,PQ25x3np"),  # 25 divides 100: sub-vectors of 4 dimensions
        (300, 3, "IVF7,PQ1x2np"),  # too narrow to split
    ],
)
def test_auto_factory_scales_with_n_and_dim(n: int, dim: int, factory: str) -> None:
    assert auto_factory(n, dim, min(n, 262_144)) == factory
    FaissCompressedIndex.create(dim, FaissCompressedIndex.Params(factory=factory))  # valid


def test_auto_is_sized_to_the_sample_without_a_knowledge_base() -> None:
    index = FaissCompressedIndex.create(16, FaissCompressedIndex.Params())
    index.train(unit_vectors(1000, 16))
    assert index.factory == index.params.factory == "IVF25,PQ4x4np"
    index.add(unit_vectors(1000, 16), np.arange(1000))
    assert index.search(unit_vectors(2, 16), 3)[1].shape == (2, 3)


def test_an_explicit_factory_is_built_as_written(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Too few vectors for its 16 lists and 16-centroid codes: faiss warns once for the lists and
    once per PQ sub-quantizer, logged as one line with the count; the index is what it says."""
    index = FaissCompressedIndex.create(16, FaissCompressedIndex.Params(factory="IVF16,PQ8x4"))
    with caplog.at_level(logging.INFO):
        index.train(unit_vectors(300, 16))
    assert index.factory == "IVF16,PQ8x4"
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == [
        'faiss-compressed "IVF16,PQ8x4", training on 300 vectors: faiss printed (9 times): '
        "WARNING clustering 300 points to 16 centroids: please provide at least 624 training points"
    ]
    assert "training on 300 vectors of dim 16 (with polysemous training" in caplog.text
    assert 'faiss-compressed "IVF16,PQ8x4": trained in' in caplog.text
    assert "WARNING clustering" not in capfd.readouterr().err
    with pytest.raises(IndexBuildError, match=r"at least as large as number of clusters \(4096\)"):
        FaissCompressedIndex.create(16, FaissCompressedIndex.Params(factory="IVF4096,PQ4")).train(
            unit_vectors(1000, 16)
        )


@pytest.mark.parametrize(("count", "dim"), [(1_000, 64), (1_077, 768)])
def test_small_knowledge_bases_build_the_default_in_seconds(
    tmp_path: Path, count: int, dim: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's KBs: 1,077 vectors took 408 s and printed 128 warnings; 64 dimensions failed
    ("IVF4096_HNSW128,PQ128 for dimension 64"). The name and manifest say what was built."""
    kb = random_knowledge_base(tmp_path / "kb", count, dim)
    declared = declared_index("faiss-compressed", [])
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        index = kb.load_index(declared)
    assert time.perf_counter() - started < 20
    assert not caplog.records  # no faiss warnings: the defaults fit the data
    factory = auto_factory(count, dim, count)
    path = kb.index_path(declared)
    assert (
        path.name == f"faiss-compressed-factory{factory.replace(',', '.')}-seed0-train_size262144"
    )
    assert IndexManifest.read(path, "index").params["factory"] == factory == index.factory
    queries = unit_vectors(5, dim, seed=9)
    assert (index.search(queries, 10)[1] >= 0).all()


def test_an_index_whose_name_hides_what_was_built_is_refused(tmp_path: Path) -> None:
    """Earlier ragloom shrank the lists of a small sample (IVF4096 → IVF25) and kept the name."""
    index = FaissCompressedIndex.create(16, FaissCompressedIndex.Params(factory="IVF8,PQ4x4np"))
    index.train(unit_vectors(1000, 16))
    index.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "index.json").read_text())
    meta["params"]["factory"] = "IVF4096,PQ4x4np"
    (tmp_path / "old" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match=r'holds a faiss "IVF8,PQ4x4np" index, but its '):
        FaissCompressedIndex.load(tmp_path / "old")


def test_adding_before_training_says_what_to_do() -> None:
    index = FaissCompressedIndex.create(16, FaissCompressedIndex.Params(factory="IVF4,PQ4x4"))
    with pytest.raises(IndexBuildError, match=r"must be trained before vectors are added"):
        index.add(unit_vectors(10, 16), np.arange(10))


def test_bad_factory_is_a_clear_error() -> None:
    with pytest.raises(IndexBuildError, match='faiss-compressed needs "auto" or an IVF factory'):
        FaissCompressedIndex.create(16, FaissCompressedIndex.Params(factory="PQ4"))
    with pytest.raises(IndexBuildError, match='faiss cannot build "IVF4,PQ5" for dimension 16'):
        FaissCompressedIndex.create(16, FaissCompressedIndex.Params(factory="IVF4,PQ5"))


def test_too_few_vectors_for_the_quantizer() -> None:
    index = FaissCompressedIndex.create(16, FaissCompressedIndex.Params(factory="IVF1,PQ4"))
    with pytest.raises(IndexBuildError, match=r"IVF1,PQ4\": training on 100 vectors failed"):
        index.train(unit_vectors(100, 16))


def test_wiki_dpr_estimate_per_vector() -> None:
    """IVF4096_HNSW128,PQ128 at d=768: 128 code bytes plus ids (perf.md: 136 B with one id)."""
    params = FaissCompressedIndex.Params(factory="IVF4096_HNSW128,PQ128")
    per_vector = (
        FaissCompressedIndex.estimate(2_000_000, 768, params)
        - FaissCompressedIndex.estimate(1_000_000, 768, params)
    ) / 1_000_000
    assert per_vector == 128 + 24
