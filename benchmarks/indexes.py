"""Index plugins against the raw library call on the same index, side by side in one run.

For two seeded data sets (100k uniform unit vectors of dim 768, and 200k clustered vectors of
dim 384, about WordNet's size), each index type is built once through ragloom; then searches run
alternately through the plugin (`index.search`) and through the library directly on the same
underlying structure (faiss `search`, hnswlib `knn_query`), best of three rounds each. Printed:
recall@10 against exact search, queries per second at batch 1 and 64 for both, and the plugin's
overhead at batch 64 (the target is under 10%).

    python benchmarks/indexes.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from ragloom.plugins.faiss_index import (
    FaissCompressedIndex,
    FaissExactIndex,
    FaissHnswIndex,
    FaissHnswSq8Index,
)
from ragloom.plugins.hnsw_index import HnswIndex
from ragloom.testing import unit_vectors

K = 10


def clustered(n: int, dim: int, seed: int, clusters: int = 1000) -> np.ndarray:
    """Points around 1000 fixed centres (the same centres for corpus and queries)."""
    rng = np.random.default_rng(seed)
    centres = unit_vectors(clusters, dim, 12345)
    vectors = centres[rng.integers(0, clusters, n)] + 0.35 * unit_vectors(n, dim, seed + 1)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def configurations(dim: int) -> list[tuple[str, type, object]]:
    return [
        ("faiss-exact", FaissExactIndex, FaissExactIndex.Params()),
        (
            "faiss-compressed",
            FaissCompressedIndex,
            FaissCompressedIndex.Params(
                factory=f"IVF1024,PQ{dim // 16}", nprobe=64, train_size=32_768
            ),
        ),
        (
            "faiss-hnsw",
            FaissHnswIndex,
            FaissHnswIndex.Params(M=32, ef_construction=80, ef_search=128),
        ),
        (
            "faiss-hnsw-sq8",
            FaissHnswSq8Index,
            FaissHnswSq8Index.Params(M=32, ef_construction=80, ef_search=128),
        ),
        ("hnsw", HnswIndex, HnswIndex.Params(M=32, ef_construction=80, ef=128)),
    ]


def raw_search(index: object) -> Callable[[np.ndarray], object]:
    """The library's own search on the plugin's underlying structure."""
    inner = index._index  # type: ignore[attr-defined]
    if isinstance(index, HnswIndex):
        return lambda q: inner.knn_query(q, k=K, num_threads=-1)
    return lambda q: inner.search(q, K)


def queries_per_second(
    search: Callable[[np.ndarray], object], queries: np.ndarray, batch: int
) -> float:
    count = 200 if batch == 1 else len(queries)
    started = time.perf_counter()
    for start in range(0, count, batch):
        search(queries[start : start + batch])
    return count / (time.perf_counter() - started)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)]))


def run(name: str, corpus: np.ndarray, queries: np.ndarray) -> None:
    n, dim = corpus.shape
    exact = FaissExactIndex.create(dim, FaissExactIndex.Params())
    exact.add(corpus, np.arange(n))
    truth = exact.search(queries, K)[1]
    print(f"\n## {name}: {n} vectors, dim {dim}, {len(queries)} queries, k={K}\n")
    print(
        "| index | build s | recall@10 | plugin q/s @1 | raw q/s @1 | plugin q/s @64 "
        "| raw q/s @64 | overhead @64 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for type_name, component, params in configurations(dim):
        started = time.perf_counter()
        index = component.create(dim, params)
        rng = np.random.default_rng(0)
        sample = min(n, getattr(params, "train_size", 65_536))
        index.train(corpus[np.sort(rng.choice(n, sample, replace=False))])
        index.add(corpus, np.arange(n))
        build = time.perf_counter() - started
        plugin = lambda q, index=index: index.search(q, K)  # noqa: E731
        raw = raw_search(index)
        best: dict[tuple[str, int], float] = {}
        for _ in range(3):
            for label, search in (("raw", raw), ("plugin", plugin)):
                for batch in (1, 64):
                    qps = queries_per_second(search, queries, batch)
                    best[(label, batch)] = max(best.get((label, batch), 0.0), qps)
        overhead = best[("raw", 64)] / best[("plugin", 64)] - 1
        print(
            f"| {type_name} | {build:.1f} | {recall(index.search(queries, K)[1], truth):.3f} "
            f"| {best[('plugin', 1)]:.0f} | {best[('raw', 1)]:.0f} | {best[('plugin', 64)]:.0f} "
            f"| {best[('raw', 64)]:.0f} | {overhead:+.1%} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10x smaller data, for a smoke run")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    run("uniform-768", unit_vectors(100_000 // scale, 768, 0), unit_vectors(1000, 768, 99))
    run("clustered-384", clustered(200_000 // scale, 384, 10), clustered(1000, 384, 77))


if __name__ == "__main__":
    main()
