"""Build time and memory of each index type at two sizes, a fitted model, a third size to check
the model, and the model's figures for 21M passages (docs/scale.md).

Vectors are seeded random unit vectors of dim 768 (DPR's width), or with ``--data clustered``
points around 1,000 centres, which is closer to real embeddings. Build time models:

- faiss-exact: ``a + b n`` (copying vectors);
- faiss-compressed: ``a + b n`` (``a``: training on a fixed sample, ``b``: assigning and encoding);
- faiss-hnsw-sq8, hnsw: ``b n^p`` (each insertion searches the graph built so far; ``p`` is
  measured from the two sizes).

The constants come from the two sizes; the third size is predicted, then measured. ``--encoding``
measures what dominates a real build instead: passages per second of a BERT-base encoder (DPR's
size, random weights) on 150-token passages.

    python benchmarks/scale.py [--types ...] [--data uniform|clustered] [--quick]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragloom.commands.common import table_lines
from ragloom.plugins.faiss_index import FaissCompressedIndex, FaissExactIndex, FaissHnswSq8Index
from ragloom.plugins.hnsw_index import HnswIndex
from ragloom.testing import unit_vectors

DIM = 768
TARGET = 21_015_324  # passages of DPR's Wikipedia (psgs_w100)
TRAIN_SAMPLE = 200_000


@dataclass(frozen=True)
class Case:
    """An index type with its parameters, the sizes to fit and check, and its time model."""

    name: str
    component: Any
    params: Any
    sizes: tuple[int, int, int]
    model: str  # "linear" or "power"


CASES = [
    Case(
        "faiss-exact",
        FaissExactIndex,
        FaissExactIndex.Params(),
        (100_000, 200_000, 400_000),
        "linear",
    ),
    Case(
        "faiss-compressed (IVF4096_HNSW128,PQ128)",
        FaissCompressedIndex,
        FaissCompressedIndex.Params(factory="IVF4096_HNSW128,PQ128", train_size=TRAIN_SAMPLE),
        (200_000, 300_000, 400_000),
        "linear",
    ),
    Case(
        "faiss-hnsw-sq8 (HNSW128,SQ8, efC 200)",
        FaissHnswSq8Index,
        FaissHnswSq8Index.Params(),
        (10_000, 20_000, 40_000),
        "power",
    ),
    Case(
        "hnsw (hnswlib M32, efC 200)",
        HnswIndex,
        HnswIndex.Params(),
        (10_000, 20_000, 40_000),
        "power",
    ),
]


@dataclass(frozen=True)
class Measured:
    seconds: float
    memory: int
    query_ms: float


def clustered(n: int, seed: int, clusters: int = 1000) -> np.ndarray:
    """Unit vectors around ``clusters`` fixed centres."""
    rng = np.random.default_rng(seed)
    centres = unit_vectors(clusters, DIM, 12345)
    vectors = centres[rng.integers(0, clusters, n)] + 0.35 * unit_vectors(n, DIM, seed + 1)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def build(case: Case, n: int, data: str) -> Measured:
    vectors = clustered(n, seed=n) if data == "clustered" else unit_vectors(n, DIM, seed=n)
    started = time.perf_counter()
    index = case.component.create(DIM, case.params)
    sample = vectors[: min(n, TRAIN_SAMPLE)]
    index.train(sample)
    for start in range(0, n, 65_536):
        stop = min(start + 65_536, n)
        index.add(vectors[start:stop], np.arange(start, stop, dtype=np.int64))
    seconds = time.perf_counter() - started
    queries = unit_vectors(64, DIM, seed=1)
    started = time.perf_counter()
    for query in queries:
        index.search(query[None], 10)
    return Measured(seconds, index.memory_bytes(), (time.perf_counter() - started) / 64 * 1000)


def encoding_rate(batch: int = 32, tokens: int = 150, rounds: int = 6) -> float:
    """Passages per second through a BERT-base forward pass (inference, float32)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(), add_pooling_layer=False).eval()
    ids = torch.randint(1000, 30000, (batch, tokens))
    with torch.inference_mode():
        model(input_ids=ids[:4])
        started = time.perf_counter()
        for _ in range(rounds):
            model(input_ids=ids)
    return batch * rounds / (time.perf_counter() - started)


def predict(case: Case, fit: list[tuple[int, float]], n: int) -> float:
    (n1, t1), (n2, t2) = fit
    if case.model == "linear":
        slope = (t2 - t1) / (n2 - n1)
        return t1 + slope * (n - n1)
    return t2 * (n / n2) ** exponent(fit)


def exponent(fit: list[tuple[int, float]]) -> float:
    (n1, t1), (n2, t2) = fit
    return math.log(t2 / t1) / math.log(n2 / n1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", help="comma-separated names (prefixes) of the cases to run")
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes (smoke run)")
    parser.add_argument("--data", choices=["uniform", "clustered"], default="uniform")
    parser.add_argument("--encoding", action="store_true", help="BERT-base passages/s only")
    args = parser.parse_args()
    if args.encoding:
        rate = encoding_rate()
        days = TARGET / rate / 86400
        print(f"BERT-base, 150 tokens: {rate:.1f} passages/s; 21M passages: {days:.1f} days")
        return
    chosen = [
        case
        for case in CASES
        if not args.types or any(case.name.startswith(t) for t in args.types.split(","))
    ]
    rows = [
        [
            "index",
            "model",
            "n",
            "build s",
            "predicted s",
            "bytes/vector",
            "estimate B/v",
            "ms/query @1",
            "21M build h (model)",
            "21M memory GB",
        ]
    ]
    for case in chosen:
        sizes = [n // 10 for n in case.sizes] if args.quick else list(case.sizes)
        results = {n: build(case, n, args.data) for n in sizes}
        fit = [(n, results[n].seconds) for n in sizes[:2]]
        estimate = case.component.estimate(TARGET, DIM, case.params)
        for n in sizes:
            m = results[n]
            rows.append(
                [
                    case.name,
                    case.model if case.model == "linear" else f"n^{exponent(fit):.2f}",
                    f"{n:,}",
                    f"{m.seconds:.1f}",
                    f"{predict(case, fit, n):.1f}" if n == sizes[2] else "(fit)",
                    f"{m.memory / n:.0f}",
                    f"{case.component.estimate(n, DIM, case.params) / n:.0f}",
                    f"{m.query_ms:.2f}",
                    f"{predict(case, fit, TARGET) / 3600:.1f}" if n == sizes[2] else "",
                    f"{estimate / 1e9:.1f}" if n == sizes[2] else "",
                ]
            )
        print("\n".join(table_lines(rows)), flush=True)


if __name__ == "__main__":
    main()
