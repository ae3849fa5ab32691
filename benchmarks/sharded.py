"""Sharded search on a local Ray cluster against one in-process index, side by side.

Two knowledge bases of seeded random unit vectors of dim 768 are searched with ``faiss-exact``,
by one index in this process and by the ``ray-sharded`` retriever's search with 1, 2 and 4 shards
(one actor each, the machine's two CPUs split between them):

- 10k vectors, where a search costs almost nothing: the fan-out overhead, the milliseconds a call
  takes over the in-process search (sending the batch, the actors' calls, the merge);
- 1M vectors (3 GB): recall@10 against the in-process search, and queries per second at batch 1
  and batch 64 (best of three rounds).

    python benchmarks/sharded.py [--vectors 1000000] [--shards 1,2,4] [--out DIR]

On one machine the shards share its cores: sharding spreads one query's work over them, and costs
the overhead; over machines it also spreads memory (docs/scale.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ragloom.commands.common import table_lines
from ragloom.context import Declared
from ragloom.kb import KnowledgeBase
from ragloom.plugins.faiss_index import FaissExactIndex
from ragloom.plugins.ray_retriever import RayShardedRetriever, ShardedSearch
from ragloom.testing import unit_vectors
from ragloom.testing.random_kb import random_knowledge_base

K = 10
CPUS = 2
DECLARED = Declared("faiss-exact", FaissExactIndex, FaissExactIndex.Params())


def best_seconds(search: object, queries: np.ndarray, batch: int, rounds: int = 3) -> float:
    """Seconds per query, the best of ``rounds`` passes over ``queries`` in batches."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for start in range(0, len(queries), batch):
            search.search(queries[start : start + batch], K)  # type: ignore[attr-defined]
        best = min(best, (time.perf_counter() - started) / len(queries))
    return best


def knowledge_base(root: Path, vectors: int, dim: int) -> KnowledgeBase:
    directory = root / f"random-{vectors}-{dim}"
    if directory.exists():
        return KnowledgeBase.open(directory)
    return random_knowledge_base(directory, vectors, dim)


def start_shards(kb: KnowledgeBase, count: int) -> ShardedSearch:
    params = RayShardedRetriever.Params(kb=str(kb.directory), shards=count, actor_cpus=CPUS / count)
    return ShardedSearch.start(kb, DECLARED, params)


def label(count: int) -> str:
    return f"ray-sharded, {count} shard{'s' if count > 1 else ''}"


def overhead(kb: KnowledgeBase, shard_counts: list[int], queries: np.ndarray) -> list[list[str]]:
    """Milliseconds per call, and over the in-process search, at batch 1 and 64."""
    single = kb.load_index(DECLARED)
    base = {batch: best_seconds(single, queries, batch, 5) * batch for batch in (1, 64)}
    rows = [["search", "ms/call @1", "overhead ms @1", "ms/call @64", "overhead ms @64"]]
    rows.append(
        ["one index, in process", f"{base[1] * 1e3:.2f}", "-", f"{base[64] * 1e3:.2f}", "-"]
    )
    for count in shard_counts:
        sharded = start_shards(kb, count)
        row = [label(count)]
        for batch in (1, 64):
            call = best_seconds(sharded, queries, batch, 5) * batch
            row += [f"{call * 1e3:.2f}", f"{(call - base[batch]) * 1e3:.2f}"]
        rows.append(row)
        sharded.close()
    return rows


def throughput(kb: KnowledgeBase, shard_counts: list[int], queries: np.ndarray) -> list[list[str]]:
    """Recall@10 and queries per second: one index, then each shard count."""
    single = kb.load_index(DECLARED)
    _, truth = single.search(queries, K)
    rows = [["search", "recall@10", "q/s @1", "q/s @64"]]
    one, many = best_seconds(single, queries[:32], 1), best_seconds(single, queries, 64)
    rows.append(["one index, in process", "1.000", f"{1 / one:.1f}", f"{1 / many:.1f}"])
    del single
    for count in shard_counts:
        sharded = start_shards(kb, count)
        _, found = sharded.search(queries, K)
        recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)])
        one, many = best_seconds(sharded, queries[:32], 1), best_seconds(sharded, queries, 64)
        rows.append([label(count), f"{recall:.3f}", f"{1 / one:.1f}", f"{1 / many:.1f}"])
        sharded.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--shards", default="1,2,4")
    parser.add_argument("--queries", type=int, default=256, help="queries at batch 64")
    parser.add_argument("--out", help="where to keep the KBs (default: a temporary directory)")
    args = parser.parse_args()

    import ray

    ray.init(include_dashboard=False, num_cpus=CPUS)
    shard_counts = [int(n) for n in args.shards.split(",")]
    queries = unit_vectors(args.queries, args.dim, seed=777)
    with tempfile.TemporaryDirectory(prefix="ragloom-sharded-") as temporary:
        root = Path(args.out or temporary)
        small = knowledge_base(root, 10_000, args.dim)
        print(f"fan-out overhead, {len(small):,} vectors:")
        print("\n".join(table_lines(overhead(small, shard_counts, queries))))
        large = knowledge_base(root, args.vectors, args.dim)
        print(f"\nthroughput, {len(large):,} vectors:")
        print("\n".join(table_lines(throughput(large, shard_counts, queries))))
    ray.shutdown()


if __name__ == "__main__":
    main()
