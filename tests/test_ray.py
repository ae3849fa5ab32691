"""The ray-sharded retriever on a local Ray cluster: the same results as one index, restarts of
dead shard actors, and a clear error when a shard is gone for good."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import kill_midway, ragloom_command
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
    shard_dirs = sorted((workspace / "kb" / "indexes").glob(f"faiss-exact.shards-{shards}/shard-*"))
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
    ray.kill(pipeline.retriever.searcher.actors[1], no_restart=False)  # type: ignore[attr-defined]
    after = pipeline.retrieve(QUESTIONS)
    assert after.ids.tolist() == before.ids.tolist()


def test_a_dead_shard_fails_the_call_and_names_the_shard(cluster: None, workspace: Path) -> None:
    from ragloom.plugins.ray_retriever import ShardError

    pipeline = sharded(workspace, shards=3, max_restarts=0)
    pipeline.retrieve(QUESTIONS[:2])
    ray.kill(pipeline.retriever.searcher.actors[2])  # type: ignore[attr-defined]
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


def write_documents(path: Path, count: int) -> Path:
    rows = [{"title": " ".join(t.split()[:2]), "text": t} for t in corpus(count, seed=6)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_encoding_on_ray_equals_the_local_build(
    cluster: None, workspace: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same vectors, and the same count of what the encoder cut off 3 long documents."""
    from ragloom.kb import read_documents
    from ragloom.kb.ray_build import build_knowledge_base_on_ray

    documents = write_documents(tmp_path / "docs.jsonl", 120)
    with documents.open("a") as handle:
        for number, text in enumerate(corpus(3, seed=7)):
            handle.write(json.dumps({"title": f"long {number}", "text": f"{text} " * 20}) + "\n")
    spec_path = spec(workspace, "dense")
    pipeline = Pipeline.from_spec(spec_path)
    local = build_knowledge_base(
        read_documents(documents), pipeline.encoder, tmp_path / "local", encoder_type="hf-mean-pool"
    )
    cut_locally = [r.getMessage() for r in caplog.records if "longer than" in r.getMessage()]
    assert len(cut_locally) == 1 and cut_locally[0].startswith("3 of 123 passages are longer")
    caplog.clear()
    on_ray = build_knowledge_base_on_ray(
        read_documents(documents),
        pipeline.encoder,
        pipeline.spec.with_absolute_paths(),
        tmp_path / "ray",
        encoder_type="hf-mean-pool",
        chunk_size=25,
        batch_size=8,
    )
    assert [r.getMessage() for r in caplog.records if "longer than" in r.getMessage()] == (
        cut_locally
    )
    assert on_ray.manifest.passages_sha256 == local.manifest.passages_sha256
    assert on_ray.manifest.encoder == local.manifest.encoder
    np.testing.assert_allclose(
        np.asarray(on_ray.embeddings), np.asarray(local.embeddings), atol=1e-5
    )


def chunks_done(out: Path) -> int:
    try:
        progress = json.loads((out.parent / f".{out.name}.building" / "progress.json").read_text())
    except (OSError, ValueError):
        return 0
    return len(progress.get("chunks_done", []))


def test_a_killed_ray_build_resumes_and_builds_every_shard(workspace: Path, tmp_path: Path) -> None:
    """Encoding as a Ray job, killed with SIGKILL, then run again: the missing chunks are
    encoded, the KB equals a local build, and one index per shard is built."""
    documents = write_documents(tmp_path / "docs.jsonl", 1500)
    out = tmp_path / "kb"
    command = ragloom_command(
        *("index", "build", out, "--type", "faiss-exact", "--shards", 3, "--ray"),
        *("--num-cpus", 1, "--input", documents, "--spec", spec(workspace, "dense")),
        *("--chunk-size", 10, "--batch-size", 10),
    )
    killed_at = kill_midway(command, lambda: chunks_done(out), 5)
    assert killed_at < 150
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{killed_at} of 150 chunks already encoded" in resumed.stderr
    assert "built" in resumed.stdout and "3 shards" in resumed.stdout

    from ragloom.kb import read_documents

    local = build_knowledge_base(
        read_documents(documents),
        Pipeline.from_spec(spec(workspace, "dense")).encoder,
        tmp_path / "local",
        encoder_type="hf-mean-pool",
    )
    kb = KnowledgeBase.open(out)
    np.testing.assert_allclose(np.asarray(kb.embeddings), np.asarray(local.embeddings), atol=1e-5)
    shard_indexes = kb.directory / "indexes" / "faiss-exact.shards-3"
    shards = sorted(p.name for p in shard_indexes.glob("shard-*"))
    assert shards == ["shard-0", "shard-1", "shard-2"]
    info = subprocess.run(ragloom_command("kb", "info", out), capture_output=True, text=True)
    assert "faiss-exact.shards-3/shard-2" in info.stdout and "rows 1000..1499" in info.stdout
