"""Every optional capability is a protocol that is documented, exercised by a contract kit, and
never found by probing attribute names (datasette tests that every hook is documented)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ragloom.testing
from ragloom.protocols import CAPABILITIES

ROOT = Path(__file__).parents[1]


def members(capability: type) -> list[str]:
    """The attribute names a capability protocol declares."""
    declared = {*getattr(capability, "__annotations__", {}), *vars(capability)}
    return sorted(name for name in declared if not name.startswith("_"))


@pytest.mark.parametrize("capability", CAPABILITIES, ids=lambda c: c.__name__)
def test_every_capability_is_documented(capability: type) -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    row = next((line for line in guide.splitlines() if f"| `{capability.__name__}` |" in line), "")
    assert row, f"docs/plugins.md's Capabilities table has no row for {capability.__name__}"
    for member in members(capability):
        assert member in row, f"the row of {capability.__name__} does not name `{member}`"


@pytest.mark.parametrize("capability", CAPABILITIES, ids=lambda c: c.__name__)
def test_every_capability_is_exercised_by_a_contract_kit(capability: type) -> None:
    kits = Path(ragloom.testing.__file__).parent.glob("*_contract.py")
    sources = "\n".join(path.read_text(encoding="utf-8") for path in kits)
    assert re.search(rf"\b{capability.__name__}\b", sources), (
        f"no contract kit in ragloom.testing checks {capability.__name__}"
    )


def test_core_never_probes_a_capability_by_name() -> None:
    names = {member for capability in CAPABILITIES for member in members(capability)}
    probe = re.compile(rf"""(?:getattr|hasattr)\([^,]+,\s*["']({"|".join(names)})["']""")
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "core").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if probe.search(line)
    ]
    assert found == [], "check the capability with isinstance instead:\n" + "\n".join(found)
