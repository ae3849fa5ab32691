"""Index plugins backed by faiss (inner product, ids mapped to passage rows)."""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from ragloom import atomic
from ragloom.errors import RagloomError

INDEX_FILE = "index.faiss"
META_FILE = "index.json"


class IndexFileError(RagloomError):
    """An index directory that is missing, truncated, corrupt or of another type."""


def as_matrix(vectors: Any, dim: int, what: str) -> np.ndarray:
    """``vectors`` as a C-contiguous ``float32 [N, dim]`` array, or a ValueError saying why not."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{what} must have shape [N, {dim}], got {list(array.shape)}")
    return array


class FaissIndex(ABC):
    """Shared behaviour of the faiss indexes: ids, search, save/load, locking.

    Subclasses set ``type_name`` and ``Params`` and build the faiss structure in ``_make``.
    Searches may run from many threads; ``add`` takes the lock alone.
    """

    type_name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    metric = "ip"

    def __init__(self, dim: int, params: BaseModel, faiss_index: Any) -> None:
        self.dim = dim
        self.params = params
        self._index = faiss_index
        self._lock = threading.RLock()

    @classmethod
    def create(cls, dim: int, params: BaseModel) -> FaissIndex:
        import faiss

        return cls(dim, params, faiss.IndexIDMap2(cls._make(dim, params)))

    @classmethod
    @abstractmethod
    def _make(cls, dim: int, params: BaseModel) -> Any:
        """The faiss index (without id mapping) for ``dim`` and ``params``."""

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        matrix = as_matrix(vectors, self.dim, "vectors")
        id_array = np.ascontiguousarray(ids, dtype=np.int64)
        if id_array.shape != (matrix.shape[0],):
            raise ValueError(f"ids must have shape [{matrix.shape[0]}], got {list(id_array.shape)}")
        with self._lock:
            self._index.add_with_ids(matrix, id_array)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        matrix = as_matrix(queries, self.dim, "queries")
        with self._lock:
            scores, ids = self._index.search(matrix, k)
        scores = scores.astype(np.float32, copy=False)
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64, copy=False)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        id_array = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        with self._lock:
            try:
                vectors = self._index.reconstruct_batch(id_array)
            except RuntimeError:
                raise KeyError(f"ids not in the index among {id_array.tolist()[:20]}") from None
        return np.asarray(vectors, dtype=np.float32).reshape(len(id_array), self.dim)

    def memory_bytes(self) -> int:
        import faiss

        with self._lock:
            return int(faiss.serialize_index(self._index).nbytes)

    def save(self, directory: Path) -> None:
        import faiss

        meta = {
            "type": self.type_name,
            "params": self.params.model_dump(mode="json"),
            "dim": self.dim,
            "metric": self.metric,
            "ntotal": self.ntotal,
        }
        with self._lock, atomic.directory(Path(directory)) as temporary:
            faiss.write_index(self._index, str(temporary / INDEX_FILE))
            (temporary / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> FaissIndex:
        import faiss

        directory = Path(directory)
        atomic.recover_directory(directory)
        meta_path, index_path = directory / META_FILE, directory / INDEX_FILE
        if not meta_path.is_file() or not index_path.is_file():
            raise IndexFileError(
                f"{directory} is not a saved {cls.type_name} index: it needs {META_FILE} and "
                f"{INDEX_FILE}. Build the index again."
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise IndexFileError(
                f"{meta_path} is corrupt ({error}). Build the index again."
            ) from None
        if meta.get("type") != cls.type_name:
            raise IndexFileError(
                f'{directory} holds a "{meta.get("type")}" index, not "{cls.type_name}".'
            )
        try:
            faiss_index = faiss.read_index(str(index_path))
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
            raise IndexFileError(
                f"{index_path} is truncated or corrupt ({first_line}). Build the index again."
            ) from None
        if faiss_index.ntotal != meta.get("ntotal") or faiss_index.d != meta.get("dim"):
            raise IndexFileError(
                f"{index_path} does not match {META_FILE} (ntotal {faiss_index.ntotal} vs "
                f"{meta.get('ntotal')}, dim {faiss_index.d} vs {meta.get('dim')}). "
                f"Build the index again."
            )
        return cls(int(meta["dim"]), cls.Params.model_validate(meta["params"]), faiss_index)


class FaissExactIndex(FaissIndex):
    """Exact inner-product search (``IndexFlatIP``), the index DPR used: recall 1 by definition."""

    type_name = "faiss-exact"

    class Params(BaseModel):
        """faiss-exact takes no parameters."""

        model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def _make(cls, dim: int, params: BaseModel) -> Any:
        import faiss

        return faiss.IndexFlatIP(dim)
