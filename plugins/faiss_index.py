"""Index plugins backed by faiss, all by inner product.

- ``faiss-exact``: ``IndexFlatIP``, exact search (DPR's index).
- ``faiss-compressed``: IVF with product quantization. ``factory = "auto"`` (the default) sizes
  the lists, sub-quantizers and code bits to the vectors built (:func:`auto_factory`); an explicit
  factory (wiki_dpr's "compressed" file is ``IVF4096_HNSW128,PQ128``) is built as written.
- ``faiss-hnsw-sq8``: ``HNSW128,SQ8``, the file the reference calls "exact" for wiki_dpr.

faiss numbers vectors in insertion order; the passage ids live beside the index in ``ids.npy``,
so search maps faiss' positions to ids and ``reconstruct`` maps ids back to positions.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
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
AUTO = "auto"
LISTS_PER_ROOT = 4  # auto: about 4·sqrt(n) inverted lists (faiss' guideline: 4 to 16·sqrt(n))
DIMS_PER_SUBQUANTIZER = 4  # auto: PQ sub-vectors of at least 4 dimensions
MAX_PQ_BITS = 8
POINTS_PER_THREAD = 20_000  # training threads: one per this many sample vectors, at least one


def faiss_reason(error: RuntimeError) -> str:
    """The human part of a faiss exception ("Error in <C++ signature> at <file>: <reason>")."""
    text = " ".join(str(error).split())
    for marker in ("failed: ", "Error: "):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
            break
    return text.rstrip(".") + "."


@contextlib.contextmanager
def collapsed_stderr(what: str) -> Iterator[None]:
    """Capture what is printed to the process's stderr meanwhile (file descriptor 2, where
    faiss' C++ code writes its warnings, once per sub-quantizer), then log each distinct line
    once with how many times it came."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines()
    for line, count in Counter(line.strip() for line in lines if line.strip()).items():
        times = f" ({count} times)" if count > 1 else ""
        log.warning("%s: faiss printed%s: %s", what, times, line)


@contextlib.contextmanager
def training_threads(points: int) -> Iterator[None]:
    """Let faiss train on one thread per 20,000 sample vectors (at most its usual count): on
    this project's 2-core machine, with other work running, k-means on 4,857 points ran 10x
    slower on two threads than on one (the threads waiting on each other), and equally fast on
    20,000."""
    import faiss

    usual = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, min(usual, points // POINTS_PER_THREAD)))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(usual)


class FaissIndex(ABC):
    """Shared behaviour of the faiss indexes: ids, locking, search, save/load.

    Subclasses set ``type_name`` and ``Params`` and define ``_factory`` (the faiss factory string
    of their parameters), ``_tune`` and ``estimate``; ``for_data`` sizes parameters to the data.
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
        return cls(dim, params, cls._build(dim, cls._factory(params, dim)))

    @classmethod
    def for_data(cls, n: int, dim: int, params: Any) -> Any:
        """``params`` as built for ``n`` vectors of ``dim``: the same, unless a subclass chooses
        defaults from the data (a knowledge base names, builds and records the index by them)."""
        return params

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
    def _factory(cls, params: Any, dim: int) -> str:
        """The faiss factory string of ``params`` for vectors of ``dim``."""

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
        """The factory string the index is built with."""
        return self._factory(self.params, self.dim)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def train(self, sample: np.ndarray) -> None:
        """Train on ``sample``; parameters not yet sized to data (an index created without a
        knowledge base) are sized to the sample first. Logged when it starts and ends."""
        matrix = as_matrix(sample, self.dim, "training vectors")
        with self._lock.writing():
            if self._index.is_trained:
                return
            sized = self.for_data(len(matrix), self.dim, self.params)
            if sized != self.params:
                self.params = sized
                self._index = self._build(self.dim, self.factory)
                self._tune(sized)
            self._train(matrix)
            self._make_direct_map()

    def _train(self, matrix: np.ndarray) -> None:
        import faiss

        what = f'{self.type_name} "{self.factory}"'
        polysemous = getattr(faiss.downcast_index(self._index), "do_polysemous_training", False)
        log.info(
            "%s: training on %s vectors of dim %d%s",
            what,
            f"{len(matrix):,}",
            self.dim,
            " (with polysemous training, which ragloom's searches do not use and which "
            'can take minutes: "np" after the PQ term skips it)'
            if polysemous
            else "",
        )
        started = time.perf_counter()
        try:
            with (
                collapsed_stderr(f"{what}, training on {len(matrix):,} vectors"),
                training_threads(len(matrix)),
            ):
                self._index.train(matrix)
        except RuntimeError as error:
            raise IndexBuildError(
                f"{what}: training on {len(matrix)} vectors failed: {faiss_reason(error)} Use "
                f'more vectors, a smaller factory (fewer lists or PQ bits), or factory = "auto".'
            ) from None
        log.info("%s: trained in %.1f s", what, time.perf_counter() - started)

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
            "factory": self.factory,
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
        if meta.get("factory", loaded.factory) != loaded.factory:
            raise IndexFileError(
                f'{directory} holds a faiss "{meta["factory"]}" index, but its parameters say '
                f'"{loaded.factory}": an earlier ragloom shrank the lists for a small training '
                f"sample and kept the name it was asked for. Build it again: `ragloom index "
                f"build KB --type {cls.type_name}` with the same --param values replaces it."
            )
        return loaded


class FaissExactIndex(FaissIndex):
    """Exact inner-product search (``IndexFlatIP``), the index DPR used: recall 1 by definition."""

    type_name = "faiss-exact"

    class Params(BaseModel):
        """faiss-exact takes no parameters."""

        model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def _factory(cls, params: Any, dim: int) -> str:
        return "Flat"

    def _tune(self, params: Any) -> None:
        """Exact search has no search-time parameters."""

    @classmethod
    def estimate(cls, n: int, dim: int, params: Any) -> int:
        return n * (dim * 4 + 8) + 256


_IVF = re.compile(r"^IVF(\d+)((?:_HNSW\d+)?)(,.*)$")


def auto_factory(n: int, dim: int, n_train: int) -> str:
    """The IVF-PQ factory ``factory = "auto"`` builds for ``n`` vectors of ``dim`` trained on
    ``n_train`` of them: about 4·sqrt(n) lists, but at least 39 training vectors per list (faiss'
    minimum); PQ sub-vectors of 4 dimensions or more (``m`` the largest divisor of ``dim`` up to
    dim/4); 8 bits per code, fewer when the sample has under 39 vectors per PQ centroid; no
    polysemous training (``np``: it reorders codes for Hamming-filtered search, which ragloom does
    not use, and took minutes on a thousand vectors)."""
    per_list = max(1, n_train // MIN_POINTS_PER_CENTROID)
    nlist = max(1, min(round(LISTS_PER_ROOT * math.sqrt(n)), per_list))
    widest = max(1, dim // DIMS_PER_SUBQUANTIZER)
    m = max(divisor for divisor in range(1, widest + 1) if dim % divisor == 0)
    bits = max(1, min(MAX_PQ_BITS, int(math.log2(per_list))))
    return f"IVF{nlist},PQ{m}x{bits}np"


class FaissCompressedIndex(FaissIndex):
    """IVF + product quantization: a few dozen bytes per vector, approximate search."""

    type_name = "faiss-compressed"
    search_params = frozenset({"nprobe"})

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        factory: str = Field(
            default=AUTO,
            description='"auto" (lists, PQ sub-quantizers and bits sized to the vectors built), '
            "or a faiss factory string IVF<nlist>[_HNSW<M>],PQ<m>[x<bits>] (or SQ8, Flat), "
            "built as written",
        )
        nprobe: int = Field(default=64, ge=1, description="inverted lists visited per query")
        train_size: int = Field(
            default=262_144, ge=1, description="vectors sampled (seeded) to train the quantizers"
        )
        seed: int = Field(default=0, description="seed of the training sample")

    @classmethod
    def for_data(cls, n: int, dim: int, params: Any) -> Any:
        """``factory = "auto"`` replaced by :func:`auto_factory` for ``n`` vectors of ``dim``
        (trained on ``min(n, train_size)`` of them); an explicit factory stays."""
        if params.factory != AUTO:
            return params
        factory = auto_factory(n, dim, min(n, params.train_size))
        return params.model_copy(update={"factory": factory})

    @classmethod
    def _factory(cls, params: Any, dim: int) -> str:
        """The factory of ``params``; before "auto" is sized to data, sized to ``train_size``
        vectors (an index created without a knowledge base is sized again by ``train``)."""
        factory: str = cls.for_data(params.train_size, dim, params).factory
        if _IVF.match(factory) is None:
            raise IndexBuildError(
                f'[retriever.index] factory = "{factory}": faiss-compressed needs "auto" or an '
                f'IVF factory such as "IVF4096_HNSW128,PQ128" or "IVF256,PQ64x4".'
            )
        return factory

    def _tune(self, params: Any) -> None:
        import faiss

        faiss.extract_index_ivf(self._index).nprobe = params.nprobe

    @classmethod
    def estimate(cls, n: int, dim: int, params: Any) -> int:
        factory = cls._factory(cls.for_data(n, dim, params), dim)
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
    def _factory(cls, params: Any, dim: int) -> str:
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
