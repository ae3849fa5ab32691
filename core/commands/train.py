"""``ragloom train SPEC --data QA.jsonl --out DIR``: fine-tune encoder and generator as the
spec's ``[train]`` table says; rerun the same command to resume a killed run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..artifacts import check_outside
from ..spec import Spec
from .common import add_set_option, add_write_options, spec_from_args

LINE_WIDTH = 100


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
    print(f"trained {result.steps} steps; last step's loss {loss} (mean per question)")
    if result.best is not None:
        before = "" if result.baseline is None else f" (before training {result.baseline:.4f})"
        metric = spec.train.best_metric
        print(f"best dev {metric} {result.best:.4f} at step {result.best_step}{before}")
    print(f"checkpoint: {result.best_directory}")
    print(f"evaluate it: ragloom eval {result.best_directory / SPEC_FILE} --data QA.jsonl")
    return 0


def settings_lines(spec: Spec, indent: str = "  ") -> list[str]:
    """The ``[train]`` table as ``ragloom validate`` shows it: every key and its value, defaults
    included (as TOML values), packed into lines; ``n_docs`` also shows ``[pipeline] n_docs``,
    which an unset one takes and dev evaluation reads."""
    pairs = []
    for key, value in spec.train.model_dump(mode="json").items():
        if key == "n_docs" and value is None:
            pairs.append(f"n_docs = {spec.pipeline.n_docs} (from [pipeline])")
        elif key == "n_docs":
            pairs.append(f"n_docs = {value} (dev evaluation: [pipeline] {spec.pipeline.n_docs})")
        else:
            pairs.append(f"{key} unset" if value is None else f"{key} = {json.dumps(value)}")
    lines = [f"{indent}[train] (ragloom train)"]
    for pair in pairs:
        if len(lines) > 1 and len(lines[-1]) + len(pair) + 2 <= LINE_WIDTH:
            lines[-1] += f", {pair}"
        else:
            lines.append(f"{indent}  {pair}")
    return lines


def add_to(commands: Any) -> None:
    training = commands.add_parser(
        "train", help="fine-tune question encoder and generator ([train] table of the spec)"
    )
    training.add_argument("spec", help="path to a TOML spec")
    training.add_argument("--data", required=True, help="training JSONL: question, answers")
    training.add_argument(
        "--dev",
        help="dev JSONL, evaluated with [pipeline] n_docs before the first step and every "
        "[train] eval_every steps",
    )
    training.add_argument("--out", required=True, help="run directory; rerun to resume")
    add_set_option(training)
    add_write_options(training)
    training.set_defaults(handler=cmd_train)
