"""Knowledge bases: building, reading, the dense retriever over them, and swapping indexes."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import TESTS
from ragloom import Pipeline
from ragloom.errors import IndexFileError, MismatchError
from ragloom.kb import KnowledgeBase, build_knowledge_base, read_documents
from ragloom.kb.documents import Document, DocumentsError, passages, split_words
from ragloom.testing.tiny_models import bert_dir, corpus

SPEC = """
schema = 1
[pipeline]
n_docs = 4
[encoder]
type = "dpr"
path = "{model}"
pooling = "mean"
normalize = true
[retriever]
type = "dense"
kb = "{kb}"
[retriever.index]
type = "faiss-exact"
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bert_dir(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def documents_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    lines = corpus(300, seed=3)
    with path.open("w", encoding="utf-8") as handle:
        for number, text in enumerate(lines):
            title = " ".join(text.split()[:2])
            handle.write(json.dumps({"id": f"d{number}", "title": title, "text": text}) + "\n")
    return path


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory, model: Path, documents_file: Path) -> Path:
    root = tmp_path_factory.mktemp("kb")
    spec = root / "spec.toml"
    spec.write_text(SPEC.format(model=model, kb=root / "kb"), encoding="utf-8")
    encoder = Pipeline.from_spec(spec).encoder
    build_knowledge_base(
        passages(read_documents(documents_file), None),
        encoder,
        root / "kb",
        encoder_type="dpr",
        batch_size=64,
        progress=False,
    )
    return root / "kb"


def spec_file(tmp_path: Path, model: Path, kb: Path, extra: str = "") -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(model=model, kb=kb) + extra, encoding="utf-8")
    return path


def test_a_built_kb_holds_passages_embeddings_and_manifest(kb: Path, model: Path) -> None:
    opened = KnowledgeBase.open(kb)
    assert len(opened) == 300 and opened.dim == 32
    assert opened.manifest.encoder.type == "dpr"
    first = opened.passages.get([0, 299])
    assert first[0].id == 0 and first[1].id == 299
    pipeline = Pipeline.from_spec(spec_file(kb.parent, model, kb))
    expected = pipeline.encoder.encode_passages([p.title for p in first], [p.text for p in first])
    np.testing.assert_allclose(opened.vectors(np.array([0, 299])), expected.numpy(), atol=1e-5)
    assert opened.manifest.encoder.fingerprint == pipeline.encoder.fingerprint


def test_retrieve_returns_exact_neighbours_with_exact_doc_vectors(
    kb: Path, model: Path, tmp_path: Path
) -> None:
    pipeline = Pipeline.from_spec(spec_file(tmp_path, model, kb))
    questions = ["who wrote animal farm", "the capital of france"]
    retrieved = pipeline.retrieve(questions)
    queries = pipeline.encoder.encode_queries(questions).detach().numpy()
    stored = KnowledgeBase.open(kb).vectors(np.arange(300))
    expected = np.argsort(-(queries @ stored.T), axis=1, kind="stable")[:, :4]
    assert retrieved.ids.tolist() == expected.tolist()
    assert retrieved.doc_vectors.shape == (2, 4, 32)
    np.testing.assert_allclose(retrieved.doc_vectors.numpy(), stored[expected], atol=1e-6)
    np.testing.assert_allclose(
        retrieved.scores.numpy(), np.einsum("bd,bkd->bk", queries, stored[expected]), atol=1e-5
    )
    assert [p.id for p in retrieved.passages[0]] == expected[0].tolist()
    assert retrieved.passages[0][0].score == pytest.approx(float(retrieved.scores[0, 0]))


def test_swapping_the_index_reuses_the_embeddings(kb: Path, model: Path, tmp_path: Path) -> None:
    embeddings = kb / "embeddings.npy"
    before = embeddings.stat().st_mtime_ns
    exact = Pipeline.from_spec(spec_file(tmp_path, model, kb)).retrieve(["moon landing apollo"])
    swapped = Pipeline.from_spec(
        spec_file(tmp_path, model, kb),
        overrides={"retriever.index.type": "hnsw", "retriever.index.M": 8},
    ).retrieve(["moon landing apollo"])
    assert swapped.ids[0, 0] == exact.ids[0, 0]
    assert embeddings.stat().st_mtime_ns == before
    names = [path.name for path, _ in KnowledgeBase.open(kb).index_manifests()]
    assert "faiss-exact" in names and "hnsw-M8-ef_construction200-seed100" in names
    again = Pipeline.from_spec(
        spec_file(tmp_path, model, kb),
        overrides={
            "retriever.index.type": "hnsw",
            "retriever.index.M": 8,
            "retriever.index.ef": 16,
        },
    )
    again.retrieve(["moon landing apollo"])
    assert again.retriever.searcher.params.ef == 16
    assert [path.name for path, _ in KnowledgeBase.open(kb).index_manifests()] == names, (
        "a search-time change reuses the built index"
    )


def test_another_encoder_is_refused_naming_both(
    kb: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = bert_dir(tmp_path / "other", seed=7)
    pipeline = Pipeline.from_spec(spec_file(tmp_path, other, kb))
    recorded = KnowledgeBase.open(kb).manifest.encoder.fingerprint
    with pytest.raises(MismatchError) as excinfo:
        pipeline.retrieve(["a question"])
    message = str(excinfo.value)
    assert recorded in message and pipeline.encoder.fingerprint in message
    assert "allow_mismatch = true" in message
    lenient = Pipeline.from_spec(
        spec_file(tmp_path, other, kb), overrides={"retriever.allow_mismatch": True}
    )
    with caplog.at_level(logging.WARNING):
        lenient.retrieve(["a question"])
    assert "Continuing because [retriever] allow_mismatch = true" in caplog.text


def test_an_index_from_other_passages_is_refused(kb: Path, model: Path, tmp_path: Path) -> None:
    Pipeline.from_spec(spec_file(tmp_path, model, kb)).retrieve(["x"])
    manifest_path = kb / "indexes" / "faiss-exact" / "manifest.json"
    original = manifest_path.read_text()
    data = json.loads(original)
    data["passages_sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(data))
    try:
        with pytest.raises(
            MismatchError, match=r"was built from other data: passages 0000000000000000"
        ):
            Pipeline.from_spec(spec_file(tmp_path, model, kb)).retrieve(["x"])
    finally:
        manifest_path.write_text(original)


def test_a_missing_kb_says_how_to_build_one(model: Path, tmp_path: Path) -> None:
    with pytest.raises(IndexFileError, match=r"does not exist. Build one with `ragloom kb build"):
        Pipeline.from_spec(spec_file(tmp_path, model, tmp_path / "nope")).retrieve(["x"])


def test_truncated_embeddings_are_a_clear_error(kb: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(kb, copy)
    data = (copy / "embeddings.npy").read_bytes()
    (copy / "embeddings.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        IndexFileError, match=r"embeddings\.npy has \d+ bytes, its manifest says \d+"
    ):
        KnowledgeBase.open(copy)


def test_split_words_follows_the_reference_recipe() -> None:
    text = " ".join(f"w{i}" for i in range(250))
    chunks = split_words(text, 100)
    assert [len(c.split()) for c in chunks] == [100, 100, 50]
    assert chunks[1].split()[0] == "w100"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "ok"}\n{nope\n', r"bad.jsonl:2: not valid JSON"),
        ("notext.jsonl", '{"title": "t"}\n', r'notext.jsonl:1: no "text" string'),
        ("nocol.csv", "title,body\na,b\n", r"the header must name a text column"),
        ("what.txt", "x", r"cannot tell the format from the extension .txt"),
    ],
)
def test_bad_document_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DocumentsError, match=message):
        list(read_documents(path))


def test_dpr_tsv_reads_id_text_title(tmp_path: Path) -> None:
    path = tmp_path / "psgs.tsv"
    path.write_text('id\ttext\ttitle\n1\t"Aaron is a prophet"\tAaron\n2\tsecond\tB\n')
    documents = list(read_documents(path))
    assert [(d.source_id, d.title, d.text) for d in documents] == [
        ("1", "Aaron", "Aaron is a prophet"),
        ("2", "B", "second"),
    ]


def test_the_encoder_is_differentiable_for_questions(kb: Path, model: Path, tmp_path: Path) -> None:
    encoder = Pipeline.from_spec(spec_file(tmp_path, model, kb)).encoder
    vectors = encoder.encode_queries(["who wrote animal farm"])
    assert vectors.requires_grad
    with torch.inference_mode():
        assert not encoder.encode_queries(["x"]).requires_grad
    assert TESTS.exists()


def test_a_question_longer_than_the_encoder_limit_is_truncated(
    kb: Path, model: Path, tmp_path: Path
) -> None:
    """Questions are cut to the encoder's token limit (max_length, at most 512), not refused."""
    pipeline = Pipeline.from_spec(spec_file(tmp_path, model, kb))
    long_question = " ".join(["paris"] * 2000)
    retrieved = pipeline.retrieve([long_question, "paris"])
    assert retrieved.ids.shape == (2, 4)


def test_a_random_knowledge_base_holds_seeded_unit_vectors(tmp_path: Path) -> None:
    from ragloom.testing.random_kb import random_knowledge_base

    kb = random_knowledge_base(tmp_path / "kb", 70_000, dim=8, seed=3)
    vectors = np.asarray(kb.embeddings)
    assert vectors.shape == (70_000, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert kb.passages.get([69_999])[0].text == "passage 69999"
    again = random_knowledge_base(tmp_path / "again", 70_000, dim=8, seed=3)
    assert np.array_equal(np.asarray(again.embeddings), vectors)


def test_passages_are_read_across_record_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragloom.kb import passages as passage_store
    from ragloom.kb.documents import Document

    monkeypatch.setattr(passage_store, "BATCH_ROWS", 7)  # 50 rows in 8 record batches
    path = tmp_path / "passages.arrow"
    passage_store.write_passages(path, (Document(f"t{i}", f"x{i}", str(i)) for i in range(50)))
    store = passage_store.ArrowPassageStore(path)
    ids = [49, 0, 6, 7, 13, 14, 6, 35]
    assert [(p.id, p.title, p.text) for p in store.get(ids)] == [(i, f"t{i}", f"x{i}") for i in ids]


class StoppedAfter:
    """An encoder that passes ``encoder``'s vectors and counts on, and is stopped (as by
    Ctrl-C) when asked for batch ``batches + 1``."""

    def __init__(self, encoder: Any, batches: int) -> None:
        self.encoder, self.left = encoder, batches
        self.dim, self.fingerprint = encoder.dim, encoder.fingerprint
        self.passage_token_limit = encoder.passage_token_limit

    def encode_queries(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encoder.encode_queries(texts)

    def encode_passages(self, titles: Sequence[str], texts: Sequence[str]) -> torch.Tensor:
        if not self.left:
            raise KeyboardInterrupt
        self.left -= 1
        return self.encoder.encode_passages(titles, texts)

    def passage_overflow(self, titles: Sequence[str], texts: Sequence[str]) -> list[int]:
        return self.encoder.passage_overflow(titles, texts)


def test_a_resumed_build_counts_what_was_cut_before_it_stopped(
    model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Batches encoded before a build was stopped count in the warning of the build that
    resumes it: all 6 long passages, not the 2 it encoded itself."""
    caplog.set_level(logging.INFO, logger="ragloom")
    encoder = Pipeline.from_spec(spec_file(tmp_path, model, tmp_path / "kb")).encoder
    texts = [" ".join(corpus(20, seed=number)) for number in range(6)]
    documents = [Document("long", text, str(number)) for number, text in enumerate(texts)]
    lost = encoder.passage_overflow(["long"] * 6, texts)
    settings = {"encoder_type": "dpr", "batch_size": 2, "flush_seconds": 0, "progress": False}
    with pytest.raises(KeyboardInterrupt):
        build_knowledge_base(documents, StoppedAfter(encoder, 2), tmp_path / "kb", **settings)
    assert not [r for r in caplog.records if "longer than" in r.getMessage()]
    build_knowledge_base(documents, encoder, tmp_path / "kb", **settings)
    messages = [r.getMessage() for r in caplog.records]
    assert any("2 batches already encoded" in message for message in messages)
    (cut,) = [message for message in messages if "longer than" in message]
    assert cut.startswith(
        f"6 of 6 passages are longer than the encoder reads (128 tokens): {sum(lost):,} tokens "
        f"past the limit were cut off unread (at most {max(lost):,} from one passage)"
    )
