"""Generation speed: transformers' RAG against ragloom on identical inputs, side by side.

For each size (tiny: 64-wide, 2+2 BART layers, 2 DPR layers, init std 0.3; base: 768-wide,
6+6 BART layers, 12 DPR layers), a random checkpoint is saved by transformers, a 400-passage
knowledge base is made with transformers' recipe and imported, and the questions are answered by

- transformers: RagTokenForGeneration / RagSequenceForGeneration.generate with RagRetriever
  (rag-sequence given the context attention mask it drops and the n_docs its rescoring pass
  reads from the config, B2 and B1 in docs/compatibility.md, so both sides compute the same);
- ragloom: Pipeline.generate with the same checkpoint and knowledge base.

The generated tokens must be identical; the script prints questions per second and the ratio.
Without ``--grid``: one configuration (a 300-token vocabulary, 12-word passages, 32 questions of
4-10 words in batches of 8, n_docs 5, beam 4, max_length 20). With ``--grid``: every cell of
vocabulary 300 / 3k / 30k (BPE trained on made-up words), passages of 20 / 100 words, questions
of 4 / 16 words, n_docs 5 / 10, beams 1 / 4, batches of 1 / 8 at tiny size; at base size (a full
grid takes hours on two cores) the center cell (3k, 100, 16, 5, 4, 8) and each axis moved from it
once. The minimum ratio per size and marginalizer ends the table; the script exits 1 if any
cell's tokens differ. In the grid a cell answers as many of its questions as transformers
answers in ``--budget`` seconds (at least one batch), and ragloom the same ones, each side warmed
up on one question first. ``vocab`` is the trained tokenizer's size (a byte-level BPE of 300
holds the 256 bytes and few merges). ``GFLOP/q`` is what torch's FLOP counter counts when each
side answers the cell's first question alone (matmuls and attention: whether a speed-up is less
work or the same work done faster) and ``of peak`` the rate ragloom ran at against this
machine's float32 matmul peak, measured at the start: how far a cell is from its limit.
``encoder`` is the share of ragloom's time spent in ``Generator.start`` (tokenizing the contexts
and running BART's encoder over them, the same work transformers does), and ``bound`` the
speed-up ragloom would have if everything else it does took no time: transformers' time over
ragloom's encoder time (">100x" where the encoder's share rounds to nothing). With the encoder
as it is, no faster decoder alone beats a cell's bound. ``of peak`` multiplies the FLOPs of one
question alone by the measured questions per second: an estimate.

    python benchmarks/generate.py [--sizes tiny,base] [--questions 32]
    python benchmarks/generate.py --grid [--sizes tiny,base] [--questions 16] [--base-questions 8]
        [--budget 5] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
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
    WORDS,
    Size,
    corpus,
    pseudo_words,
    rag_checkpoint,
    rag_spec,
    recipe_knowledge_base,
)

SIZES = {"tiny": Size(64, 2, 2, 64, 2, 2, init_std=0.3), "base": BASE}
MAX_LENGTH = 20
MARGINALIZERS = {"rag-token": RagTokenForGeneration, "rag-sequence": RagSequenceForGeneration}


@dataclass(frozen=True)
class Cell:
    """One configuration: the checkpoint's vocabulary and the passages' length (a setup: one
    checkpoint and knowledge base), then the questions' length and the decoding."""

    vocab: int = 300
    passage_words: int = 0  # 0: the corpus's 12-word lines, the single configuration's
    question_words: int = 0  # 0: 4 to 10 words, the single configuration's
    n_docs: int = 5
    beams: int = 4
    batch: int = 8

    @property
    def setup(self) -> tuple[int, int]:
        return self.vocab, self.passage_words


AXES = {
    "vocab": (300, 3000, 30000),
    "passage_words": (20, 100),
    "question_words": (4, 16),
    "n_docs": (5, 10),
    "beams": (1, 4),
    "batch": (1, 8),
}
CENTER = Cell(vocab=3000, passage_words=100, question_words=16, n_docs=5, beams=4, batch=8)


def full_grid() -> list[Cell]:
    return [Cell(*values) for values in itertools.product(*AXES.values())]


def axes_from_center() -> list[Cell]:
    """The center cell and each axis moved from it to its other values, one at a time."""
    moved = [
        replace(CENTER, **{axis: value})
        for axis, values in AXES.items()
        for value in values
        if value != getattr(CENTER, axis)
    ]
    return [CENTER, *moved]


@dataclass
class Setup:
    """A checkpoint and its knowledge base, readable by both sides, and the words to ask in."""

    checkpoint: Path
    context_dir: Path
    kb: Path
    retriever: Any
    tokenizer: Any
    special: set[int]
    words: list[str]
    pipelines: dict[tuple[str, int], Pipeline]
    models: dict[str, Any]


def make_setup(root: Path, size: Size, vocab: int, passage_words: int) -> Setup:
    words: list[str] = list(WORDS)
    passages_text = training = None
    if passage_words:  # made-up words: a tokenizer of any size can be trained on them
        words = pseudo_words(max(2 * vocab, 2000))
        passages_text = corpus(400, 5, words, passage_words)
        every_word = (" ".join(words[i : i + 12]) for i in range(0, len(words), 12))
        training = [*passages_text, *every_word]
    checkpoint, question_dir, context_dir = rag_checkpoint(
        root, size=size, vocab_size=vocab, texts=training
    )
    passages, index_path = recipe_knowledge_base(
        root, context_dir, faiss.IndexFlatIP(size.encoder_hidden), count=400, texts=passages_text
    )
    retriever = RagRetriever.from_pretrained(
        checkpoint, index_name="custom", passages_path=str(passages), index_path=str(index_path)
    )
    tokenizer = DPRQuestionEncoderTokenizerFast.from_pretrained(question_dir)
    setup = Setup(
        checkpoint,
        context_dir,
        root / "kb",
        retriever,
        tokenizer,
        set(retriever.generator_tokenizer.all_special_ids),
        words,
        {},
        {},
    )
    first = pipeline(setup, "rag-token", 5)
    import_hf(passages, setup.kb, index_path, first.encoder, "dpr")
    return setup


def pipeline(setup: Setup, marginalizer: str, n_docs: int) -> Pipeline:
    """ragloom's pipeline for ``marginalizer`` and ``n_docs``, sharing the models loaded once."""
    key = (marginalizer, n_docs)
    if key not in setup.pipelines:
        spec = setup.checkpoint.parent / f"{marginalizer}-{n_docs}.toml"
        spec.write_text(
            rag_spec(
                setup.checkpoint, setup.context_dir, setup.kb, marginalizer, n_docs, 1, MAX_LENGTH
            )
        )
        made = Pipeline.from_spec(spec)
        if setup.pipelines:
            made.share(next(iter(setup.pipelines.values())), "encoder", "retriever", "generator")
        setup.pipelines[key] = made
    return setup.pipelines[key]


def model(setup: Setup, marginalizer: str) -> Any:
    if marginalizer not in setup.models:
        loaded = (
            MARGINALIZERS[marginalizer]
            .from_pretrained(setup.checkpoint, retriever=setup.retriever)
            .eval()
        )
        if marginalizer == "rag-sequence":
            with_context_mask(loaded)
        setup.models[marginalizer] = loaded
    return setup.models[marginalizer]


def questions(cell: Cell, words: list[str], count: int) -> list[str]:
    if cell.question_words:
        return [line + "?" for line in corpus(count, 11, words, cell.question_words)]
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
    setup: Setup, marginalizer: str, cell: Cell, batch: list[str]
) -> list[list[int]]:
    inputs = setup.tokenizer(batch, padding=True, return_tensors="pt")
    rag = model(setup, marginalizer)
    rag.config.n_docs = cell.n_docs  # its rescoring pass reads n_docs from the config (B1)
    output = rag.generate(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        num_beams=cell.beams,
        max_length=MAX_LENGTH,
        n_docs=cell.n_docs,
    )
    return [[t for t in row if t not in setup.special] for row in output.tolist()]


def ragloom_answers(
    setup: Setup, marginalizer: str, cell: Cell, batch: list[str]
) -> list[list[int]]:
    answers = pipeline(setup, marginalizer, cell.n_docs).generate(batch, num_beams=cell.beams)
    return [answer.token_ids for answer in answers]


@contextlib.contextmanager
def encoder_seconds(generator: Any) -> Iterator[list[float]]:
    """While the block runs, the seconds spent in ``generator.start`` (its first item)."""
    spent = [0.0]
    start = generator.start

    def timed_start(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return start(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - began

    generator.start = timed_start
    try:
        yield spent
    finally:
        del generator.start  # the class's method again


def timed(
    run: Callable[[list[str]], list[list[int]]], batches: list[list[str]], budget: float
) -> tuple[float, list[list[int]], int]:
    """Seconds for the first batches of ``batches`` that fit ``budget`` seconds (at least one),
    their results and how many batches ran."""
    started = time.perf_counter()
    results: list[list[int]] = []
    done = 0
    with torch.inference_mode():
        while done < len(batches) and (done == 0 or time.perf_counter() - started < budget):
            results.extend(run(batches[done]))
            done += 1
    return time.perf_counter() - started, results, done


@dataclass(frozen=True)
class Result:
    size: str
    marginalizer: str
    cell: Cell
    questions: int
    reference_qps: float
    ragloom_qps: float
    identical: bool
    reference_flops: float  # floating-point operations for one question (matmuls, attention)
    ragloom_flops: float
    encoder_share: float  # of ragloom's time, in Generator.start

    @property
    def ratio(self) -> float:
        return self.ragloom_qps / self.reference_qps

    @property
    def bound(self) -> float:
        """transformers' time over ragloom's time in the encoder."""
        return self.ratio / self.encoder_share


def counted_flops(run: Callable[[list[str]], list[list[int]]], question: str) -> float:
    """What torch's FLOP counter counts in one untimed run of ``question`` alone."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        run([question])
    return float(counter.get_total_flops())


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """This machine's float32 matmul rate (FLOP/s) with torch's threads: the ceiling any
    decoder here can reach."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def measure(
    size: str, cells: list[Cell], count: int, budget: float, root: Path
) -> Iterator[Result]:
    """Every cell at ``size``, both marginalizers; one checkpoint per (vocab, passage length).
    Up to ``count`` questions a cell: as many batches as transformers answers in ``budget``
    seconds (at least one), then the same questions by ragloom."""
    for setup_key, group in itertools.groupby(
        sorted(cells, key=lambda c: c.setup), key=lambda c: c.setup
    ):
        with tempfile.TemporaryDirectory(dir=root) as scratch:
            setup = make_setup(Path(scratch), SIZES[size], *setup_key)
            for cell in group:
                asked = questions(cell, setup.words, count)
                batches = [asked[i : i + cell.batch] for i in range(0, len(asked), cell.batch)]
                for marginalizer in MARGINALIZERS:
                    reference_run = partial(transformers_answers, setup, marginalizer, cell)
                    ours_run = partial(ragloom_answers, setup, marginalizer, cell)
                    for run in (reference_run, ours_run):  # warm up both before timing either
                        with torch.inference_mode():
                            run(batches[0][:1])
                    reference, expected, done = timed(reference_run, batches, budget)
                    generator = pipeline(setup, marginalizer, cell.n_docs).generator
                    with encoder_seconds(generator) as encoding:
                        ours, got, _ = timed(ours_run, batches[:done], float("inf"))
                    answered = sum(len(batch) for batch in batches[:done])
                    yield Result(
                        size,
                        marginalizer,
                        replace(cell, vocab=len(setup.retriever.generator_tokenizer)),
                        answered,
                        answered / reference,
                        answered / ours,
                        got == expected,
                        counted_flops(reference_run, asked[0]),
                        counted_flops(ours_run, asked[0]),
                        encoding[0] / ours,
                    )


def row(result: Result, grid: bool, peak: float) -> str:
    cell = result.cell
    same = "identical" if result.identical else "DIFFERENT"
    columns = [result.size, result.marginalizer]
    if grid:
        columns += [
            str(v)
            for v in (
                cell.vocab,
                cell.passage_words,
                cell.question_words,
                cell.n_docs,
                cell.beams,
                cell.batch,
            )
        ]
    columns += [
        str(result.questions),
        f"{result.reference_qps:.3g}",
        f"{result.ragloom_qps:.3g}",
        f"{result.ratio:.1f}x",
        same,
        f"{result.reference_flops / 1e9:.2f}",
        f"{result.ragloom_flops / 1e9:.2f}",
        f"{result.ragloom_flops * result.ragloom_qps / peak:.1%}",
        f"{result.encoder_share:.0%}",
        f"{result.bound:.1f}x" if result.bound < 100 else ">100x",
    ]
    return "| " + " | ".join(columns) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="tiny,base", help="comma-separated: tiny, base")
    parser.add_argument("--grid", action="store_true", help="every cell of the grid (see above)")
    parser.add_argument("--questions", type=int, help="questions per cell (default 32; grid: 16)")
    parser.add_argument("--base-questions", type=int, default=8, help="grid: per base cell")
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds of transformers' answering per cell, then ragloom answers the same "
        "questions (default: no limit; grid: 5)",
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak = matmul_peak()
    print(
        f"max_length {MAX_LENGTH}, {torch.get_num_threads()} threads, float32 matmul peak "
        f"{peak / 1e9:.0f} GFLOP/s\n"
    )
    header = ["size", "marginalizer"]
    if args.grid:
        header += ["vocab", "passage words", "question words", "n_docs", "beams", "batch"]
    header += [
        "questions",
        "transformers q/s",
        "ragloom q/s",
        "speed-up",
        "outputs",
        "transformers GFLOP/q",
        "ragloom GFLOP/q",
        "of peak",
        "encoder",
        "bound",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="ragloom-bench-generate-") as root:
        for size in (name.strip() for name in args.sizes.split(",")):
            if args.grid:
                cells = full_grid() if size == "tiny" else axes_from_center()
                count = (args.questions or 16) if size == "tiny" else args.base_questions
            else:
                cells, count = [Cell()], args.questions or 32
            budget = args.budget or (5.0 if args.grid else float("inf"))
            for result in measure(size, cells, count, budget, Path(root)):
                print(row(result, args.grid, peak), flush=True)
                results.append(result)
    print()
    by_kind: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        by_kind.setdefault((result.size, result.marginalizer), []).append(result)
    for (size, marginalizer), group in by_kind.items():
        worst = min(group, key=lambda r: r.ratio)
        tightest = min(group, key=lambda r: r.bound)
        print(
            f"{size} {marginalizer}: minimum {worst.ratio:.1f}x over {len(group)} cells, "
            f"at {worst.cell}; smallest bound {tightest.bound:.1f}x, at {tightest.cell}"
        )
    if not all(r.identical for r in results):
        raise SystemExit("some cells' tokens differ from transformers' (DIFFERENT above)")


if __name__ == "__main__":
    main()
