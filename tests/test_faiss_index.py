"""The faiss-exact index passes the Index contract and fails clearly on bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragloom.plugins.faiss_index import FaissExactIndex, IndexFileError
from ragloom.testing import IndexContract, unit_vectors


class TestFaissExactContract(IndexContract):
    @pytest.fixture
    def index_factory(self):  # type: ignore[no-untyped-def]
        return lambda dim: FaissExactIndex.create(dim, FaissExactIndex.Params())


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    index = FaissExactIndex.create(8, FaissExactIndex.Params())
    index.add(unit_vectors(20, 8), np.arange(20))
    index.save(tmp_path / "exact")
    return tmp_path / "exact"


def test_truncated_file_is_a_clear_error(saved: Path) -> None:
    data = (saved / "index.faiss").read_bytes()
    (saved / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        IndexFileError, match=r"index.faiss is truncated or corrupt .* Build the index again"
    ):
        FaissExactIndex.load(saved)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IndexFileError, match="is not a saved faiss-exact index"):
        FaissExactIndex.load(tmp_path / "absent")


def test_corrupt_metadata_is_a_clear_error(saved: Path) -> None:
    (saved / "index.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(IndexFileError, match=r"index\.json is corrupt"):
        FaissExactIndex.load(saved)


def test_reconstructing_an_unknown_id_names_it(saved: Path) -> None:
    with pytest.raises(KeyError, match="ids not in the index"):
        FaissExactIndex.load(saved).reconstruct(np.array([999]))
