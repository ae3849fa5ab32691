"""The table of kinds: what derives from it, the docs that describe it, no kind left unused."""

from __future__ import annotations

import re
from typing import get_type_hints

import pytest

from conftest import REPO
from ragloom import hookspecs
from ragloom.errors import SpecError
from ragloom.kinds import BY_NAME, KINDS, SPEC_TABLES, Kind
from ragloom.pipeline import Pipeline
from ragloom.registry import KINDS as REGISTRY_KINDS
from ragloom.registry import Registry
from ragloom.spec import load_component, load_spec
from ragloom.spec.loader import TOP_LEVEL_KEYS
from ragloom.spec.overrides import CliText

DOCS = REPO / "docs"


def section(text: str, heading: str) -> str:
    """The body of the markdown section ``heading`` (up to the next heading of its level)."""
    level = heading.split(" ")[0]
    match = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^{level} |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r}"
    return match.group(1)


def test_the_architecture_docs_tabulate_exactly_the_kinds() -> None:
    body = section((DOCS / "architecture.md").read_text(encoding="utf-8"), "## Kinds")
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in body.splitlines()
        if line.startswith("| `")
    ]
    assert [row[0] for row in rows] == [f"`{kind.name}`" for kind in KINDS]
    for row, kind in zip(rows, KINDS, strict=True):
        declared_in = f"`[{kind.name}]`" if kind.spec_table else row[1]
        assert row == [
            f"`{kind.name}`",
            declared_in,
            f"`{kind.protocol.__name__}`",
            kind.description,
        ]
        assert kind.spec_table or row[1].startswith("nested: "), row


def test_the_plugin_guide_names_exactly_the_kinds() -> None:
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    match = re.search(r"^- `kind`: (.*?)\(the kinds of", text, re.M | re.S)
    assert match, "docs/plugins.md no longer lists the kinds register() takes"
    assert re.findall(r"`([a-z]+)`", match.group(1)) == [kind.name for kind in KINDS]


def test_registry_loader_and_hookspec_follow_the_table() -> None:
    assert tuple(kind.name for kind in KINDS) == REGISTRY_KINDS
    assert set(SPEC_TABLES) == {kind.name for kind in KINDS if kind.spec_table}
    assert set(SPEC_TABLES) <= set(TOP_LEVEL_KEYS)
    assert set(TOP_LEVEL_KEYS) & set(BY_NAME) == set(SPEC_TABLES), "a nested kind as a table"
    assert "ragloom.kinds.KINDS" in (hookspecs.register_components.__doc__ or "")


@pytest.mark.parametrize("kind", [k for k in KINDS if k.spec_table], ids=lambda k: k.name)
def test_the_pipeline_returns_each_table_as_its_protocol(kind: Kind[object]) -> None:
    accessor = getattr(Pipeline, kind.name)
    assert isinstance(accessor, property)
    assert get_type_hints(accessor.fget)["return"] is kind.protocol


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_kind_is_used(registry: Registry, kind: Kind[object]) -> None:
    """A kind nothing registers, or (nested) no component's slot takes, is dead weight."""
    assert registry.names(kind.name), f"no built-in {kind.name}"
    if kind.spec_table:
        return
    slot_kinds = {
        slot_kind
        for parent in KINDS
        for entry in registry.entries(parent.name)
        if not entry.missing_modules()
        for slot_kind in getattr(registry.load(parent.name, entry.name), "slots", {}).values()
    }
    assert kind.name in slot_kinds, f"no component has a slot of kind {kind.name}"


def test_one_table_validates_as_it_does_inside_a_spec(registry: Registry) -> None:
    index = {"type": "hnsw", "M": 8}
    spec = load_spec(
        {"schema": 1, "retriever": {"type": "dense", "kb": "kb", "index": index}},
        registry=registry,
    )
    alone = load_component("index", index, ("retriever", "index"), registry=registry)
    assert alone == spec.components["retriever"].children["index"]
    declared = alone.declared(registry)
    assert (declared.type, declared.component) == ("hnsw", registry.load("index", "hnsw"))
    assert declared.params == alone.params


def test_one_tables_errors_name_its_key_path_and_the_override(registry: Registry) -> None:
    with pytest.raises(SpecError) as excinfo:
        load_component(
            "index",
            {"type": "faiss-hnsw"},
            ("retriever", "index"),
            {"M": CliText("x", "--param M=x"), "nprobe": 3},
            registry,
            "--type faiss-hnsw",
        )
    message = str(excinfo.value)
    assert message.startswith("--type faiss-hnsw: ")
    assert "[retriever.index] M" in message and "(from --param M=x)" in message
    assert '[retriever.index] unknown key "nprobe"' in message
    with pytest.raises(SpecError, match=r'\[encoder\] type = "dpx".*Did you mean "dpr"'):
        load_component("encoder", {"type": "dpx"}, registry=registry)
