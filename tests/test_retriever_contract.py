"""Every built-in retriever passes the Retriever contract: ``dense`` over a knowledge base
encoded by a tiny random BERT, searched through an exact and an HNSW index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import TINY_ENCODER_SPEC, write_documents
from ragloom import Pipeline
from ragloom.context import BuildContext
from ragloom.kb import build_knowledge_base, read_documents
from ragloom.kb.documents import passages
from ragloom.plugin_manager import get_registry
from ragloom.testing import RetrieverContract
from ragloom.testing.tiny_models import bert_dir

COUNT = 30

SPEC = (
    TINY_ENCODER_SPEC
    + """[retriever]
type = "dense"
kb = "{kb}"
[retriever.index]
type = "{index}"
"""
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT (``bert/``), another one (``other/``) and a KB of COUNT passages (``kb/``)."""
    root = tmp_path_factory.mktemp("dense")
    model, _ = bert_dir(root / "bert"), bert_dir(root / "other", seed=1)
    documents = root / "docs.jsonl"
    write_documents(documents, COUNT)
    spec = root / "spec.toml"
    spec.write_text(SPEC.format(model=model, kb=root / "kb", index="faiss-exact"))
    encoder = Pipeline.from_spec(spec).encoder
    build_knowledge_base(
        passages(read_documents(documents), None),
        encoder,
        root / "kb",
        encoder_type="dpr",
        progress=False,
    )
    return root


def pipeline(root: Path, model: str, index: str = "faiss-exact") -> Pipeline:
    spec = root / f"{model}-{index}.toml"
    spec.write_text(SPEC.format(model=root / model, kb=root / "kb", index=index))
    return Pipeline.from_spec(spec)


class DenseContract(RetrieverContract):
    index = "faiss-exact"

    @pytest.fixture
    def built(self, workspace: Path) -> Pipeline:
        return pipeline(workspace, "bert", self.index)

    @pytest.fixture
    def retriever(self, built: Pipeline) -> Any:
        return built.retriever

    @pytest.fixture
    def spec_table(self, built: Pipeline) -> tuple[Any, BuildContext, dict[str, Any]]:
        declared = built.spec.components["retriever"]
        context = BuildContext(built.spec.base_dir, built.spec.pipeline)
        return declared.params, context, declared.declared_children(get_registry())

    @pytest.fixture
    def encoder(self, built: Pipeline) -> Any:
        return built.encoder

    @pytest.fixture
    def wrong_encoder(self, workspace: Path) -> Any:
        return pipeline(workspace, "other").encoder

    @pytest.fixture
    def corpus_size(self) -> int:
        return COUNT


class TestDenseExact(DenseContract):
    pass


class TestDenseHNSW(DenseContract):
    index = "hnsw"
