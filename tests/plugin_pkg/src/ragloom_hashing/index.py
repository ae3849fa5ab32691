"""A brute-force inner-product index held in numpy arrays."""

import json
import threading
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from ragloom import atomic
from ragloom.artifacts import SAVED_INDEX


class NumpyFlatIndex:
    metric = "ip"
    search_params = frozenset()

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def __init__(self, dim, vectors=None, ids=None):
        self.dim = dim
        self._vectors = np.zeros((0, dim), np.float32) if vectors is None else vectors
        self._ids = np.zeros(0, np.int64) if ids is None else ids
        self._lock = threading.Lock()

    @classmethod
    def create(cls, dim, params):
        return cls(dim)

    @classmethod
    def estimate(cls, n, dim, params):
        return n * (dim * 4 + 8)

    def train(self, sample):
        """Brute force learns nothing."""

    def tune(self, params):
        """Brute force has no search-time parameters."""

    @property
    def ntotal(self):
        return len(self._ids)

    def _matrix(self, array, what):
        matrix = np.ascontiguousarray(array, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise ValueError(f"{what} must have shape [N, {self.dim}], got {list(matrix.shape)}")
        return matrix

    def add(self, vectors, ids):
        matrix = self._matrix(vectors, "vectors")
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape != (len(matrix),):
            raise ValueError(f"ids must have shape [{len(matrix)}], got {list(ids.shape)}")
        with self._lock:
            self._vectors = np.concatenate([self._vectors, matrix])
            self._ids = np.concatenate([self._ids, ids])

    def search(self, queries, k):
        queries = self._matrix(queries, "queries")
        with self._lock:
            vectors, ids = self._vectors, self._ids
        scores = np.full((len(queries), k), -np.inf, np.float32)
        found = np.full((len(queries), k), -1, np.int64)
        take = min(k, len(ids))
        if take:
            products = queries @ vectors.T
            order = np.argsort(-products, axis=1, kind="stable")[:, :take]
            scores[:, :take] = np.take_along_axis(products, order, axis=1)
            found[:, :take] = ids[order]
        return scores, found

    def reconstruct(self, ids):
        rows = {int(i): row for row, i in enumerate(self._ids)}
        missing = [int(i) for i in np.asarray(ids).reshape(-1) if int(i) not in rows]
        if missing:
            raise KeyError(f"ids not in the index: {missing[:20]}")
        return self._vectors[[rows[int(i)] for i in np.asarray(ids).reshape(-1)]]

    def memory_bytes(self):
        return self._vectors.nbytes + self._ids.nbytes

    def save(self, directory):
        with atomic.directory(Path(directory), SAVED_INDEX) as temporary:
            np.save(temporary / "vectors.npy", self._vectors)
            np.save(temporary / "ids.npy", self._ids)
            (temporary / "index.json").write_text(json.dumps({"dim": self.dim}))

    @classmethod
    def load(cls, directory):
        directory = Path(directory)
        meta = json.loads((directory / "index.json").read_text())
        vectors = np.load(directory / "vectors.npy", allow_pickle=False)
        ids = np.load(directory / "ids.npy", allow_pickle=False)
        return cls(meta["dim"], vectors, ids)
