"""Sharded search on a local Ray cluster against one in-process index, side by side.

A knowledge base of seeded random unit vectors (default 1M of dim 768, 3 GB) is searched with
``faiss-exact``: by one index in this process, and by the ``ray-sharded`` retriever's search with
1, 2 and 4 shards (one actor each). Printed per configuration: recall@10 against the in-process
exact search, queries per second at batch 1 and batch 64 (best of three rounds), and the fan-out
cost: the sharded time per batch minus the slowest shard's own search time for the same batch.

    python benchmarks/sharded.py [--vectors 1000000] [--shards 1,2,4] [--out DIR]

On one machine shards share its cores, so sharding cannot add speed here; what the table measures
is what the fan-out and merge cost, which docs/scale.md adds to the latency model of a cluster.
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


def best_seconds(search: object, queries: np.ndarray, batch: int, rounds: int = 3) -> float:
    """Seconds per query, the best of ``rounds`` passes over ``queries`` in batches."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for start in range(0, len(queries), batch):
            search.search(queries[start : start + batch], K)  # type: ignore[attr-defined]
        best = min(best, (time.perf_counter() - started) / len(queries))
    return best


def shard_seconds(sharded: ShardedSearch, queries: np.ndarray, batch: int) -> float:
    """The slowest shard's own search time per query (inside its actor, no fan-out)."""
    import ray

    def timed(server: object, block: np.ndarray) -> float:
        started = time.perf_counter()
        server.search(block, K)  # type: ignore[attr-defined]
        return time.perf_counter() - started

    per_shard = []
    for actor in sharded.actors:
        total = 0.0
        for start in range(0, len(queries), batch):
            block = queries[start : start + batch]
            total += ray.get(actor.__ray_call__.remote(timed, block))
        per_shard.append(total / len(queries))
    return max(per_shard)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--shards", default="1,2,4")
    parser.add_argument("--queries", type=int, default=256, help="queries at batch 64")
    parser.add_argument("--out", help="where to keep the KB (default: a temporary directory)")
    args = parser.parse_args()

    import ray

    ray.init(include_dashboard=False)
    with tempfile.TemporaryDirectory(prefix="ragloom-sharded-") as temporary:
        root = Path(args.out or temporary)
        kb_dir = root / f"random-{args.vectors}"
        started = time.perf_counter()
        kb = (
            KnowledgeBase.open(kb_dir)
            if kb_dir.exists()
            else random_knowledge_base(kb_dir, args.vectors, args.dim)
        )
        print(f"KB: {len(kb)} vectors of dim {kb.dim} ({time.perf_counter() - started:.0f} s)")
        declared = Declared("faiss-exact", FaissExactIndex, FaissExactIndex.Params())
        queries = unit_vectors(args.queries, kb.dim, seed=777)
        single = kb.load_index(declared)
        _, truth = single.search(queries, K)
        rows = [["search", "recall@10", "q/s @1", "q/s @64", "fan-out ms @1", "fan-out ms @64"]]
        rows.append(
            [
                "one index, in process",
                "1.000",
                f"{1 / best_seconds(single, queries[:32], 1):.1f}",
                f"{1 / best_seconds(single, queries, 64):.1f}",
                "-",
                "-",
            ]
        )
        del single
        for count in [int(n) for n in args.shards.split(",")]:
            params = RayShardedRetriever.Params(
                kb=str(kb_dir), shards=count, actor_cpus=2 / count
            )
            sharded = ShardedSearch.start(kb, declared, params)
            _, found = sharded.search(queries, K)
            recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)])
            one = best_seconds(sharded, queries[:32], 1)
            many = best_seconds(sharded, queries, 64)
            fan_one = one - shard_seconds(sharded, queries[:32], 1)
            fan_many = (many - shard_seconds(sharded, queries, 64)) * 64
            rows.append(
                [
                    f"ray-sharded, {count} shard{'s' if count > 1 else ''}",
                    f"{recall:.3f}",
                    f"{1 / one:.1f}",
                    f"{1 / many:.1f}",
                    f"{fan_one * 1000:.1f}",
                    f"{fan_many * 1000:.1f}",
                ]
            )
            sharded.close()
        print("\n".join(table_lines(rows)))
    ray.shutdown()


if __name__ == "__main__":
    main()
