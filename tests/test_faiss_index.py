"""The faiss indexes pass the Index contract and fail clearly on bad files and parameters."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from ragloom.errors import IndexBuildError, IndexFileError
from ragloom.plugins.faiss_index import (
    FaissCompressedIndex,
    FaissExactIndex,
    FaissHnswIndex,
    FaissHnswSq8Index,
)
from ragloom.testing import IndexContract, unit_vectors


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


def test_nlist_shrinks_for_a_small_training_sample(caplog: pytest.LogCaptureFixture) -> None:
    index = FaissCompressedIndex.create(16, FaissCompressedIndex.Params(factory="IVF4096,PQ4x4"))
    with caplog.at_level(logging.INFO):
        index.train(unit_vectors(1000, 16))
    assert "too few for IVF4096,PQ4x4; built IVF25,PQ4x4 instead" in caplog.text
    index.add(unit_vectors(1000, 16), np.arange(1000))
    assert index.search(unit_vectors(2, 16), 3)[1].shape == (2, 3)


def test_adding_before_training_says_what_to_do() -> None:
    index = FaissCompressedIndex.create(16, FaissCompressedIndex.Params(factory="IVF4,PQ4x4"))
    with pytest.raises(IndexBuildError, match=r"must be trained before vectors are added"):
        index.add(unit_vectors(10, 16), np.arange(10))


def test_bad_factory_is_a_clear_error() -> None:
    with pytest.raises(IndexBuildError, match="faiss-compressed needs an IVF factory"):
        FaissCompressedIndex.create(16, FaissCompressedIndex.Params(factory="PQ4"))
    with pytest.raises(IndexBuildError, match='faiss cannot build "IVF4,PQ5" for dimension 16'):
        FaissCompressedIndex.create(16, FaissCompressedIndex.Params(factory="IVF4,PQ5"))


def test_too_few_vectors_for_the_quantizer() -> None:
    index = FaissCompressedIndex.create(16, FaissCompressedIndex.Params(factory="IVF1,PQ4"))
    with pytest.raises(IndexBuildError, match=r"training .* on 100 vectors failed"):
        index.train(unit_vectors(100, 16))


def test_wiki_dpr_default_estimate_per_vector() -> None:
    """IVF4096_HNSW128,PQ128 at d=768: 128 code bytes plus ids (perf.md: 136 B with one id)."""
    params = FaissCompressedIndex.Params()
    per_vector = (
        FaissCompressedIndex.estimate(2_000_000, 768, params)
        - FaissCompressedIndex.estimate(1_000_000, 768, params)
    ) / 1_000_000
    assert per_vector == 128 + 24
