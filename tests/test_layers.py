"""The layers docs/architecture.md describes are the ones lint-imports enforces."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_documented_layers_are_the_contract() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (layers,) = [contract["layers"] for contract in contracts if contract["type"] == "layers"]
    document = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = document.split("## Layers\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.DOTALL)
    assert block is not None, "docs/architecture.md: the Layers section has no block of layers"
    assert block.group(1).splitlines() == layers
