"""ragloom's BART decoder against ragloom decoding through transformers' forward, side by side.

The same pipelines answer the same questions three ways in one run: transformers' RAG (the
reference), ragloom with its generator's decoder swapped for ``TransformersDecoder``
(transformers' forward and cache, what every other seq2seq model gets), and ragloom with
``BartDecoder`` (what a BART gets). Each is timed twice, interleaved; the tokens of all three
must be identical. The cells are points of ``generate.py``'s grid at tiny size: the single
configuration and four cells at the corners the grid found slowest or fastest; ``--size base``
runs the single configuration at base size (16 questions).

    python benchmarks/bart_decoder.py [--size base] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import torch
from generate import (
    MARGINALIZERS,
    SIZES,
    Cell,
    make_setup,
    pipeline,
    questions,
    ragloom_answers,
    timed,
    transformers_answers,
)

from ragloom.plugins.bart_decoder import TransformersDecoder

CELLS = [
    Cell(),
    Cell(300, 100, 16, 10, 1, 8),
    Cell(3000, 100, 4, 5, 4, 1),
    Cell(30000, 20, 4, 5, 1, 1),
    Cell(300, 20, 4, 5, 1, 8),
]
ROUNDS = 2


def label(cell: Cell) -> str:
    words = f"{cell.passage_words or 12} / {cell.question_words or '4-10'}"
    return f"{cell.vocab} / {words} / {cell.n_docs} / {cell.beams} / {cell.batch}"


def compare(setup: Any, cell: Cell, marginalizer: str, count: int) -> str:
    """One table row: the cell answered by transformers, then by ragloom through each decoder."""
    asked = questions(cell, setup.words, count)
    batches = [asked[i : i + cell.batch] for i in range(0, len(asked), cell.batch)]
    generator = pipeline(setup, marginalizer, cell.n_docs).generator
    decoders = {"ours": generator._decoder, "forward": TransformersDecoder(generator.model)}
    reference = partial(transformers_answers, setup, marginalizer, cell)
    ours = partial(ragloom_answers, setup, marginalizer, cell)
    with torch.inference_mode():
        reference(batches[0][:1])
        ours(batches[0][:1])
    seconds = {"reference": 0.0, "forward": 0.0, "ours": 0.0}
    outputs: dict[str, list[list[int]]] = {}
    for _ in range(ROUNDS):
        spent, outputs["reference"], _ = timed(reference, batches, float("inf"))
        seconds["reference"] += spent
        for name in ("forward", "ours"):
            generator._decoder = decoders[name]
            spent, outputs[name], _ = timed(ours, batches, float("inf"))
            seconds[name] += spent
    rates = [ROUNDS * len(asked) / seconds[name] for name in ("reference", "forward", "ours")]
    same = outputs["reference"] == outputs["forward"] == outputs["ours"]
    columns = [label(cell), marginalizer, *(f"{rate:.2f}" for rate in rates)]
    columns += [
        f"{seconds['forward'] / seconds['ours']:.2f}x",
        "identical" if same else "DIFFERENT",
    ]
    return "| " + " | ".join(columns) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size
    cells = CELLS if size == "tiny" else [Cell()]
    torch.manual_seed(0)
    print(
        "| cell (vocab / passage words / question words / n_docs / beams / batch) "
        "| marginalizer | transformers q/s | ragloom, transformers' forward q/s "
        "| ragloom, BartDecoder q/s | gain | outputs |"
    )
    print("|---|---|---|---|---|---|---|")
    setups: dict[tuple[int, int], Any] = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="ragloom-bench-decoder-") as root:
        for number, cell in enumerate(cells):
            if cell.setup not in setups:
                where = Path(root) / str(number)
                setups[cell.setup] = make_setup(where, SIZES[size], *cell.setup)
            for marginalizer in MARGINALIZERS:
                count = 16 if cell.passage_words or size == "base" else 32
                rows.append(compare(setups[cell.setup], cell, marginalizer, count))
                print(rows[-1], flush=True)
    if any("DIFFERENT" in row for row in rows):
        raise SystemExit("some cells' tokens differ (DIFFERENT above)")


if __name__ == "__main__":
    main()
