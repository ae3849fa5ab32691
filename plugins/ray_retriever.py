"""Retriever ``ray-sharded``: the ``dense`` retriever with its index split over Ray actors.

The knowledge base's rows are cut into ``shards`` contiguous ranges (:mod:`ragloom.kb.shards`).
Each shard is served by one Ray actor holding an index of the ``[retriever.index]`` type over its
rows, loaded from the KB's index cache or built there on first use. A query batch goes to every
shard at once; each returns its top ``k`` with the KB's row ids, and the results are merged by
score (every shard uses the same metric, so scores compare). Passages and doc vectors come from the
KB on the caller's side, as for ``dense``: over the same data an exact index gives the same ids.

An actor that dies is restarted by Ray from its shard on disk and the search is retried, up to
``max_restarts`` times; past that, or with ``max_restarts = 0``, the call fails naming the shard.
Results are never returned from some shards only.

``address`` is read by :func:`ragloom.distributed.connect`. Workers on other machines must see the
knowledge base at the same path (a shared file system).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ragloom.context import BuildContext, Declared
from ragloom.distributed import connect
from ragloom.errors import RagloomError
from ragloom.kb import KnowledgeBase
from ragloom.kb.shards import Shard

from .dense_retriever import DenseRetriever

log = logging.getLogger(__name__)


class ShardError(RagloomError):
    """A shard actor that died for good or did not answer in time."""


class ShardServer:
    """The Ray actor of one shard: its index, loaded or built from the KB on disk."""

    def __init__(
        self, kb: str, declared: Declared, shard: Shard, build: bool, allow_mismatch: bool
    ) -> None:
        knowledge_base = KnowledgeBase.open(Path(kb))
        self.index = knowledge_base.load_index(declared, build, allow_mismatch, shard)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(queries, k)
        return scores, ids

    def ntotal(self) -> int:
        return int(self.index.ntotal)


def merge(results: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of every shard's best ``k``, by score, ties by id; ``-1`` ids last."""
    scores = np.concatenate([scores for scores, _ in results], axis=1)
    ids = np.concatenate([ids for _, ids in results], axis=1)
    missing = ids < 0
    keys = np.where(missing, -np.inf, scores)
    order = np.lexsort((np.where(missing, np.iinfo(np.int64).max, ids), -keys), axis=1)[:, :k]
    return (
        np.take_along_axis(scores, order, axis=1).astype(np.float32),
        np.take_along_axis(ids, order, axis=1),
    )


class ShardedSearch:
    """Fans a search out to the shard actors and merges their answers."""

    def __init__(self, actors: list[Any], shards: list[Shard], timeout: float) -> None:
        self.actors = actors
        self.shards = shards
        self.timeout = timeout
        self.ntotal = sum(len(shard) for shard in shards)

    @classmethod
    def start(cls, kb: KnowledgeBase, declared: Declared, params: Any) -> ShardedSearch:
        """One actor per shard; returns when every shard's index is loaded or built."""
        import ray

        connect(params.address, params.num_cpus)
        needed, available = params.shards * params.actor_cpus, ray.cluster_resources().get("CPU")
        if available is not None and needed > available:
            raise ShardError(
                f"[retriever] ray-sharded: {params.shards} shards x actor_cpus "
                f"{params.actor_cpus} need {needed:g} CPUs and the Ray cluster has {available:g}; "
                f"lower actor_cpus (fractions are fine) or shards, or add machines."
            )
        server = ray.remote(ShardServer).options(
            num_cpus=params.actor_cpus,
            max_restarts=params.max_restarts,
            max_task_retries=params.max_restarts,
        )
        shards = kb.shards(params.shards)
        actors = [
            server.remote(
                str(kb.directory), declared, shard, params.build_index, params.allow_mismatch
            )
            for shard in shards
        ]
        search = cls(actors, shards, params.timeout)
        counts = search._gather([actor.ntotal.remote() for actor in actors], "loading")
        log.info("%d shards ready: %s vectors", len(shards), counts)
        search.ntotal = sum(counts)
        return search

    def _gather(self, references: list[Any], what: str) -> list[Any]:
        """Every shard's answer (they run concurrently), or an error naming the first shard
        that failed."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        deadline = time.monotonic() + self.timeout
        results = []
        for shard, reference in zip(self.shards, references, strict=True):
            try:
                results.append(ray.get(reference, timeout=max(deadline - time.monotonic(), 0)))
            except (RayActorError, RayTaskError, GetTimeoutError) as error:
                raise ShardError(
                    f"[retriever] ray-sharded: {shard} failed while {what} "
                    f"({type(error).__name__}: {str(error).splitlines()[0]}). No partial results "
                    f"are returned; check the Ray logs, raise max_restarts or timeout, or restart."
                ) from error
        return results

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import ray

        batch = ray.put(np.ascontiguousarray(queries, dtype=np.float32))
        results = self._gather(
            [actor.search.remote(batch, k) for actor in self.actors], "searching"
        )
        return merge(results, k)

    def close(self) -> None:
        """Stop the actors (their indexes stay on disk)."""
        import ray

        for actor in self.actors:
            ray.kill(actor)


class RayShardedRetriever(DenseRetriever):
    """The ``ray-sharded`` retriever (see the module docstring)."""

    class Params(DenseRetriever.Params):
        shards: int = Field(default=2, ge=1, description="index shards, one Ray actor each")
        address: str = Field(
            default="local",
            description='"local" (start Ray here), "auto" (this machine\'s cluster) or '
            '"ray://HOST:PORT"',
        )
        num_cpus: int | None = Field(
            default=None, ge=1, description='CPUs of a "local" Ray instance (default: all)'
        )
        actor_cpus: float = Field(default=1.0, gt=0, description="CPUs reserved per shard actor")
        max_restarts: int = Field(
            default=3, ge=0, description="restarts of a dead shard actor before a call fails"
        )
        timeout: float = Field(
            default=600.0, gt=0, description="seconds a search (or loading) may take"
        )

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> RayShardedRetriever:
        declared: Declared = children["index"]
        kb = KnowledgeBase.open(cls._kb_path(params, context))
        return cls(kb, ShardedSearch.start(kb, declared, params), params)
