"""The index hot-swap experiment of the RAG paper (§4.5) in miniature.

A generated world of facts in two editions (same entities, every attribute changed), a BART
trained from scratch with RAG-token on edition A's questions, then asked with knowledge base A
and with knowledge base B. "matched" is the accuracy against the edition of the index the model
read; "mismatched" against the other edition. The paper saw 70% matched and 4 to 12% mismatched.
Held-out entities were never trained on: only the passage can answer them.

    python benchmarks/hotswap.py [--entities 200] [--steps 1500] [--out DIR]

See hotswap_experiment.py (beside this script) for the setup; the defaults reproduce
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import fields
from pathlib import Path

from hotswap_experiment import HotswapSettings, run_hotswap  # beside this script

from ragloom.commands.common import table_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for field in fields(HotswapSettings):
        option = "--" + field.name.replace("_", "-")
        parser.add_argument(option, type=type(field.default), default=field.default)
    parser.add_argument("--out", help="work directory (default: a temporary one)")
    args = parser.parse_args()
    settings = HotswapSettings(**{f.name: getattr(args, f.name) for f in fields(HotswapSettings)})
    with tempfile.TemporaryDirectory(prefix="ragloom-hotswap-") as temporary:
        root = Path(args.out or temporary)
        root.mkdir(parents=True, exist_ok=True)
        result = run_hotswap(root, settings)
    print(settings)
    print(
        f"training loss {result.loss_first:.3f} -> {result.loss_last:.3f} "
        f"({settings.steps} steps, {result.train_seconds:.0f} s)"
    )
    print("\n".join(table_lines(result.rows())))


if __name__ == "__main__":
    main()
