"""Side-by-side measurement of index types over one knowledge base (``ragloom index compare``)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import atomic
from ..context import Declared
from ..errors import RagloomError
from .knowledge_base import KnowledgeBase
from .manifest import IndexManifest

if TYPE_CHECKING:
    import numpy as np

    from ..protocols import Index


class QueryFileError(RagloomError):
    """A ``--queries`` file that is not a float array of query vectors of the KB's dim."""


@dataclass(frozen=True)
class Measurement:
    """One index type's numbers: recall@k against exact search, speed, size."""

    name: str
    recall: float
    qps_batch1: float
    qps_batch64: float
    build_seconds: float
    bytes_per_vector: float
    memory_bytes: int


def default_queries(kb: KnowledgeBase, count: int = 1000, seed: int = 0) -> np.ndarray:
    """Midpoints of random pairs of stored vectors: in-distribution queries that are not
    themselves stored (a stored vector would trivially find itself)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, len(kb), size=(count, 2))
    first = kb.vectors(pairs[:, 0])
    second = kb.vectors(pairs[:, 1])
    return np.ascontiguousarray((first + second) / 2, dtype=np.float32)


NPY_MAGIC = b"\x93NUMPY"
NPZ_MAGIC = b"PK\x03\x04"
"""How a ``.npy`` file and an ``.npz`` archive (a zip) begin."""


def load_queries(path: Path, dim: int) -> np.ndarray:
    """The ``float32 [n, dim]`` query vectors saved in the ``.npy`` file at ``path``; anything
    else (a pickle, another shape or dim, no rows) raises :class:`QueryFileError`."""
    import numpy as np

    expected = f"Save a float array of shape [n, {dim}] with numpy.save (allow_pickle=False)."
    try:
        with path.open("rb") as file:
            start = file.read(len(NPY_MAGIC))
    except OSError as error:
        raise QueryFileError(f"--queries {path}: cannot be read ({error.strerror}).") from None
    if not start:
        raise QueryFileError(f"--queries {path}: is empty (0 bytes), not a .npy array. {expected}")
    if start != NPY_MAGIC and not start.startswith(NPZ_MAGIC):
        raise QueryFileError(
            f"--queries {path}: is not a .npy array file (it does not start with numpy's "
            f".npy header). {expected}"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        why = "it holds pickled Python objects" if "allow_pickle" in str(error) else str(error)
        raise QueryFileError(
            f"--queries {path}: cannot be read as a numpy .npy array ({why}). {expected}"
        ) from None
    except (OSError, EOFError) as error:
        raise QueryFileError(
            f"--queries {path}: cannot be read as a numpy .npy array (truncated or damaged: "
            f"{error or type(error).__name__}). {expected}"
        ) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        kind = "an .npz archive" if not isinstance(array, np.ndarray) else f"{array.dtype} values"
        raise QueryFileError(f"--queries {path}: holds {kind}, not numbers. {expected}")
    if array.ndim != 2 or array.shape[1] != dim or len(array) == 0:
        raise QueryFileError(
            f"--queries {path}: holds an array of shape {list(array.shape)}, and the knowledge "
            f"base's vectors have dim {dim}. {expected}"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def exact_neighbours(kb: KnowledgeBase, queries: np.ndarray, k: int) -> np.ndarray:
    """The true top-``k`` scores by inner product over the stored embeddings (chunked)."""
    import numpy as np

    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), 0), np.int64)
    chunk = 65_536
    for start in range(0, len(kb), chunk):
        block = np.asarray(kb.embeddings[start : start + chunk], dtype=np.float32)
        scores = queries @ block.T
        ids = np.broadcast_to(np.arange(start, start + len(block)), scores.shape)
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_ids = np.concatenate([best_ids, ids], axis=1)
        keep = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, keep, axis=1)
        best_ids = np.take_along_axis(merged_ids, keep, axis=1)
    return best_scores


def _queries_per_second(index: Index, queries: np.ndarray, k: int, batch: int) -> float:
    count = min(len(queries), 200) if batch == 1 else len(queries)
    index.search(queries[:batch], k)  # warm up
    started = time.perf_counter()
    for start in range(0, count, batch):
        index.search(queries[start : min(start + batch, count)], k)
    return count / (time.perf_counter() - started)


def recall_at_k(
    kb: KnowledgeBase, queries: np.ndarray, found: np.ndarray, truth: np.ndarray
) -> float:
    """Share of the returned ids that belong in the exact top k: an id counts when its exact
    score reaches the k-th best exact score, so ties between equal vectors are not misses."""
    import numpy as np

    scores = np.einsum("qd,qkd->qk", queries, kb.vectors(found))
    hits = (found >= 0) & (scores >= truth[:, -1:] - 1e-5)
    return float(hits.sum() / found.size)


def measure(
    kb: KnowledgeBase,
    declared: Declared,
    queries: np.ndarray,
    truth: np.ndarray,
    k: int,
) -> Measurement:
    """Load (building on first use) one index and measure it; ``truth`` holds the exact
    top-``k`` scores of each query (``exact_neighbours``)."""
    index = kb.load_index(declared)
    manifest = IndexManifest.read(kb.index_path(declared), "ragloom index")
    _, found = index.search(queries, k)
    recall = recall_at_k(kb, queries, found, truth)
    memory = index.memory_bytes()
    return Measurement(
        name=kb.index_path(declared).name,
        recall=recall,
        qps_batch1=_queries_per_second(index, queries, k, 1),
        qps_batch64=_queries_per_second(index, queries, k, 64),
        build_seconds=manifest.build_seconds,
        bytes_per_vector=memory / max(len(kb), 1),
        memory_bytes=memory,
    )


def plot(measurements: list[Measurement], k: int, path: Path) -> None:
    """Recall@k against queries per second (batch 64), one labelled point per index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for m in measurements:
        axes.scatter(m.qps_batch64, m.recall, s=40)
        axes.annotate(m.name, (m.qps_batch64, m.recall), textcoords="offset points", xytext=(5, 5))
    axes.set_xscale("log")
    axes.set_xlabel("queries per second (batch 64)")
    axes.set_ylabel(f"recall@{k} against exact search")
    axes.set_ylim(min([m.recall for m in measurements] + [0.9]) - 0.05, 1.02)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=120)
    plt.close(figure)
    atomic.write_bytes(path, image.getvalue())
