"""``ragloom train SPEC --data QA.jsonl --out DIR``: fine-tune encoder and generator as the
spec's ``[train]`` table says; rerun the same command to resume a killed run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..artifacts import check_outside
from .common import add_set_option, add_write_options, spec_from_args


def cmd_train(args: argparse.Namespace) -> int:
    from ..training import train
    from ..training.export import SPEC_FILE

    dev = Path(args.dev) if args.dev else None
    check_outside(
        Path(args.out), {"spec": Path(args.spec), "data file": Path(args.data), "dev file": dev}
    )
    spec = spec_from_args(args.spec, args.set)
    result = train(spec, Path(args.data), Path(args.out), dev)
    loss = "-" if result.loss is None else f"{result.loss:.4f}"
    print(f"trained {result.steps} steps; last step's loss {loss}")
    if result.best is not None:
        print(f"best dev {spec.train.best_metric} {result.best:.4f} at step {result.best_step}")
    print(f"checkpoint: {result.best_directory}")
    print(f"evaluate it: ragloom eval {result.best_directory / SPEC_FILE} --data QA.jsonl")
    return 0


def add_to(commands: Any) -> None:
    training = commands.add_parser(
        "train", help="fine-tune question encoder and generator ([train] table of the spec)"
    )
    training.add_argument("spec", help="path to a TOML spec")
    training.add_argument("--data", required=True, help="training JSONL: question, answers")
    training.add_argument("--dev", help="dev JSONL evaluated every [train] eval_every steps")
    training.add_argument("--out", required=True, help="run directory; rerun to resume")
    add_set_option(training)
    add_write_options(training)
    training.set_defaults(handler=cmd_train)
