"""Index plugin ``hnsw``: an hnswlib graph by inner product.

hnswlib forgets ``ef`` when it saves, so ``ef`` lives in ``index.json`` and is set again on load.
hnswlib may crash when ``add_items`` runs while another thread searches; a readers-writer lock
lets searches run together and adds (and the resizes they need) run alone.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ragloom import atomic
from ragloom.artifacts import SAVED_INDEX
from ragloom.errors import IndexFileError, ParameterError
from ragloom.locks import ReadWriteLock

from .index_files import as_ids, as_matrix, check_k, read_meta, write_meta

INDEX_FILE = "index.bin"


class HnswIndex:
    """hnswlib HNSW (``space="ip"``; score = inner product)."""

    type_name = "hnsw"
    search_params: ClassVar[frozenset[str]] = frozenset({"ef", "threads"})
    metric = "ip"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        M: int = Field(default=32, ge=2, description="graph neighbours per vector")
        ef_construction: int = Field(default=200, ge=1, description="build-time beam width")
        ef: int = Field(default=128, ge=1, description="search-time beam width (at least k)")
        threads: int = Field(default=-1, description="threads for add and search (-1: all)")
        seed: int = Field(default=100, description="seed of the level generator")

    def __init__(self, dim: int, params: Any, index: Any) -> None:
        self.dim = dim
        self.params = params
        self._index = index
        self._lock = ReadWriteLock()

    @classmethod
    def create(cls, dim: int, params: Any) -> HnswIndex:
        import hnswlib

        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(
            max_elements=1024,
            ef_construction=params.ef_construction,
            M=params.M,
            random_seed=params.seed,
        )
        index.set_ef(params.ef)
        return cls(dim, params, index)

    @classmethod
    def estimate(cls, n: int, dim: int, params: Any) -> int:
        # level 0 holds 2M links (+ a count), upper levels M each for ~1/(M-1) of the vectors
        level0 = dim * 4 + (2 * params.M + 1) * 4 + 8
        upper = (params.M + 1) * 4 / max(params.M - 1, 1) + 8
        return int(n * (level0 + upper)) + 1024

    @property
    def ntotal(self) -> int:
        return int(self._index.get_current_count())

    def train(self, sample: np.ndarray) -> None:
        """hnswlib learns nothing before adding."""

    def tune(self, params: Any) -> None:
        with self._lock.writing():
            self.params = self.params.model_copy(
                update={"ef": params.ef, "threads": params.threads}
            )
            self._index.set_ef(params.ef)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        matrix = as_matrix(vectors, self.dim, "vectors")
        id_array = as_ids(ids, len(matrix))
        with self._lock.writing():
            needed = self.ntotal + len(matrix)
            if needed > self._index.get_max_elements():
                self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
            self._index.add_items(matrix, id_array, num_threads=self.params.threads)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        check_k(k)
        matrix = as_matrix(queries, self.dim, "queries")
        scores = np.full((len(matrix), k), -np.inf, np.float32)
        ids = np.full((len(matrix), k), -1, np.int64)
        with self._lock.reading():
            take = min(k, self.ntotal)
            if take and len(matrix):
                if self.params.ef < take:
                    raise ParameterError(
                        f"hnsw: ef={self.params.ef} is smaller than k={take}; raise "
                        f"[retriever.index] ef to at least k."
                    )
                labels, distances = self._index.knn_query(
                    matrix, k=take, num_threads=self.params.threads
                )
                ids[:, :take] = labels
                scores[:, :take] = 1.0 - distances
        return scores, ids

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        wanted = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if not len(wanted):
            return np.zeros((0, self.dim), np.float32)
        with self._lock.reading():
            try:
                vectors = self._index.get_items(wanted, return_type="numpy")
            except RuntimeError:
                raise KeyError(f"ids not in the index among {wanted[:20].tolist()}") from None
        return np.asarray(vectors, dtype=np.float32).reshape(len(wanted), self.dim)

    def memory_bytes(self) -> int:
        with self._lock.reading():
            return int(self._index.index_file_size())

    def save(self, directory: Path) -> None:
        meta = {
            "type": self.type_name,
            "params": self.params.model_dump(mode="json"),
            "dim": self.dim,
            "metric": self.metric,
            "ntotal": self.ntotal,
        }
        with self._lock.reading(), atomic.directory(Path(directory), SAVED_INDEX) as temporary:
            saved = temporary / INDEX_FILE
            self._index.save_index(str(saved))
            expected = int(self._index.index_file_size())
            if saved.stat().st_size != expected:  # hnswlib does not report a failed write
                raise OSError(
                    errno.ENOSPC,
                    f"hnswlib wrote {saved.stat().st_size} of {expected} bytes",
                    str(saved),
                )
            write_meta(temporary, meta)

    @classmethod
    def load(cls, directory: Path) -> HnswIndex:
        import hnswlib

        directory = Path(directory)
        atomic.recover_directory(directory)
        meta = read_meta(directory, cls.type_name, (INDEX_FILE,))
        count, dim = int(meta["ntotal"]), int(meta["dim"])
        expected = cls.estimate(count, dim, cls.Params.model_validate(meta["params"]))
        size = (directory / INDEX_FILE).stat().st_size
        if count and size < 0.5 * expected:
            raise IndexFileError(
                f"{directory / INDEX_FILE} is truncated ({size} bytes for {count} vectors). "
                f"Build the index again."
            )
        index = hnswlib.Index(space="ip", dim=dim)
        try:
            index.load_index(str(directory / INDEX_FILE), max_elements=max(count, 1))
        except RuntimeError as error:
            raise IndexFileError(
                f"{directory / INDEX_FILE} is corrupt ({error}). Build the index again."
            ) from None
        if index.get_current_count() != count:
            raise IndexFileError(
                f"{directory / INDEX_FILE} holds {index.get_current_count()} vectors, its "
                f"metadata {count}. Build the index again."
            )
        params = cls.Params.model_validate(meta["params"])
        index.set_ef(params.ef)
        return cls(dim, params, index)
