"""Retriever ``hybrid``: rrf and linear fusion against values worked out by hand on toy members,
dense + bm25 over one tiny KB (questions encoded once, the Retriever contract, linear fusion's
gradients), a hybrid inside a hybrid, the spec's named member tables (validation errors with
their key paths, ``--set`` into a member, the round trip) and the shipped example."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ConfigDict
from test_retriever_contract import COUNT, DenseContract

from conftest import REPO, TINY_ENCODER_SPEC, write_documents
from ragloom import Pipeline
from ragloom.cli import main
from ragloom.context import BuildContext
from ragloom.errors import MismatchError, SpecError
from ragloom.kb import build_knowledge_base, read_documents
from ragloom.kb.documents import passages
from ragloom.plugins.hybrid_retriever import HybridRetriever
from ragloom.protocols import KnowledgeBaseRetriever, Passage, Questions, Retrieved
from ragloom.registry import Registrar, Registry
from ragloom.spec import load_spec, parse_assignment
from ragloom.testing.retriever_contract import refuse_encoding
from ragloom.testing.tiny_models import bert_dir

# --- toy members: fixed rankings, and fixed vectors -------------------------------------------


class Ranked:
    """Returns ``ranking`` (ids, best first) with ``scores`` for every question."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        ranking: list[int]
        scores: list[float] = []

    def __init__(self, params: Params) -> None:
        self.ranking = params.ranking
        self.scores = params.scores or [float(-rank) for rank in range(len(params.ranking))]

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> Ranked:
        return cls(params)

    def retrieve(self, questions: Questions, k: int) -> Retrieved:
        found = len(self.ranking[:k])
        ids = torch.full((len(questions), k), -1, dtype=torch.int64)
        scores = torch.full((len(questions), k), float("-inf"))
        ids[:, :found] = torch.tensor(self.ranking[:k])
        scores[:, :found] = torch.tensor(self.scores[:k])
        row = [
            Passage(i, f"t{i}", f"passage {i}", s)
            for i, s in zip(self.ranking, self.scores, strict=True)
        ]
        return Retrieved(ids, scores, scores.clone(), [row[:k] for _ in questions.texts])


class Vectors(Ranked):
    """Ranks by ``q · d`` over fixed 2-d doc vectors: doc scores differentiable in ``q``."""

    doc_scores_differentiable = True
    DOCS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])

    def retrieve(self, questions: Questions, k: int) -> Retrieved:
        q = questions.vectors()
        all_scores = q @ self.DOCS.T
        top = all_scores.detach().topk(min(k, len(self.DOCS)), dim=1).indices
        doc_scores = all_scores.gather(1, top)
        rows = [
            [Passage(int(i), "", f"passage {int(i)}", float(s)) for i, s in zip(r, d, strict=True)]
            for r, d in zip(top, doc_scores.detach(), strict=True)
        ]
        return Retrieved(top, doc_scores.detach(), doc_scores, rows)


@pytest.fixture
def toys(registry: Registry, register: Registrar) -> Registry:
    register("retriever", "ranked", Ranked, description="a fixed ranking")
    register("retriever", "vectors", Vectors, description="fixed doc vectors")
    return registry


def hybrid(registry: Registry, table: dict[str, Any], n_docs: int = 3) -> Any:
    spec = {"schema": 1, "pipeline": {"n_docs": n_docs}, "retriever": table}
    return Pipeline.from_spec(spec, registry=registry).retriever


A = {"type": "ranked", "ranking": [1, 2, 3], "scores": [3.0, 2.0, 1.0]}
B = {"type": "ranked", "ranking": [3, 1, 4], "scores": [10.0, 6.0, 2.0]}
TEXT = Questions(["q"], refuse_encoding)


def test_rrf_by_hand(toys: Registry) -> None:
    retriever = hybrid(toys, {"type": "hybrid", "depth": 3, "members": {"a": A, "b": B}}, 3)
    got = retriever.retrieve(TEXT, 4)
    expected = [(1, 1 / 61 + 1 / 62), (3, 1 / 63 + 1 / 61), (2, 1 / 62), (4, 1 / 63)]
    assert got.ids[0].tolist() == [doc for doc, _ in expected]
    torch.testing.assert_close(got.scores[0], torch.tensor([value for _, value in expected]))
    torch.testing.assert_close(got.doc_scores, got.scores)  # temperature 1
    assert [(p.id, p.title) for p in got.passages[0]] == [
        (1, "t1"),
        (3, "t3"),
        (2, "t2"),
        (4, "t4"),
    ]
    assert got.passages[0][0].score == pytest.approx(expected[0][1])
    assert retriever.doc_scores_differentiable is False
    assert not isinstance(retriever, KnowledgeBaseRetriever)


def test_rrf_depth_weights_temperature_and_ties(toys: Registry) -> None:
    table = {"type": "hybrid", "depth": 2, "rrf_k": 0, "temperature": 0.5}
    retriever = hybrid(toys, {**table, "members": {"a": A, "b": B}}, 2)
    got = retriever.retrieve(TEXT, 2)  # a: 1, 2; b: 3, 1 (depth 2)
    assert got.ids[0].tolist() == [1, 3]
    torch.testing.assert_close(got.scores[0], torch.tensor([1 + 1 / 2, 1.0]))
    torch.testing.assert_close(got.doc_scores, got.scores / 0.5)
    got = retriever.retrieve(TEXT, 3)  # k above depth: each member gives k
    assert got.ids[0].tolist() == [1, 3, 2]
    torch.testing.assert_close(got.scores[0], torch.tensor([1 + 1 / 2, 1 / 3 + 1, 1 / 2]))
    # equal fused scores: the best rank a member gave decides, then the id
    swapped = {"type": "ranked", "ranking": [2, 1]}
    tied = {**table, "weights": {"b": 1.0}, "members": {"a": A, "b": swapped}}
    got = hybrid(toys, tied, 2).retrieve(TEXT, 2)
    assert got.ids[0].tolist() == [1, 2] and got.scores[0, 0] == got.scores[0, 1]
    weighted = {**table, "weights": {"b": 3.0}, "members": {"a": A, "b": swapped}}
    assert hybrid(toys, weighted, 2).retrieve(TEXT, 2).ids[0].tolist() == [2, 1]


def test_linear_by_hand(toys: Registry) -> None:
    table = {"type": "hybrid", "fusion": "linear", "depth": 3, "weights": {"b": 2.0}}
    got = hybrid(toys, {**table, "members": {"a": A, "b": B}}).retrieve(TEXT, 5)
    # a: 3, 2, 1 → 1, 0.5, 0; b: 10, 6, 2 → 1, 0.5, 0; a missing document adds 0
    assert got.ids[0].tolist() == [1, 3, 2, 4, -1]  # 1 and 3 tie at 2.0: both ranked first once
    torch.testing.assert_close(got.scores[0, :4], torch.tensor([2.0, 2.0, 0.5, 0.0]))
    assert got.scores[0, 4] == float("-inf") and len(got.passages[0]) == 4
    same = {"type": "ranked", "ranking": [5, 6], "scores": [1.0, 1.0]}
    got = hybrid(toys, {**table, "members": {"a": A, "b": same}}, 2).retrieve(TEXT, 5)
    assert got.ids[0].tolist() == [5, 6, 1, 2, 3]  # all equal: each normalized to 1, times 2
    torch.testing.assert_close(got.scores[0], torch.tensor([2.0, 2.0, 1.0, 0.5, 0.0]))


def test_linear_fusion_is_differentiable_through_a_vector_member(toys: Registry) -> None:
    members = {"v": {"type": "vectors", "ranking": [0]}, "a": A}
    linear = hybrid(toys, {"type": "hybrid", "fusion": "linear", "members": members})
    rrf = hybrid(toys, {"type": "hybrid", "members": members})
    zero = {"type": "hybrid", "fusion": "linear", "weights": {"v": 0.0}, "members": members}
    assert linear.doc_scores_differentiable is True
    assert rrf.doc_scores_differentiable is False
    assert hybrid(toys, zero).doc_scores_differentiable is False
    q = torch.tensor([[0.8, 0.6]], requires_grad=True)
    got = linear.retrieve(Questions(["q"], lambda texts: q), 4)
    # v's q · d: 0.8, 0.6, 0.96, -0.8 for docs 0-3, normalized over [-0.8, 0.96]; a's as above
    v = {2: 1.0, 0: (0.8 + 0.8) / 1.76, 1: (0.6 + 0.8) / 1.76, 3: 0.0}
    a = {1: 1.0, 2: 0.5, 3: 0.0}
    fused = {d: v.get(d, 0.0) + a.get(d, 0.0) for d in {*v, *a}}
    assert got.ids[0].tolist() == sorted(fused, key=lambda d: -fused[d])
    torch.testing.assert_close(got.scores[0], torch.tensor(sorted(fused.values(), reverse=True)))
    got.doc_scores.sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0 and torch.isfinite(q.grad).all()


def test_a_hybrid_inside_a_hybrid(toys: Registry) -> None:
    inner = {"type": "hybrid", "members": {"a": A, "b": B}}
    outer = hybrid(toys, {"type": "hybrid", "members": {"inner": inner, "c": A}})
    got = outer.retrieve(TEXT, 2)
    # inner ranks 1, 3, 2, 4; c ranks 1, 2, 3: 2 and 3 tie, each ranked second once: by id
    assert got.ids[0].tolist() == [1, 2]
    torch.testing.assert_close(got.scores[0, 0], torch.tensor(2 / 61))
    assert isinstance(outer.members["inner"], HybridRetriever)


# --- the spec: named member tables ------------------------------------------------------------


def problems(registry: Registry, table: dict[str, Any], n_docs: int = 5) -> list[str]:
    spec = {"schema": 1, "pipeline": {"n_docs": n_docs}, "retriever": table}
    with pytest.raises(SpecError) as error:
        load_spec(spec, registry=registry)
    return error.value.problems


def test_bad_hybrids_are_refused_with_their_key_paths(toys: Registry) -> None:
    (one,) = problems(toys, {"type": "hybrid", "members": {"a": A}})
    assert one.startswith("[retriever] members declares one retriever") and '"a"' in one
    (none,) = problems(toys, {"type": "hybrid"})
    assert none.startswith('[retriever] type = "hybrid" needs [retriever.members.NAME] tables')
    (empty,) = problems(toys, {"type": "hybrid", "members": {}})
    assert empty == none
    (weights,) = problems(
        toys, {"type": "hybrid", "weights": {"aa": 1.0}, "members": {"a": A, "b": B}}
    )
    assert weights.startswith(
        '[retriever] weights names "aa", which is no member. Did you mean "a"?'
    )
    (depth,) = problems(toys, {"type": "hybrid", "depth": 4, "members": {"a": A, "b": B}}, 5)
    assert depth.startswith("[retriever] depth = 4 is below [pipeline] n_docs = 5")
    assert "Set depth to 5 or more" in depth
    (zero,) = problems(toys, {"type": "hybrid", "depth": 0, "members": {"a": A, "b": B}})
    assert zero.startswith("[retriever] depth = 0:")
    (fusion,) = problems(toys, {"type": "hybrid", "fusion": "sum", "members": {"a": A, "b": B}})
    assert fusion.startswith('[retriever] fusion = "sum" is not allowed.') and "linear" in fusion
    kb = problems(toys, {"type": "hybrid", "members": {"d": {"type": "dense"}, "b": B}})
    assert kb == [
        '[retriever.members.d] type = "dense" needs a [retriever.members.d.index] table with a '
        "index type, one of: faiss-compressed, faiss-exact, faiss-hnsw, faiss-hnsw-sq8, hnsw.",
        '[retriever.members.d] is missing the required key "kb".',
    ]
    (bm25,) = problems(toys, {"type": "hybrid", "members": {"a": A, "bm25": {"type": "bm25"}}})
    assert bm25 == '[retriever.members.bm25] is missing the required key "kb".'
    (nested,) = problems(toys, {"type": "hybrid", "members": {"a": A, "b": {"type": "hybrid"}}})
    assert nested.startswith('[retriever.members.b] type = "hybrid" needs [retriever.members.b.')
    (scalar,) = problems(toys, {"type": "hybrid", "members": {"a": A, "b": 3}})
    assert scalar == "retriever.members.b = 3 must be a table: [retriever.members.b]."


# --- dense + bm25 over one tiny KB -------------------------------------------------------------


SPEC = (
    TINY_ENCODER_SPEC
    + """[pipeline]
n_docs = 3
[retriever]
type = "hybrid"
fusion = "{fusion}"
depth = 30
[retriever.members.dense]
type = "dense"
kb = "{kb}"
[retriever.members.dense.index]
type = "faiss-exact"
[retriever.members.bm25]
type = "bm25"
kb = "{kb}"
stopwords = "none"
"""
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT (``bert/``), another (``other/``), a KB of COUNT passages (``kb/``) encoded by
    the first, and ``rrf.toml`` / ``linear.toml`` fusing dense and bm25 over it."""
    pytest.importorskip("bm25s")
    root = tmp_path_factory.mktemp("hybrid")
    model, _ = bert_dir(root / "bert"), bert_dir(root / "other", seed=1)
    documents = root / "docs.jsonl"
    write_documents(documents, COUNT)
    for fusion in ("rrf", "linear"):
        for name, path in (("", model), ("other-", root / "other")):
            text = SPEC.format(model=path, kb=root / "kb", fusion=fusion)
            (root / f"{name}{fusion}.toml").write_text(text, encoding="utf-8")
    encoder = Pipeline.from_spec(root / "rrf.toml").encoder
    build_knowledge_base(
        passages(read_documents(documents), None), encoder, root / "kb", encoder_type="dpr",
        progress=False,
    )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def pipelines(workspace: Path) -> dict[str, Pipeline]:
    return {f: Pipeline.from_spec(workspace / f"{f}.toml") for f in ("rrf", "linear")}


def test_dense_and_bm25_fuse_and_encode_once(
    pipelines: dict[str, Pipeline], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = pipelines["rrf"]
    calls: list[Sequence[str]] = []
    encode = pipeline.encoder.encode_queries
    monkeypatch.setattr(pipeline.encoder, "encode_queries", lambda t: calls.append(t) or encode(t))
    questions = [p.text for p in pipeline.retriever.members["bm25"].kb.passages.get([4, 9])]
    got = pipeline.retrieve(questions, 3)
    assert len(calls) == 1, "the members share one encoding of the questions"
    assert got.ids[:, 0].tolist() == [4, 9], "a passage asked verbatim comes first"
    members = pipeline.retriever.members
    ranks = [m.retrieve(Questions(questions, encode), 30).ids.tolist() for m in members.values()]
    for b, row in enumerate(got.ids.tolist()):
        for doc, score in zip(row, got.scores[b].tolist(), strict=True):
            expected = sum(1 / (60 + r[b].index(doc) + 1) for r in ranks if doc in r[b])
            assert score == pytest.approx(expected, rel=1e-6)
    retriever = pipeline.retriever
    assert isinstance(retriever, KnowledgeBaseRetriever) and retriever.index_directory is None
    assert retriever.kb.directory == retriever.members["dense"].kb.directory


def test_members_over_different_passages_are_refused_and_one_kb_is_shown(
    tmp_path: Path, toys: Registry
) -> None:
    class FakeKB:
        def __init__(self, checksum: str, dim: int) -> None:
            self.manifest = type("M", (), {"passages_sha256": checksum, "dim": dim})()

    def member(checksum: str, dim: int = 0) -> Any:
        retriever = Ranked(Ranked.Params(ranking=[0]))
        retriever.kb, retriever.index_directory = FakeKB(checksum, dim), None  # type: ignore[attr-defined]
        return retriever

    with pytest.raises(MismatchError, match="different passages"):
        HybridRetriever({"a": member("a" * 64), "b": member("b" * 64)}, HybridRetriever.Params())
    members = {"text": member("a" * 64), "vectors": member("a" * 64, dim=8)}
    same = HybridRetriever(members, HybridRetriever.Params())
    assert isinstance(same, KnowledgeBaseRetriever)
    assert same.kb is members["vectors"].kb, "the KB shown is one with passage vectors"


def test_set_into_a_member_and_the_round_trip(workspace: Path) -> None:
    spec = load_spec(
        workspace / "rrf.toml", dict([parse_assignment("retriever.members.bm25.k1=1.2")])
    )
    assert spec.components["retriever"].named["members"]["bm25"].params.k1 == 1.2  # type: ignore[attr-defined]
    again = load_spec(tomllib.loads(spec.to_toml()))
    assert again == spec
    assert list(again.components["retriever"].named["members"]) == ["dense", "bm25"]
    with pytest.raises(SpecError) as error:
        load_spec(workspace / "rrf.toml", dict([parse_assignment("retriever.members.bm25.k1=x")]))
    (line,) = error.value.problems
    assert line.startswith('[retriever.members.bm25] k1 = "x": must be a number')
    assert line.endswith("(from --set retriever.members.bm25.k1=x).")
    dense = {"retriever.members.bm25.type": "dense", "retriever.members.bm25.index.type": "hnsw"}
    retyped = load_spec(workspace / "rrf.toml", dense)
    assert retyped.components["retriever"].named["members"]["bm25"].type == "dense"


def test_validate(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(workspace / "rrf.toml")]) == 0
    out = capsys.readouterr().out
    assert "[retriever.members.dense.index]  faiss-exact" in out
    assert f"[retriever.members.dense] kb {workspace / 'kb'}: {COUNT} passages" in out
    assert f"[retriever.members.bm25] kb {workspace / 'kb'}: {COUNT} passages" in out
    assert "per question (retrieval" in out, "the dense member gathers doc vectors"
    assert main(["validate", str(workspace / "other-rrf.toml")]) == 1
    err = capsys.readouterr().err
    assert f"[retriever.members.dense] kb {workspace / 'kb'} was encoded by" in err


def test_the_shipped_example_validates(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("bm25s")
    example = REPO / "examples" / "wikipedia.toml"
    assert (REPO / "core" / "examples" / example.name).exists(), "shipped with the package"
    assert main(["validate", str(example)]) == 0
    out = capsys.readouterr().out
    assert "[retriever.members.bm25]         bm25" in out
    assert "[retriever] hybrid of dense, bm25 by rrf, 50 candidates from each" in out


class HybridContract(DenseContract):
    """The dense contract's fixtures (encoder, wrong encoder, spec table) over the hybrid."""

    fusion = "rrf"

    @pytest.fixture
    def built(self, pipelines: dict[str, Pipeline]) -> Pipeline:
        return pipelines[self.fusion]


class TestHybridRrf(HybridContract):
    pass


class TestHybridLinear(HybridContract):
    fusion = "linear"
