"""One BART decoder step, and the cross-attention read inside it, measured alone.

Two measurements behind docs/benchmarks.md's account of where generation time goes:

1. SDPA reading cross-attention keys and values for one query per row, laid out as transformers
   keeps them (transposed views of the projection, ``[R, S, H, d]`` seen as ``[R, H, S, d]``)
   against the same values contiguous: milliseconds a call, and whether the outputs are bitwise
   equal. Four such sets are read in turn, as a decoder's layers do, so that they do not stay
   in the CPU's caches.
2. A decoding step of a random BART (tiny: 64 wide, 2 layers; base: 768 wide, 6 layers) over
   ``R`` rows reading 300-token contexts: ragloom's ``BartDecoder`` against transformers'
   forward (``TransformersDecoder``), milliseconds a step and torch calls a step (every call a
   ``TorchFunctionMode`` sees: functions, methods and operators).

    python benchmarks/decoder_step.py [--threads N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ragloom.plugins.bart_decoder import BartDecoder, TransformersDecoder
from ragloom.testing.tiny_models import BASE, Size, bart_model

CONTEXT = 300
LAYOUT_SETS = 4


def milliseconds(run: Callable[[], Any], repeats: int) -> float:
    run()
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - started) / repeats * 1000


def cross_attention_reads(rows: int, heads: int, width: int) -> str:
    head = width // heads
    query = torch.randn(rows, heads, 1, head)
    transposed = [
        tuple(torch.randn(rows, CONTEXT, heads, head).transpose(1, 2) for _ in range(2))
        for _ in range(LAYOUT_SETS)
    ]
    contiguous = [(key.contiguous(), value.contiguous()) for key, value in transposed]

    def read(sets: list[tuple[torch.Tensor, ...]]) -> Callable[[], list[torch.Tensor]]:
        return lambda: [F.scaled_dot_product_attention(query, k, v) for k, v in sets]

    same = all(
        torch.equal(a, b) for a, b in zip(read(transposed)(), read(contiguous)(), strict=True)
    )
    slow = milliseconds(read(transposed), 50) / LAYOUT_SETS
    fast = milliseconds(read(contiguous), 50) / LAYOUT_SETS
    megabytes = 2 * rows * CONTEXT * width * 4 / 1e6
    cells = [
        f"{rows} x {CONTEXT}, {width} wide",
        f"{megabytes:.0f} MB",
        f"{slow:.2f}",
        f"{fast:.2f}",
    ]
    cells += [f"{slow / fast:.1f}x", "yes" if same else "NO"]
    return "| " + " | ".join(cells) + " |"


class CallCounter(TorchFunctionMode):
    """Counts the torch calls made while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.calls += 1
        return func(*args, **(kwargs or {}))


def decoder_steps(name: str, size: Size, rows: int) -> str:
    model = bart_model(300, size=size)
    states = torch.randn(rows, CONTEXT, size.generator_hidden)
    mask = torch.ones(rows, CONTEXT, dtype=torch.long)
    cells = [f"{name}, {rows} rows"]
    for decoder in (TransformersDecoder(model), BartDecoder(model)):
        cache = decoder.cache(states, mask, torch.arange(rows))
        tokens = torch.full((rows, 1), model.config.decoder_start_token_id)
        decoder.logits(cache, states, mask, tokens)  # the first step fills the caches

        step = partial(decoder.logits, cache, states, mask, tokens)
        with CallCounter() as counter:
            step()
        cells += [f"{milliseconds(step, 10 if name == 'base' else 40):.2f}", str(counter.calls)]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{torch.get_num_threads()} threads\n")
    with torch.inference_mode():
        print("| cross-attention keys and values | K + V | transposed ms | contiguous ms |", end="")
        print(" ratio | bitwise equal |")
        print("|---|---|---|---|---|---|")
        for rows, heads, width in [(5, 2, 64), (80, 2, 64), (40, 12, 768)]:
            print(cross_attention_reads(rows, heads, width), flush=True)
        print()
        print("| decoder step | transformers' forward ms | calls | BartDecoder ms | calls |")
        print("|---|---|---|---|---|")
        tiny = Size(generator_hidden=64)
        for name, size, rows in [("tiny", tiny, 5), ("tiny", tiny, 80), ("base", BASE, 40)]:
            print(decoder_steps(name, size, rows), flush=True)


if __name__ == "__main__":
    main()
