"""``ragloom ask SPEC "question"``: one answer, and the passages it came from."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from ..protocols import Answer
from .common import add_set_option, spec_from_args


def score_label(answer: Answer, marginalizer: str) -> str:
    """What follows an answer: its score named for what it is, the answer's log-probability
    under the ``marginalizer`` type that decoded it (length-normalized in beam search, as
    :class:`ragloom.protocols.Answer` says)."""
    return f"[log-probability {answer.score:.2f} under {marginalizer}]"


def print_answer(answer: Answer, marginalizer: str, show_passages: bool, indent: str = "") -> None:
    print(f"{indent}{answer.text or '(empty answer)'}    {score_label(answer, marginalizer)}")
    print_passages(answer, show_passages, indent)


def print_passages(answer: Answer, show_passages: bool, indent: str = "") -> None:
    if show_passages:
        for rank, passage in enumerate(answer.passages, start=1):
            snippet = textwrap.shorten(passage.text, 110)
            print(f"{indent}  {rank}. {passage.title} ({passage.score:.3f}): {snippet}")


def cmd_ask(args: argparse.Namespace) -> int:
    from ..pipeline import Pipeline

    pipeline = Pipeline.from_spec(spec_from_args(args.spec, args.set))
    pipeline.require("generator", "marginalizer", needed_by="ragloom ask")
    marginalizer = pipeline.spec.components["marginalizer"].type
    if not args.stream:
        (answer,) = pipeline.generate([args.question])
        print_answer(answer, marginalizer, args.show_passages)
        return 0
    stream = pipeline.stream(args.question)
    for piece in stream:
        print(piece, end="", flush=True)
    answer = stream.answer
    print(f"{'' if answer.text else '(empty answer)'}    {score_label(answer, marginalizer)}")
    print_passages(answer, args.show_passages)
    return 0


def add_to(commands: Any) -> None:
    ask = commands.add_parser("ask", help="answer one question with a spec's pipeline")
    ask.add_argument("spec", help="path to a TOML spec")
    ask.add_argument("question")
    ask.add_argument("--show-passages", action="store_true", help="list the retrieved passages")
    ask.add_argument(
        "--stream",
        action="store_true",
        help="print the answer as it is decoded (rag-token and fusion in greedy search; "
        "otherwise it comes whole)",
    )
    add_set_option(ask)
    ask.set_defaults(handler=cmd_ask)
