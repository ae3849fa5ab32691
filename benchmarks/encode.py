"""Passage encoding: ragloom's ``hf-mean-pool`` encoder against sentence-transformers' ``encode``,
side by side in one run, on the same all-MiniLM-L6-v2 (``asset:minilm``), the same passages, the
same batch size and token limit (256), the same threads.

Passages: the embedded corpus (``asset:wikipedia``'s articles cut into 100-word passages, read as
``"title: text"``), the first ``--passages`` of them; and the same passages cut to their first 20
words (short passages, where per-batch overhead weighs more). Cells: both lengths, batch 32 and
128. In each cell every encoder is timed ``--rounds`` times, the encoders taking turns in each
round (the machine's load falls on all alike); the median round is reported. Encoders:

- ``sentence-transformers fp32``: ``SentenceTransformer(minilm).encode(texts, batch_size)``;
- ``ragloom fp32``: ``HFEncoder.encode_passages`` with ``dtype = "float32"`` (the default);
- ``ragloom bf16``: the same with ``dtype = "bfloat16"`` (weights and activations in bfloat16,
  float32 vectors);
- ``sentence-transformers bf16``: ``model_kwargs={"dtype": torch.bfloat16}``, for reference.

Printed per cell: passages/s of each, ragloom over sentence-transformers (fp32 over fp32, bf16
over fp32), and the least cosine between ragloom's and sentence-transformers' vector of a
passage (1.0: the same vectors). Then the minimum ratio over the cells.

    pip install sentence-transformers   # the baseline; ragloom does not depend on it
    python benchmarks/encode.py [--passages 512] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from ragloom.assets import minilm
from ragloom.commands.common import table_lines
from ragloom.context import BuildContext
from ragloom.kb.documents import passages
from ragloom.kb.wikipedia import wikipedia_documents
from ragloom.plugins.hf_encoder import MeanPoolEncoder
from ragloom.spec import PipelineSettings

MAX_LENGTH = 256


def corpus(count: int) -> tuple[list[str], list[str]]:
    """The first ``count`` 100-word passages of the embedded corpus: titles and texts."""
    documents = list(itertools.islice(passages(wikipedia_documents(), 100), count))
    return [d.title for d in documents], [d.text for d in documents]


def ragloom_encoder(dtype: str, batch_size: int) -> Callable[[list[str], list[str]], torch.Tensor]:
    params = MeanPoolEncoder.Params(
        path="asset:minilm", max_length=MAX_LENGTH, batch_size=batch_size, dtype=dtype
    )
    encoder = MeanPoolEncoder.from_spec(params, BuildContext(minilm(), PipelineSettings()))
    return encoder.encode_passages


def st_encoder(
    dtype: torch.dtype, batch_size: int
) -> Callable[[list[str], list[str]], torch.Tensor]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm()), device="cpu", model_kwargs={"dtype": dtype})
    model.max_seq_length = MAX_LENGTH

    def encode(titles: list[str], texts: list[str]) -> torch.Tensor:
        joined = [f"{title}: {text}" for title, text in zip(titles, texts, strict=True)]
        vectors = model.encode(joined, batch_size=batch_size, convert_to_tensor=True)
        return vectors.float()

    return encode


def timed(
    encode: Callable[[list[str], list[str]], torch.Tensor],
    titles: Sequence[str],
    texts: Sequence[str],
) -> tuple[float, torch.Tensor]:
    started = time.perf_counter()
    with torch.inference_mode():
        vectors = encode(list(titles), list(texts))
    return time.perf_counter() - started, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    titles, texts = corpus(args.passages)
    lengths = {"100 words": texts, "20 words": [" ".join(t.split(" ")[:20]) for t in texts]}
    names = (
        "sentence-transformers fp32",
        "ragloom fp32",
        "ragloom bf16",
        "sentence-transformers bf16",
    )
    table = [
        [
            "passages",
            "batch",
            *[f"{n} p/s" for n in names],
            "fp32 ratio",
            "bf16 ratio",
            "least cosine fp32",
        ]
    ]
    ratios: dict[str, list[float]] = {"fp32": [], "bf16": []}
    print(f"{len(texts)} passages, {args.threads} threads, {args.rounds} rounds a cell", flush=True)
    for (length, cell_texts), batch in itertools.product(lengths.items(), (32, 128)):
        encoders = {
            names[0]: st_encoder(torch.float32, batch),
            names[1]: ragloom_encoder("float32", batch),
            names[2]: ragloom_encoder("bfloat16", batch),
            names[3]: st_encoder(torch.bfloat16, batch),
        }
        for encode in encoders.values():  # warm-up: first calls allocate
            timed(encode, titles[:batch], cell_texts[:batch])
        seconds: dict[str, list[float]] = {name: [] for name in names}
        vectors: dict[str, torch.Tensor] = {}
        for _ in range(args.rounds):
            for name, encode in encoders.items():
                spent, vectors[name] = timed(encode, titles, cell_texts)
                seconds[name].append(spent)
        rate = {name: len(texts) / statistics.median(seconds[name]) for name in names}
        fp32 = rate[names[1]] / rate[names[0]]
        bf16 = rate[names[2]] / rate[names[0]]
        ratios["fp32"].append(fp32)
        ratios["bf16"].append(bf16)
        cosine = torch.nn.functional.cosine_similarity(vectors[names[0]], vectors[names[1]])
        table.append(
            [
                length,
                str(batch),
                *[f"{rate[n]:.1f}" for n in names],
                f"{fp32:.2f}x",
                f"{bf16:.2f}x",
                f"{float(cosine.min()):.6f}",
            ]
        )
        print("\n".join(table_lines(table[-1:] if len(table) > 2 else table)), flush=True)
    print("\n" + "\n".join(table_lines(table)))
    print(
        f"\nminimum over the cells: ragloom fp32 / sentence-transformers fp32 "
        f"{min(ratios['fp32']):.2f}x, ragloom bf16 / sentence-transformers fp32 "
        f"{min(ratios['bf16']):.2f}x"
    )


if __name__ == "__main__":
    main()
