"""Knowledge bases in transformers' format, both directions, checked against RagRetriever."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from transformers import (
    BartConfig,
    DPRQuestionEncoder,
    DPRQuestionEncoderTokenizerFast,
    RagConfig,
    RagRetriever,
)

from ragloom import Pipeline
from ragloom.errors import IndexFileError, MismatchError
from ragloom.kb import KnowledgeBase
from ragloom.kb.hf import export_hf, import_hf
from ragloom.testing.tiny_models import dpr_dirs, recipe_knowledge_base

QUESTIONS = ["who wrote animal farm", "the capital of france", "apollo moon landing rocket"]

SPEC = """
schema = 1
[pipeline]
n_docs = 4
[encoder]
type = "dpr"
path = "{question}"
passage_path = "{context}"
[retriever]
type = "dense"
kb = "{kb}"
[retriever.index]
type = "{index}"
"""


@pytest.fixture(scope="module")
def towers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return dpr_dirs(tmp_path_factory.mktemp("dpr"))


def reference_retriever(question_dir: Path, passages: Path, index_path: Path) -> RagRetriever:
    tokenizer = DPRQuestionEncoderTokenizerFast.from_pretrained(question_dir)
    config = RagConfig.from_question_encoder_generator_configs(
        DPRQuestionEncoder.config_class.from_pretrained(question_dir),
        BartConfig(vocab_size=50),
        index_name="custom",
        passages_path=str(passages),
        index_path=str(index_path),
        retrieval_vector_size=32,
        n_docs=4,
    )
    return RagRetriever(config, question_encoder_tokenizer=tokenizer, generator_tokenizer=tokenizer)


def reference_retrieve(
    question_dir: Path, retriever: RagRetriever
) -> tuple[np.ndarray, np.ndarray]:
    tokenizer = DPRQuestionEncoderTokenizerFast.from_pretrained(question_dir)
    encoder = DPRQuestionEncoder.from_pretrained(question_dir).eval()
    with torch.no_grad():
        batch = tokenizer(QUESTIONS, padding=True, return_tensors="pt")
        queries = encoder(**batch).pooler_output.numpy()
    embeds, doc_ids, _ = retriever.retrieve(queries, 4)
    return np.asarray(doc_ids), np.asarray(embeds)


def spec(tmp_path: Path, towers: tuple[Path, Path], kb: Path, index: str) -> Path:
    path = tmp_path / "spec.toml"
    question, context = towers
    path.write_text(SPEC.format(question=question, context=context, kb=kb, index=index))
    return path


@pytest.mark.parametrize(
    ("faiss_index", "ragloom_type"),
    [
        (faiss.IndexFlatIP(32), "faiss-exact"),
        (faiss.IndexHNSWFlat(32, 16, faiss.METRIC_INNER_PRODUCT), "faiss-hnsw"),
    ],
    ids=["flat", "hnsw-flat"],
)
def test_import_retrieves_what_transformers_retrieves(
    tmp_path: Path, towers: tuple[Path, Path], faiss_index: faiss.Index, ragloom_type: str
) -> None:
    passages, index_path = recipe_knowledge_base(tmp_path, towers[1], faiss_index)
    expected_ids, expected_vectors = reference_retrieve(
        towers[0], reference_retriever(towers[0], passages, index_path)
    )
    spec_path = spec(tmp_path, towers, tmp_path / "kb", ragloom_type)
    encoder = Pipeline.from_spec(spec_path).encoder
    kb = import_hf(passages, tmp_path / "kb", index_path, encoder, "dpr")
    ((_, imported),) = kb.index_manifests()
    assert imported.type == ragloom_type
    overrides = {f"retriever.index.{key}": value for key, value in imported.params.items()}
    pipeline = Pipeline.from_spec(
        spec_path, overrides={**overrides, "retriever.build_index": False}
    )
    retrieved = pipeline.retrieve(QUESTIONS)
    assert retrieved.ids.tolist() == expected_ids.tolist()
    np.testing.assert_allclose(retrieved.doc_vectors.numpy(), expected_vectors, atol=1e-5)


def test_export_is_read_by_transformers_with_the_same_results(
    tmp_path: Path, towers: tuple[Path, Path]
) -> None:
    passages, _ = recipe_knowledge_base(tmp_path, towers[1], faiss.IndexFlatIP(32))
    spec_path = spec(tmp_path, towers, tmp_path / "kb", "faiss-exact")
    import_hf(passages, tmp_path / "kb", None, Pipeline.from_spec(spec_path).encoder, "dpr")
    ours = Pipeline.from_spec(spec_path).retrieve(QUESTIONS)
    exported_passages, exported_index = export_hf(
        KnowledgeBase.open(tmp_path / "kb"), tmp_path / "out"
    )
    theirs, vectors = reference_retrieve(
        towers[0], reference_retriever(towers[0], exported_passages, exported_index)
    )
    assert ours.ids.tolist() == theirs.tolist()
    np.testing.assert_allclose(ours.doc_vectors.numpy(), vectors, atol=1e-6)


def test_import_refuses_embeddings_of_another_encoder(
    tmp_path: Path, towers: tuple[Path, Path]
) -> None:
    passages, _ = recipe_knowledge_base(tmp_path, towers[1], faiss.IndexFlatIP(32))
    other = dpr_dirs(tmp_path / "other", seed=9)
    encoder = Pipeline.from_spec(spec(tmp_path, other, tmp_path / "kb", "faiss-exact")).encoder
    with pytest.raises(
        MismatchError, match="re-encoding 16 passages with the given encoder differs"
    ):
        import_hf(passages, tmp_path / "kb", None, encoder, "dpr")
    assert not (tmp_path / "kb").exists()


def test_an_unverified_import_needs_allow_mismatch(
    tmp_path: Path, towers: tuple[Path, Path]
) -> None:
    passages, _ = recipe_knowledge_base(tmp_path, towers[1], faiss.IndexFlatIP(32))
    import_hf(passages, tmp_path / "kb")
    spec_path = spec(tmp_path, towers, tmp_path / "kb", "faiss-exact")
    with pytest.raises(MismatchError, match="was imported without an encoder fingerprint"):
        Pipeline.from_spec(spec_path).retrieve(QUESTIONS)
    lenient = Pipeline.from_spec(spec_path, overrides={"retriever.allow_mismatch": True})
    assert lenient.retrieve(QUESTIONS).ids.shape == (3, 4)


def test_an_import_without_spec_says_how_to_record_its_encoder(
    tmp_path: Path, towers: tuple[Path, Path]
) -> None:
    """Refused with what is missing and the command that records it; that command then needs
    no --force and the KB is searched (its index imported again)."""
    import subprocess

    from conftest import ragloom_command

    passages, index = recipe_knowledge_base(tmp_path, towers[1], faiss.IndexFlatIP(32))
    kb = tmp_path / "kb"
    spec_path = spec(tmp_path, towers, kb, "faiss-exact")

    def ragloom(*argv: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(ragloom_command(*argv), capture_output=True, text=True)

    imported = ragloom("kb", "import-hf", passages, "--index", index, "--out", kb)
    assert imported.returncode == 0, imported.stderr
    assert "encoder none recorded (imported without --spec)" in imported.stdout
    assert "import it again with --spec SPEC" in imported.stderr
    record = (
        f"`ragloom kb import-hf {passages.resolve()} --spec SPEC --out {kb}` (with --index FILE"
    )
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "who wrote animal farm", "answers": ["orwell"]}\n')
    searching = ("eval", spec_path, "--data", data, "--retrieval-only", "--out", tmp_path / "run")
    for argv in (("validate", spec_path), searching):
        refused = ragloom(*argv)
        assert refused.returncode == 1
        message = " ".join(refused.stderr.split())
        assert "was imported without an encoder fingerprint (`ragloom kb import-hf` without " in (
            message
        )
        assert record in message and "or set [retriever] allow_mismatch = true" in message
    recorded = ragloom(
        "kb", "import-hf", passages, "--index", index, "--spec", spec_path, "--out", kb
    )
    assert recorded.returncode == 0, recorded.stderr
    fingerprint = Pipeline.from_spec(spec_path).encoder.fingerprint
    assert f"encoder dpr {fingerprint}" in recorded.stdout
    assert ragloom("validate", spec_path).returncode == 0
    assert ragloom(*searching).returncode == 0
    assert [manifest.type for _, manifest in KnowledgeBase.open(kb).index_manifests()] == [
        "faiss-exact"
    ]


def test_an_l2_index_is_refused(tmp_path: Path, towers: tuple[Path, Path]) -> None:
    passages, index_path = recipe_knowledge_base(tmp_path, towers[1], faiss.IndexFlatL2(32))
    with pytest.raises(IndexFileError, match="searches by L2 distance"):
        import_hf(passages, tmp_path / "kb", index_path)
