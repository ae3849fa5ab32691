"""The hnswlib index passes the Index contract and keeps ef across save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragloom.errors import IndexFileError
from ragloom.plugins.hnsw_index import HnswIndex
from ragloom.testing import IndexContract, unit_vectors


class TestHnswContract(IndexContract):
    index_class = HnswIndex
    params = HnswIndex.Params(M=16, ef_construction=100, ef=64)
    min_recall_at_10 = 0.9
    reconstruct_atol = 1e-6


def test_ef_survives_save_and_load(tmp_path: Path) -> None:
    index = HnswIndex.create(8, HnswIndex.Params(ef=77))
    index.add(unit_vectors(50, 8), np.arange(50))
    index.save(tmp_path / "hnsw")
    loaded = HnswIndex.load(tmp_path / "hnsw")
    assert loaded.params.ef == 77 and loaded._index.ef == 77


def test_ef_below_k_is_explained() -> None:
    index = HnswIndex.create(8, HnswIndex.Params(ef=4))
    index.add(unit_vectors(50, 8), np.arange(50))
    with pytest.raises(
        ValueError, match=r"ef=4 is smaller than k=10; raise \[retriever.index\] ef"
    ):
        index.search(unit_vectors(1, 8), 10)


def test_truncated_file_is_refused_before_hnswlib_reads_it(tmp_path: Path) -> None:
    index = HnswIndex.create(8, HnswIndex.Params())
    index.add(unit_vectors(500, 8), np.arange(500))
    index.save(tmp_path / "hnsw")
    data = (tmp_path / "hnsw" / "index.bin").read_bytes()
    (tmp_path / "hnsw" / "index.bin").write_bytes(data[:1000])
    with pytest.raises(IndexFileError, match="is truncated"):
        HnswIndex.load(tmp_path / "hnsw")
