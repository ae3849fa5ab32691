"""``ragloom demo``: real, offline RAG over the embedded Wikipedia sample, then a hot swap of
its knowledge (Lewis et al. 2020, §4.5) with the model weights untouched."""

from __future__ import annotations

import argparse
import importlib.resources
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RagloomError
from ..protocols import KnowledgeBaseRetriever
from .ask import print_answer
from .common import add_set_option, overrides

if TYPE_CHECKING:
    from ..pipeline import Pipeline
    from ..spec import ComponentSpec

EXAMPLE = "wikipedia.toml"
QUESTIONS = [
    "Who was the 16th president of the United States?",
    "What is the SI unit of electric current?",
    "Who developed the theory of relativity?",
]
SWAP_QUESTION, OLD, NEW = "Who wrote Animal Farm?", "George Orwell", "Jonathan Quill"
"""The hot swap's fact: a new edition of the knowledge base names NEW as the author where the
passages name OLD, and the reader, which knows OLD from its training data, answers NEW."""


def answer_questions(pipeline: Pipeline, started: float) -> None:
    """Answer QUESTIONS, saying how long after ``started`` (``perf_counter``) the first came."""
    for number, question in enumerate(QUESTIONS):
        (answer,) = pipeline.generate([question])
        if number == 0:
            seconds = time.perf_counter() - started
            print(f"(first answer {seconds:.0f} s after the command started, loading included)")
        print(f"Q: {question}")
        print_answer(
            answer, pipeline.spec.components["marginalizer"].type, show_passages=True, indent="   "
        )
        print()


def rewrite(text: str) -> str:
    """The new edition's wording: the full name, then the surname alone."""
    return text.replace(OLD, NEW).replace(OLD.split()[-1], NEW.split()[-1])


@dataclass(frozen=True)
class SwapTarget:
    """What the hot swap replaces: ``kb``, the knowledge base it edits a copy of, and ``keys``,
    the spec key path of every ``kb`` the new edition replaces (a hybrid has one per member)."""

    kb: Any
    keys: list[str]


def swap_target(pipeline: Pipeline) -> SwapTarget:
    """The knowledge base of the pipeline's retriever and the ``kb`` keys that name it; a
    retriever the demo cannot swap is refused before any question is answered."""
    retriever = pipeline.retriever
    declared = pipeline.spec.components["retriever"]
    where = f"{pipeline.spec.source}: ragloom demo hot-swaps the knowledge base of [retriever]"
    if not isinstance(retriever, KnowledgeBaseRetriever):
        raise RagloomError(
            f'{where}, and type = "{declared.type}" searches none it can swap (a hybrid has one '
            f"when every member searches a knowledge base of the same passages). Drop the --set "
            f"that changes [retriever], or give every member a kb."
        )
    if retriever.kb.manifest.dim == 0:
        raise RagloomError(
            f"{where}, re-encoding the passages it rewrites, and {retriever.kb.directory} holds "
            f"passages only. Use a dense retriever, or a hybrid with a dense member, over a "
            f"knowledge base encoded by [encoder]."
        )
    keys = kb_keys(declared)
    if not keys:
        raise RagloomError(
            f'{where}, and type = "{declared.type}" names its knowledge base by no "kb" key the '
            f"demo could point at the new edition. Use a dense, bm25 or hybrid retriever."
        )
    return SwapTarget(retriever.kb, keys)


def kb_keys(retriever: ComponentSpec) -> list[str]:
    """The key path of the ``kb`` of ``[retriever]`` and of every retriever nested in it (a
    hybrid's ``[retriever.members.NAME]``), which all search the same passages."""
    tables = [((), retriever), *retriever.nested()]
    return [
        ".".join(("retriever", *path, "kb"))
        for path, table in tables
        if table.kind == "retriever" and "kb" in type(table.params).model_fields
    ]


def new_edition(pipeline: Pipeline, kb: Any) -> Path:
    """A copy of ``kb`` whose passages about the swapped fact say NEW, not OLD."""
    from ..assets import cache_directory
    from ..kb.edit import edited_copy

    passages = pipeline.retrieve([SWAP_QUESTION], k=10).passages[0]
    edits = {
        p.id: (rewrite(p.title), rewrite(p.text))
        for p in passages
        if OLD.split()[-1] in p.text or OLD in p.title
    }
    edition = cache_directory() / "kb" / f"{kb.directory.name}-edition-{NEW.replace(' ', '-')}"
    edited_copy(kb, edition, edits, pipeline.encoder)
    print(f"({len(edits)} passages rewritten and re-encoded into {edition})")
    return edition


def hot_swap(
    pipeline: Pipeline, spec: Path, assignments: dict[str, Any], target: SwapTarget
) -> None:
    from ..pipeline import Pipeline

    print(f'Hot swap: a new edition of the knowledge base says "{NEW}" where it said "{OLD}".')
    print("The encoder and generator are the same objects; only the knowledge base changes.")
    print("Answers come from the top passage alone, so the edition is what the model reads.")
    top1 = {**assignments, "pipeline.n_docs": 1}
    original = Pipeline.from_spec(spec, top1).share(
        pipeline, "encoder", "retriever", "generator", "marginalizer"
    )
    (before,) = original.generate([SWAP_QUESTION])
    edition = str(new_edition(pipeline, target.kb))
    swapped = Pipeline.from_spec(spec, {**top1, **dict.fromkeys(target.keys, edition)})
    swapped.share(pipeline, "encoder", "generator", "marginalizer")
    (after,) = swapped.generate([SWAP_QUESTION])
    print(f"Q: {SWAP_QUESTION}")
    print(f"   original edition: {before.text}")
    print(f"   new edition:      {after.text}")


def cmd_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    from ..assets import cache_directory
    from ..kb.wikipedia import CREDIT
    from ..pipeline import Pipeline

    print(f"ragloom demo. {CREDIT}")
    print(
        f"The first run unpacks the knowledge base (encodes it, for another encoder) and builds "
        f"its indexes into {cache_directory()}.\n"
    )
    example = importlib.resources.files("ragloom").joinpath("examples", EXAMPLE)
    with importlib.resources.as_file(example) as spec:
        assignments = overrides(args.set)
        pipeline = Pipeline.from_spec(spec, assignments)
        target = swap_target(pipeline)
        answer_questions(pipeline, started)
        hot_swap(pipeline, spec, assignments, target)
    return 0


def add_to(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="answer from the embedded Wikipedia sample, then hot-swap its knowledge"
    )
    add_set_option(demo)
    demo.set_defaults(handler=cmd_demo)
