"""Index plugins backed by faiss, all by inner product.

- ``faiss-exact``: ``IndexFlatIP``, exact search (DPR's index).
- ``faiss-compressed``: IVF with product quantization, default ``IVF4096_HNSW128,PQ128`` as the
  wiki_dpr "compressed" file; ``nlist`` shrinks (with a logged notice) when the training sample is
  too small for it.
- ``faiss-hnsw-sq8``: ``HNSW128,SQ8``, the file the reference calls "exact" for wiki_dpr.

faiss numbers vectors in insertion order; the passage ids live beside the index in ``ids.npy``,
so search maps faiss' positions to ids and ``reconstruct`` maps ids back to positions.
"""

from __future__ import annotations

import contextlib
import logging
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ragloom import atomic
from ragloom.artifacts import SAVED_INDEX
from ragloom.errors import IndexBuildError, IndexFileError
from ragloom.locks import ReadWriteLock

from .index_files import (
    IDS_FILE,
    as_ids,
    as_matrix,
    check_k,
    load_ids,
    lookup_rows,
    read_meta,
    write_meta,
)

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
MIN_POINTS_PER_CENTROID = 39  # faiss warns below this many training points per centroid


def faiss_reason(error: RuntimeError) -> str:
    """The human part of a faiss exception ("Error in <C++ signature> at <file>: <reason>")."""
    text = " ".join(str(error).split())
    for marker in ("failed: ", "Error: "):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
            break
    return text.rstrip(".") + "."


class FaissIndex(ABC):
    """Shared behaviour of the faiss indexes: ids, locking, search, save/load.

    Subclasses set ``type_name`` and ``Params`` and define ``_factory`` (the faiss factory string
    for a training sample of ``n`` vectors), ``_tune`` and ``estimate``.
    """

    type_name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    search_params: ClassVar[frozenset[str]] = frozenset()
    metric = "ip"

    def __init__(self, dim: int, params: Any, index: Any, ids: np.ndarray | None = None) -> None:
        self.dim = dim
        self.params = params
        self._index = index
        self._ids = np.zeros(0, np.int64) if ids is None else ids
        self._order: np.ndarray | None = None
        self._lock = ReadWriteLock()
        self.tune(params)

    @classmethod
    def create(cls, dim: int, params: Any) -> FaissIndex:
        return cls(dim, params, cls._build(dim, cls._factory(params, None)))

    @staticmethod
    def _build(dim: int, factory: str) -> Any:
        import faiss

        try:
            return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            raise IndexBuildError(
                f'faiss cannot build "{factory}" for dimension {dim}: {faiss_reason(error)}'
            ) from None

    @classmethod
    @abstractmethod
    def _factory(cls, params: Any, n_train: int | None) -> str:
        """The faiss factory string; ``n_train`` is the training sample size once known."""

    @classmethod
    @abstractmethod
    def estimate(cls, n: int, dim: int, params: Any) -> int:
        """Bytes ``n`` vectors of ``dim`` will take in this index."""

    @abstractmethod
    def _tune(self, params: Any) -> None:
        """Apply the search-time parameters of ``params`` to ``self._index``."""

    def tune(self, params: Any) -> None:
        with self._lock.writing():
            self._tune(params)
            self.params = self.params.model_copy(
                update={key: getattr(params, key) for key in self.search_params}
            )

    @property
    def factory(self) -> str:
        """The factory string the index was built with (after any nlist adjustment)."""
        return self._factory(self.params, None)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def train(self, sample: np.ndarray) -> None:
        matrix = as_matrix(sample, self.dim, "training vectors")
        with self._lock.writing():
            if self._index.is_trained:
                return
            factory = self._factory(self.params, len(matrix))
            if factory != self._factory(self.params, None):
                self._index = self._build(self.dim, factory)
                self._tune(self.params)
            try:
                self._index.train(matrix)
            except RuntimeError as error:
                raise IndexBuildError(
                    f'{self.type_name}: training "{factory}" on {len(matrix)} vectors failed: '
                    f"{faiss_reason(error)} Use more vectors or a smaller factory (fewer PQ "
                    f"bits or lists)."
                ) from None
            self._trained_factory = factory
            self._make_direct_map()

    def _make_direct_map(self) -> None:
        import faiss

        with contextlib.suppress(RuntimeError):  # not IVF: positions are direct already
            faiss.extract_index_ivf(self._index).make_direct_map()

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        matrix = as_matrix(vectors, self.dim, "vectors")
        id_array = as_ids(ids, len(matrix))
        with self._lock.writing():
            if not self._index.is_trained:
                raise IndexBuildError(
                    f"{self.type_name} must be trained before vectors are added: call "
                    f"train(sample) first."
                )
            self._index.add(matrix)
            self._ids = np.concatenate([self._ids, id_array])
            self._order = None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        check_k(k)
        matrix = as_matrix(queries, self.dim, "queries")
        with self._lock.reading():
            if not self.ntotal:
                empty = np.full((len(matrix), k), -1, np.int64)
                return np.full(empty.shape, -np.inf, np.float32), empty
            scores, positions = self._index.search(matrix, k)
            ids = np.where(positions >= 0, self._ids[positions.clip(min=0)], -1)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, ids.astype(np.int64)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        wanted = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        with self._lock.reading():
            if self._order is None:
                self._order = np.argsort(self._ids, kind="stable")
            rows = lookup_rows(self._ids, self._order, wanted)
            if not len(rows):
                return np.zeros((0, self.dim), np.float32)
            vectors = self._index.reconstruct_batch(rows)
        return np.asarray(vectors, dtype=np.float32).reshape(len(rows), self.dim)

    def memory_bytes(self) -> int:
        import faiss

        with self._lock.reading():
            return int(faiss.serialize_index(self._index).nbytes) + self._ids.nbytes

    def save(self, directory: Path) -> None:
        import faiss

        meta = {
            "type": self.type_name,
            "params": self.params.model_dump(mode="json"),
            "factory": getattr(self, "_trained_factory", self.factory),
            "dim": self.dim,
            "metric": self.metric,
            "ntotal": self.ntotal,
        }
        with self._lock.reading(), atomic.directory(Path(directory), SAVED_INDEX) as temporary:
            faiss.write_index(self._index, str(temporary / INDEX_FILE))
            np.save(temporary / IDS_FILE, self._ids)
            write_meta(temporary, meta)

    @classmethod
    def load(cls, directory: Path) -> FaissIndex:
        import faiss

        directory = Path(directory)
        atomic.recover_directory(directory)
        meta = read_meta(directory, cls.type_name, (INDEX_FILE, IDS_FILE))
        try:
            index = faiss.read_index(str(directory / INDEX_FILE))
        except RuntimeError as error:
            raise IndexFileError(
                f"{directory / INDEX_FILE} is truncated or corrupt ({faiss_reason(error)}) "
                f"Build the index again."
            ) from None
        if index.ntotal != meta.get("ntotal") or index.d != meta.get("dim"):
            raise IndexFileError(
                f"{directory / INDEX_FILE} does not match its metadata (ntotal {index.ntotal} vs "
                f"{meta.get('ntotal')}, dim {index.d} vs {meta.get('dim')}). Build the index again."
            )
        ids = load_ids(directory, int(index.ntotal))
        loaded = cls(int(meta["dim"]), cls.Params.model_validate(meta["params"]), index, ids)
        loaded._trained_factory = meta.get("factory", loaded.factory)
        return loaded


class FaissExactIndex(FaissIndex):
    """Exact inner-product search (``IndexFlatIP``), the index DPR used: recall 1 by definition."""

    type_name = "faiss-exact"

    class Params(BaseModel):
        """faiss-exact takes no parameters."""

        model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def _factory(cls, params: Any, n_train: int | None) -> str:
        return "Flat"

    def _tune(self, params: Any) -> None:
        """Exact search has no search-time parameters."""

    @classmethod
    def estimate(cls, n: int, dim: int, params: Any) -> int:
        return n * (dim * 4 + 8) + 256


_IVF = re.compile(r"^IVF(\d+)((?:_HNSW\d+)?)(,.*)$")


class FaissCompressedIndex(FaissIndex):
    """IVF + product quantization: a few dozen bytes per vector, approximate search."""

    type_name = "faiss-compressed"
    search_params = frozenset({"nprobe"})

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        factory: str = Field(
            default="IVF4096_HNSW128,PQ128",
            description="faiss factory string: IVF<nlist>[_HNSW<M>],PQ<m>[x<bits>] (or SQ8, Flat)",
        )
        nprobe: int = Field(default=64, ge=1, description="inverted lists visited per query")
        train_size: int = Field(
            default=262_144, ge=1, description="vectors sampled (seeded) to train the quantizers"
        )
        seed: int = Field(default=0, description="seed of the training sample")

    @classmethod
    def _factory(cls, params: Any, n_train: int | None) -> str:
        match = _IVF.match(params.factory)
        if match is None:
            raise IndexBuildError(
                f'[retriever.index] factory = "{params.factory}": faiss-compressed needs an IVF '
                f'factory such as "IVF4096_HNSW128,PQ128" or "IVF256,PQ64x4".'
            )
        nlist = int(match.group(1))
        if n_train is not None and n_train < MIN_POINTS_PER_CENTROID * nlist:
            nlist = max(1, n_train // MIN_POINTS_PER_CENTROID)
        return f"IVF{nlist}{match.group(2)}{match.group(3)}"

    def train(self, sample: np.ndarray) -> None:
        wanted = self._factory(self.params, None)
        super().train(sample)
        if self._trained_factory != wanted:
            log.info(
                "faiss-compressed: %d training vectors are too few for %s; built %s instead "
                "(faiss wants %d per list)",
                len(sample),
                wanted,
                self._trained_factory,
                MIN_POINTS_PER_CENTROID,
            )

    def _tune(self, params: Any) -> None:
        import faiss

        faiss.extract_index_ivf(self._index).nprobe = params.nprobe

    @classmethod
    def estimate(cls, n: int, dim: int, params: Any) -> int:
        factory = cls._factory(params, min(n, params.train_size))
        match = _IVF.match(factory)
        assert match is not None  # _factory checked the grammar
        nlist = int(match.group(1))
        import faiss

        code_size = faiss.extract_index_ivf(cls._build(dim, factory)).code_size
        quantizer = nlist * dim * 4
        if match.group(2):
            graph_m = int(match.group(2)[len("_HNSW") :])
            quantizer += nlist * (2 * graph_m * 4 + 16)
        codebooks = _codebook_bytes(match.group(3)[1:], dim)
        per_vector = code_size + 8 + 8 + 8  # code, list id, direct map, passage id
        return n * per_vector + quantizer + codebooks + nlist * 32 + 1024


def _codebook_bytes(payload: str, dim: int) -> int:
    """Trained parameters of the IVF payload (PQ centroids, SQ ranges)."""
    pq = re.match(r"^PQ(\d+)(?:x(\d+))?", payload)
    if pq:
        bits = int(pq.group(2) or 8)
        return (2**bits) * dim * 4
    if payload.startswith("SQ"):
        return 2 * dim * 4
    return 0


class FaissHnswIndex(FaissIndex):
    """faiss HNSW graph over full float32 vectors (the index transformers' KB recipe builds)."""

    type_name = "faiss-hnsw"
    search_params = frozenset({"ef_search"})
    bytes_per_dimension = 4
    storage = ""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        M: int = Field(default=128, ge=2, description="graph neighbours per vector")
        ef_construction: int = Field(default=200, ge=1, description="build-time beam width")
        ef_search: int = Field(default=128, ge=1, description="search-time beam width")

    @classmethod
    def _factory(cls, params: Any, n_train: int | None) -> str:
        return f"HNSW{params.M}{cls.storage}"

    def _tune(self, params: Any) -> None:
        import faiss

        hnsw = faiss.downcast_index(self._index).hnsw
        hnsw.efConstruction = self.params.ef_construction
        hnsw.efSearch = params.ef_search

    @classmethod
    def estimate(cls, n: int, dim: int, params: Any) -> int:
        # level 0 holds 2M links, upper levels M for ~1/(M-1) of the vectors
        links = 4 * (2 * params.M + params.M / max(params.M - 1, 1))
        per_vector = dim * cls.bytes_per_dimension + links + 4 + 8 + 8  # +level, offset, id
        return int(n * per_vector) + 2 * dim * 4 + 1024


class FaissHnswSq8Index(FaissHnswIndex):
    """HNSW graph over 8-bit scalar-quantized vectors (the wiki_dpr "exact" file's format)."""

    type_name = "faiss-hnsw-sq8"
    bytes_per_dimension = 1
    storage = ",SQ8"
