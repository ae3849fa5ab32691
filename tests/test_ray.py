"""The ray-sharded retriever on a local Ray cluster: the same results as one index, restarts of
dead shard actors, and a clear error when a shard is gone for good."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ragloom import Pipeline
from ragloom.kb import KnowledgeBase, build_knowledge_base
from ragloom.kb.documents import Document
from ragloom.kb.shards import Shard
from ragloom.testing.tiny_models import bert_dir, corpus

ray = pytest.importorskip("ray")

SPEC = """schema = 1
[pipeline]
n_docs = 5
[encoder]
type = "hf-mean-pool"
path = "{model}"
[retriever]
type = "{retriever}"
kb = "{kb}"
{extra}
[retriever.index]
type = "{index}"
"""
QUESTIONS = corpus(12, seed=9)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray")
    bert_dir(root / "model")
    texts = corpus(500, seed=4)
    documents = [Document(" ".join(t.split()[:2]), t, str(i)) for i, t in enumerate(texts)]
    encoder = Pipeline.from_spec(spec(root, "dense")).encoder
    build_knowledge_base(documents, encoder, root / "kb", encoder_type="hf-mean-pool")
    return root


def spec(root: Path, retriever: str, index: str = "faiss-exact", **params: object) -> Path:
    extra = "\n".join(f"{key} = {value!r}".replace("'", '"') for key, value in params.items())
    path = root / f"{retriever}-{index}-{abs(hash(extra))}.toml"
    text = SPEC.format(
        model=root / "model", kb=root / "kb", retriever=retriever, index=index, extra=extra
    )
    path.write_text(text)
    return path


def sharded(root: Path, **params: object) -> Pipeline:
    return Pipeline.from_spec(spec(root, "ray-sharded", actor_cpus=0.25, **params))


@pytest.mark.parametrize("shards", [1, 3])
def test_sharded_exact_search_equals_one_index(cluster: None, workspace: Path, shards: int) -> None:
    single = Pipeline.from_spec(spec(workspace, "dense")).retrieve(QUESTIONS, k=7)
    split = sharded(workspace, shards=shards).retrieve(QUESTIONS, k=7)
    assert split.ids.tolist() == single.ids.tolist()
    np.testing.assert_allclose(split.scores.numpy(), single.scores.numpy(), rtol=1e-6)
    assert split.passages == single.passages
    shard_dirs = sorted((workspace / "kb" / "indexes").glob(f"faiss-exact.shards-{shards}/*"))
    assert len(shard_dirs) == shards


def test_approximate_shards_find_most_exact_neighbours(cluster: None, workspace: Path) -> None:
    exact = Pipeline.from_spec(spec(workspace, "dense")).retrieve(QUESTIONS, k=5).ids
    hnsw = Pipeline.from_spec(
        spec(workspace, "ray-sharded", "faiss-hnsw", shards=2, actor_cpus=0.25)
    ).retrieve(QUESTIONS, k=5)
    pairs = zip(exact.tolist(), hnsw.ids.tolist(), strict=True)
    found = np.mean([len(set(a) & set(b)) / 5 for a, b in pairs])
    assert found >= 0.9


def test_a_killed_shard_actor_is_restarted_from_disk(cluster: None, workspace: Path) -> None:
    pipeline = sharded(workspace, shards=2)
    before = pipeline.retrieve(QUESTIONS)
    ray.kill(pipeline.retriever.index.actors[1], no_restart=False)  # type: ignore[attr-defined]
    after = pipeline.retrieve(QUESTIONS)
    assert after.ids.tolist() == before.ids.tolist()


def test_a_dead_shard_fails_the_call_and_names_the_shard(cluster: None, workspace: Path) -> None:
    from ragloom.plugins.ray_retriever import ShardError

    pipeline = sharded(workspace, shards=3, max_restarts=0)
    pipeline.retrieve(QUESTIONS[:2])
    ray.kill(pipeline.retriever.index.actors[2])  # type: ignore[attr-defined]
    dead = str(KnowledgeBase.open(workspace / "kb").shards(3)[2])
    with pytest.raises(ShardError, match=re.escape(dead)):
        pipeline.retrieve(QUESTIONS[:2])


def test_more_actors_than_cpus_is_refused(cluster: None, workspace: Path) -> None:
    from ragloom.plugins.ray_retriever import ShardError

    with pytest.raises(ShardError, match="need 4 CPUs and the Ray cluster has 2"):
        _ = Pipeline.from_spec(spec(workspace, "ray-sharded", shards=4, actor_cpus=1.0)).retriever


def test_merge_orders_by_score_then_id_and_puts_missing_last() -> None:
    from ragloom.plugins.ray_retriever import merge

    first = (np.array([[0.9, 0.5, -np.inf]], np.float32), np.array([[4, 2, -1]]))
    second = (np.array([[0.9, 0.7, 0.1]], np.float32), np.array([[1, 8, 3]]))
    scores, ids = merge([first, second], 4)
    assert ids.tolist() == [[1, 4, 8, 2]]
    assert scores[0].tolist() == pytest.approx([0.9, 0.9, 0.7, 0.5])
    _, ids = merge([first, (np.full((1, 3), -np.inf, np.float32), np.full((1, 3), -1))], 4)
    assert ids.tolist() == [[4, 2, -1, -1]]


def test_shards_cover_the_rows_in_order() -> None:
    shards = Shard.split(10, 3)
    assert [(s.start, s.stop) for s in shards] == [(0, 3), (3, 6), (6, 10)]
    with pytest.raises(ValueError):
        Shard.split(2, 3)
