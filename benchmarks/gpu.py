"""The GPU paths, measured in one short run (under 5 minutes on one GPU) that writes
docs/benchmarks.md's GPU table.

On a random base-size RAG checkpoint (768-wide, 6+6 BART layers, 12 DPR layers; saved by
transformers, a 400-passage knowledge base made with transformers' recipe and imported), 64
questions in batches of 8, n_docs 5, beam 4, max_length 20, rag-token, every component on the
GPU. Generator variants, each against the float32 ``sdpa`` one in the same run:

- ``sdpa`` in float32, bfloat16, and ``dtype = "auto"`` (what auto chose is printed);
- ``flash`` (PyTorch SDPA held to its FlashAttention kernel) in bfloat16;
- ``flash_attention_2`` in bfloat16, when flash-attn is installed (``ragloom[gpu]``);
- 4-bit NF4 weights with bfloat16 matmuls, when bitsandbytes is installed (``ragloom[quant]``).

Printed per variant: questions/s, the speed-up over float32, peak GPU memory, and the share of
answers whose tokens equal float32's (16-bit arithmetic may change a close argmax). Then the
passage encoder (all-MiniLM-L6-v2, ``asset:minilm``): passages/s over the embedded corpus's first
2,048 passages at batch 128 in float32 and bfloat16, and the least cosine between the two.

A variant that cannot run (a package missing, a kernel the GPU lacks) is a row saying why; the
script never falls back silently. ``--write`` replaces the text between the GPU markers of
docs/benchmarks.md with the tables.

    python benchmarks/gpu.py [--questions 64] [--write]
    python benchmarks/gpu.py --device cpu --questions 4 --passages 64   # a check of the script
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import torch

from ragloom import Pipeline
from ragloom.assets import minilm
from ragloom.commands.common import table_lines
from ragloom.context import BuildContext
from ragloom.errors import RagloomError
from ragloom.kb.documents import passages
from ragloom.kb.hf import import_hf
from ragloom.kb.wikipedia import wikipedia_documents
from ragloom.plugins.hf_encoder import MeanPoolEncoder
from ragloom.plugins.hf_loading import resolve_dtype
from ragloom.spec import PipelineSettings
from ragloom.testing.tiny_models import (
    BASE,
    corpus,
    rag_checkpoint,
    rag_spec,
    recipe_knowledge_base,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
BEGIN, END = "<!-- gpu-table: benchmarks/gpu.py --write -->", "<!-- /gpu-table -->"
N_DOCS, BEAMS, MAX_LENGTH, BATCH = 5, 4, 20, 8


def variants() -> list[tuple[str, dict[str, Any], str | None]]:
    """(name, generator overrides, why it cannot run here or None)."""
    flash2 = None if importlib.util.find_spec("flash_attn") else "flash-attn is not installed"
    quant = None if importlib.util.find_spec("bitsandbytes") else "bitsandbytes is not installed"
    return [
        ("sdpa float32", {"dtype": "float32"}, None),
        ("sdpa bfloat16", {"dtype": "bfloat16"}, None),
        ('sdpa "auto"', {"dtype": "auto"}, None),
        ("flash bfloat16", {"attention": "flash", "dtype": "bfloat16"}, None),
        (
            "flash_attention_2 bfloat16",
            {"attention": "flash_attention_2", "dtype": "bfloat16"},
            flash2,
        ),
        ("4-bit NF4, bf16 matmuls", {"quantization": "4bit", "compute_dtype": "bfloat16"}, quant),
    ]


def synchronized(device: str) -> float:
    """``time.perf_counter()`` once the GPU's queued work is done."""
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def peak_mib(device: str) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**20:.0f}" if device == "cuda" else "-"


def run_questions(
    pipeline: Pipeline, asked: list[str], device: str
) -> tuple[float, list[list[int]]]:
    pipeline.generate(asked[:2])  # warm up: kernels, allocator
    started = synchronized(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokens: list[list[int]] = []
    with torch.inference_mode():
        for start in range(0, len(asked), BATCH):
            tokens.extend(a.token_ids for a in pipeline.generate(asked[start : start + BATCH]))
    return synchronized(device) - started, tokens


def generation_table(root: Path, count: int, device: str) -> list[list[str]]:
    checkpoint, _, context_dir = rag_checkpoint(root, size=BASE)
    passages, index = recipe_knowledge_base(
        root, context_dir, faiss.IndexFlatIP(BASE.encoder_hidden), count=400
    )
    spec = root / "rag.toml"
    spec.write_text(
        rag_spec(checkpoint, context_dir, root / "kb", "rag-token", N_DOCS, BEAMS, MAX_LENGTH)
    )
    on_gpu = {"encoder.device": device, "generator.device": device}
    import_hf(passages, root / "kb", index, Pipeline.from_spec(spec, on_gpu).encoder, "dpr")
    asked = [" ".join(line.split()[: 4 + i % 13]) + "?" for i, line in enumerate(corpus(count, 11))]
    table = [["generator", "questions/s", "over float32", "peak GPU MiB", "answers as float32"]]
    reference: tuple[float, list[list[int]]] | None = None
    for name, settings, missing in variants():
        if missing is not None:
            table.append([name, f"not run: {missing}", "-", "-", "-"])
            continue
        overrides = {**on_gpu, **{f"generator.{key}": value for key, value in settings.items()}}
        try:
            pipeline = Pipeline.from_spec(spec, overrides)
            seconds, tokens = run_questions(pipeline, asked, device)
        except (RagloomError, RuntimeError, ValueError, ImportError) as error:  # said in the row
            table.append([name, f"failed: {str(error).splitlines()[0][:120]}", "-", "-", "-"])
            continue
        if settings.get("dtype") == "auto":
            chosen = resolve_dtype("auto", device)
            name = f"{name} (chose {str(chosen).removeprefix('torch.')})"
        reference = reference or (seconds, tokens)
        same = sum(a == b for a, b in zip(tokens, reference[1], strict=True)) / len(tokens)
        table.append(
            [
                name,
                f"{count / seconds:.1f}",
                f"{reference[0] / seconds:.2f}x",
                peak_mib(device),
                f"{same:.2f}",
            ]
        )
        del pipeline
        if device == "cuda":
            torch.cuda.empty_cache()
    return table


def encoder_table(count: int, device: str) -> list[list[str]]:
    documents = list(itertools.islice(passages(wikipedia_documents(), 100), count))
    titles, texts = [d.title for d in documents], [d.text for d in documents]
    encoders: dict[str, Callable[..., torch.Tensor]] = {}
    for dtype in ("float32", "bfloat16"):
        params = MeanPoolEncoder.Params(
            path="asset:minilm", max_length=256, batch_size=128, dtype=dtype, device=device
        )
        encoders[dtype] = MeanPoolEncoder.from_spec(
            params, BuildContext(minilm(), PipelineSettings())
        ).encode_passages
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    vectors: dict[str, torch.Tensor] = {}
    for encode in encoders.values():  # warm up
        encode(titles[:128], texts[:128])
    for _ in range(3):
        for name, encode in encoders.items():
            started = synchronized(device)
            vectors[name] = encode(titles, texts)
            seconds[name].append(synchronized(device) - started)
    cosine = float(
        torch.nn.functional.cosine_similarity(vectors["float32"], vectors["bfloat16"]).min()
    )
    rates = {name: count / statistics.median(spent) for name, spent in seconds.items()}
    return [
        ["encoder (MiniLM, batch 128)", "passages/s", "over float32", "least cosine to float32"],
        ["float32", f"{rates['float32']:.0f}", "1.00x", "1.000000"],
        [
            "bfloat16",
            f"{rates['bfloat16']:.0f}",
            f"{rates['bfloat16'] / rates['float32']:.2f}x",
            f"{cosine:.6f}",
        ],
    ]


def write(text: str) -> None:
    page = DOCS.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(page):
        raise SystemExit(f"{DOCS} has no {BEGIN} ... {END} markers to write between.")
    DOCS.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", page), encoding="utf-8")
    print(f"written into {DOCS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--passages", type=int, default=2048)
    parser.add_argument("--write", action="store_true", help="write the tables into docs")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py measures the GPU paths: torch sees no CUDA GPU here.")
    if args.write and args.device != "cuda":
        raise SystemExit("--write records GPU figures: run it with --device cuda.")
    torch.manual_seed(0)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    header = (
        f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}; base-size random RAG, "
        f"{args.questions} questions, batch {BATCH}, n_docs {N_DOCS}, beam {BEAMS}, "
        f"max_length {MAX_LENGTH}, rag-token"
    )
    print(header, flush=True)
    with tempfile.TemporaryDirectory(prefix="ragloom-gpu-") as root:
        generation = generation_table(Path(root), args.questions, args.device)
    print("\n".join(table_lines(generation)), flush=True)
    encoding = encoder_table(args.passages, args.device)
    print("\n".join(table_lines(encoding)), flush=True)
    if args.write:
        markdown = [header + ":", ""]
        for table in (generation, encoding):
            markdown += [f"| {' | '.join(table[0])} |", "|" + "---|" * len(table[0])]
            markdown += [f"| {' | '.join(row)} |" for row in table[1:]] + [""]
        write("\n".join(markdown).rstrip())


if __name__ == "__main__":
    main()
