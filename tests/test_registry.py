"""The registry: lookups, suggestions, lazy loading, extras, duplicates, and the built-ins."""

from __future__ import annotations

import re
import sys

import pytest

from ragloom import DuplicateComponentError, MissingExtraError, UnknownComponentError, kinds
from ragloom.registry import KINDS, Registrar, Registry


def test_unknown_name_suggests_and_lists(registry: Registry) -> None:
    with pytest.raises(UnknownComponentError) as excinfo:
        registry.load("index", "faiss_exact")
    assert str(excinfo.value) == (
        '"faiss_exact" is not a registered index type. Did you mean "faiss-exact"? '
        "Registered index types: faiss-compressed, faiss-exact, faiss-hnsw, faiss-hnsw-sq8, hnsw. "
        "If it comes from a plugin, install the plugin; `ragloom plugins` lists what is "
        "registered."
    )


def test_duplicate_names_both_owners(registry: Registry, register: Registrar) -> None:
    with pytest.raises(DuplicateComponentError) as excinfo:
        register("index", "faiss-exact", object)
    message = str(excinfo.value)
    assert 'index "faiss-exact" is registered twice' in message
    assert "ragloom" in message and "plugin ragloom.plugins.builtin" in message
    assert "test-plugins 0 (plugin tests)" in message


def test_unknown_kind_is_refused(register: Registrar) -> None:
    with pytest.raises(
        UnknownComponentError, match=re.escape('unknown kind "indx". Did you mean "index"?')
    ):
        register("indx", "mine", object)


def test_missing_extra_names_the_pip_command(registry: Registry, register: Registrar) -> None:
    register(
        "index",
        "hnsw-test",
        "no_such_module_anywhere:Index",
        requires=["no_such_module_anywhere"],
        install="pip install 'ragloom[hnsw]'",
    )
    with pytest.raises(MissingExtraError) as excinfo:
        registry.load("index", "hnsw-test")
    assert str(excinfo.value) == (
        'index "hnsw-test" needs no_such_module_anywhere, which is not installed. '
        "Install it with: pip install 'ragloom[hnsw]'"
    )


def test_targets_load_lazily(registry: Registry, register: Registrar) -> None:
    register("encoder", "lazy", "json:JSONDecoder")
    sys.modules.pop("ragloom.plugins.faiss_index", None)
    registry.entries()
    assert "ragloom.plugins.faiss_index" not in sys.modules
    import json

    assert registry.load("encoder", "lazy") is json.JSONDecoder
    assert registry.load("index", "faiss-exact").__name__ == "FaissExactIndex"


def test_a_target_that_does_not_exist_raises_import_error(
    registry: Registry, register: Registrar
) -> None:
    register("encoder", "broken", "json:NoSuchThing")
    with pytest.raises(ImportError, match='module "json" has no attribute "NoSuchThing"'):
        registry.load("encoder", "broken")


@pytest.mark.parametrize("kind", KINDS)
def test_every_builtin_loads_and_has_a_parameter_schema(registry: Registry, kind: str) -> None:
    for entry in registry.entries(kind):
        if entry.missing_modules():
            continue
        component = registry.load(kind, entry.name)
        assert hasattr(component, "Params"), f"{kind} {entry.name} has no Params schema"
        assert component.Params.model_config.get("extra") == "forbid"
        assert entry.description, f"{kind} {entry.name} has no description"
        if kind == "index":
            index = component.create(128, component.Params())
            assert isinstance(index, kinds.BY_NAME[kind].protocol)
