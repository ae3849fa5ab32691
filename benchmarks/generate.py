"""Generation speed: transformers' RAG against ragloom on identical inputs, side by side.

For each size (tiny: 64-wide, 2+2 BART layers, 2 DPR layers, init std 0.3; base: 768-wide,
6+6 BART layers, 12 DPR layers), a random checkpoint is saved by transformers, a 400-passage
knowledge base is made with transformers' recipe and imported, and 32 questions are answered in
batches of 8 with n_docs 5, beam 4, max_length 20 by

- transformers: RagTokenForGeneration / RagSequenceForGeneration.generate with RagRetriever
  (rag-sequence given the context attention mask it drops, so both sides compute the same thing);
- ragloom: Pipeline.generate with the same checkpoint and knowledge base.

The generated tokens must be identical; the script prints questions per second and the ratio.

    python benchmarks/generate.py [--sizes tiny,base] [--questions 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import torch
from transformers import (
    DPRQuestionEncoderTokenizerFast,
    RagRetriever,
    RagSequenceForGeneration,
    RagTokenForGeneration,
)

from ragloom import Pipeline
from ragloom.kb.hf import import_hf
from ragloom.testing.tiny_models import (
    BASE,
    Size,
    corpus,
    rag_checkpoint,
    rag_spec,
    recipe_knowledge_base,
)

SIZES = {"tiny": Size(64, 2, 2, 64, 2, 2, init_std=0.3), "base": BASE}
N_DOCS, BEAMS, MAX_LENGTH, BATCH = 5, 4, 20, 8


def questions(count: int) -> list[str]:
    return [" ".join(line.split()[: 4 + i % 7]) + "?" for i, line in enumerate(corpus(count, 11))]


def with_context_mask(model: Any) -> None:
    """Give RagSequenceForGeneration's candidate generation the mask it drops (hf_rag.md B2)."""
    generate = model.generator.generate
    pad = model.config.generator.pad_token_id

    def masked(input_ids: torch.Tensor, **kwargs: Any) -> Any:
        kwargs["attention_mask"] = input_ids.ne(pad).long()
        return generate(input_ids, **kwargs)

    model.generator.generate = masked


def transformers_answers(
    model: Any, tokenizer: Any, batch: list[str], special: set[int]
) -> list[list[int]]:
    inputs = tokenizer(batch, padding=True, return_tensors="pt")
    output = model.generate(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        num_beams=BEAMS,
        max_length=MAX_LENGTH,
        n_docs=N_DOCS,
    )
    return [[t for t in row if t not in special] for row in output.tolist()]


def timed(run: Any, batches: list[list[str]]) -> tuple[float, list[list[int]]]:
    run(batches[0][:2])  # warm up
    started = time.perf_counter()
    results: list[list[int]] = []
    with torch.inference_mode():
        for batch in batches:
            results.extend(run(batch))
    return time.perf_counter() - started, results


def benchmark(size_name: str, count: int, root: Path) -> None:
    checkpoint, question_dir, context_dir = rag_checkpoint(root, size=SIZES[size_name])
    passages, index_path = recipe_knowledge_base(
        root, context_dir, faiss.IndexFlatIP(SIZES[size_name].encoder_hidden), count=400
    )
    retriever = RagRetriever.from_pretrained(
        checkpoint,
        index_name="custom",
        passages_path=str(passages),
        index_path=str(index_path),
        n_docs=N_DOCS,
    )
    tokenizer = DPRQuestionEncoderTokenizerFast.from_pretrained(question_dir)
    special = set(retriever.generator_tokenizer.all_special_ids)
    asked = questions(count)
    batches = [asked[i : i + BATCH] for i in range(0, len(asked), BATCH)]
    for marginalizer, model_class in (
        ("rag-token", RagTokenForGeneration),
        ("rag-sequence", RagSequenceForGeneration),
    ):
        spec = root / f"{marginalizer}.toml"
        spec.write_text(
            rag_spec(checkpoint, context_dir, root / "kb", marginalizer, N_DOCS, BEAMS, MAX_LENGTH)
        )
        pipeline = Pipeline.from_spec(spec)
        if not (root / "kb").exists():
            import_hf(passages, root / "kb", index_path, pipeline.encoder, "dpr")
        model = model_class.from_pretrained(checkpoint, retriever=retriever, n_docs=N_DOCS).eval()
        if marginalizer == "rag-sequence":
            with_context_mask(model)
        reference_seconds, expected = timed(
            lambda batch, model=model: transformers_answers(model, tokenizer, batch, special),
            batches,
        )
        ours_seconds, got = timed(
            lambda batch, p=pipeline: [a.token_ids for a in p.generate(batch)], batches
        )
        same = "identical" if got == expected else "DIFFERENT"
        print(
            f"| {size_name} | {marginalizer} | {count / reference_seconds:.2f} "
            f"| {count / ours_seconds:.2f} | {reference_seconds / ours_seconds:.1f}x | {same} |",
            flush=True,
        )
        if got != expected:
            raise SystemExit(f"{size_name} {marginalizer}: outputs differ from transformers")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="tiny,base", help="comma-separated: tiny, base")
    parser.add_argument("--questions", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"n_docs {N_DOCS}, beams {BEAMS}, max_length {MAX_LENGTH}, batches of {BATCH}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print("| size | marginalizer | transformers q/s | ragloom q/s | speed-up | outputs |")
    print("|---|---|---|---|---|---|")
    for size_name in args.sizes.split(","):
        with tempfile.TemporaryDirectory(prefix=f"ragloom-bench-{size_name}-") as root:
            benchmark(size_name.strip(), args.questions, Path(root))


if __name__ == "__main__":
    main()
