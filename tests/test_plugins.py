"""Plugin discovery: entry points, errors that are never swallowed, blocking, autoload off.

Entry points are faked here (as pytest's own tests do) to reach every error path; the real
installed-package path is tests/test_third_party_plugin.py.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest

from ragloom import PluginLoadError, hookimpl
from ragloom.errors import DuplicateComponentError
from ragloom.plugin_manager import build_registry, plugin_manager


class FakeDistribution:
    name = "ragloom-fake"
    version = "1.2.3"


class FakeEntryPoint:
    group = "ragloom"
    dist = FakeDistribution()

    def __init__(self, name: str, load: Callable[[], Any]) -> None:
        self.name = name
        self.value = f"{name}_module"
        self._load = load

    def load(self) -> Any:
        return self._load()


@pytest.fixture
def entry_points(monkeypatch: pytest.MonkeyPatch) -> list[FakeEntryPoint]:
    points: list[FakeEntryPoint] = []

    def fake(group: str) -> list[FakeEntryPoint]:
        return [point for point in points if point.group == group]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    monkeypatch.delenv("RAGLOOM_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("RAGLOOM_DISABLED_PLUGINS", raising=False)
    return points


def plugin_module(register_components: Callable[..., None]) -> types.ModuleType:
    module = types.ModuleType("fake_plugin")
    module.register_components = hookimpl(register_components)  # type: ignore[attr-defined]
    return module


def test_an_entry_point_plugin_registers_with_its_distribution(
    entry_points: list[FakeEntryPoint],
) -> None:
    def register_components(register: Any) -> None:
        register("encoder", "fake", "json:JSONDecoder", description="fake")

    entry_points.append(FakeEntryPoint("fake", lambda: plugin_module(register_components)))
    registry = build_registry(*plugin_manager())
    entry = registry.entry("encoder", "fake")
    assert (entry.name, entry.owner.distribution, entry.owner.version) == (
        "fake",
        "ragloom-fake",
        "1.2.3",
    )
    assert "faiss-exact" in registry.names("index"), "built-ins load beside plugins"


def test_import_errors_propagate_with_the_plugins_name(entry_points: list[FakeEntryPoint]) -> None:
    def broken() -> Any:
        raise ImportError("Don't hide me!")

    entry_points.append(FakeEntryPoint("broken", broken))
    with pytest.raises(PluginLoadError) as excinfo:
        plugin_manager()
    message = str(excinfo.value)
    assert (
        'Error loading plugin "broken" (ragloom-fake 1.2.3, entry point broken = broken_module)'
        in message
    )
    assert "ImportError: Don't hide me!" in message
    assert "RAGLOOM_DISABLED_PLUGINS=broken" in message
    assert isinstance(excinfo.value.__cause__, ImportError)


def test_errors_inside_register_components_name_the_plugin(
    entry_points: list[FakeEntryPoint],
) -> None:
    def register_components(register: Any) -> None:
        raise KeyError("oops")

    entry_points.append(FakeEntryPoint("faulty", lambda: plugin_module(register_components)))
    with pytest.raises(
        PluginLoadError,
        match=r'plugin "faulty" \(ragloom-fake 1.2.3\) failed in register_components: KeyError',
    ):
        build_registry(*plugin_manager())


def test_a_plugin_claiming_a_builtin_name_is_an_error_naming_both(
    entry_points: list[FakeEntryPoint],
) -> None:
    def register_components(register: Any) -> None:
        register("index", "faiss-exact", "json:JSONDecoder")

    entry_points.append(FakeEntryPoint("clash", lambda: plugin_module(register_components)))
    with pytest.raises(DuplicateComponentError) as excinfo:
        build_registry(*plugin_manager())
    assert "ragloom-fake 1.2.3 (plugin clash)" in str(excinfo.value)
    assert "(plugin ragloom.plugins.builtin)" in str(excinfo.value)


def test_a_misspelled_hook_is_refused(entry_points: list[FakeEntryPoint]) -> None:
    module = types.ModuleType("typo_plugin")
    module.register_component = hookimpl(lambda register: None)  # type: ignore[attr-defined]
    entry_points.append(FakeEntryPoint("typo", lambda: module))
    with pytest.raises(
        PluginLoadError,
        match=re.escape(
            'plugin "typo" implements the hook "register_component", which ragloom does not '
            'define. Did you mean "register_components"?'
        ),
    ):
        plugin_manager()


def test_autoload_can_be_disabled(
    entry_points: list[FakeEntryPoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> Any:
        raise ImportError("must not be imported")

    entry_points.append(FakeEntryPoint("broken", broken))
    monkeypatch.setenv("RAGLOOM_DISABLE_PLUGIN_AUTOLOAD", "1")
    _, owners = plugin_manager()
    assert list(owners) == ["ragloom.plugins.builtin"]


def test_a_plugin_can_be_blocked_by_name(
    entry_points: list[FakeEntryPoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> Any:
        raise ImportError("must not be imported")

    entry_points.append(FakeEntryPoint("broken", broken))
    monkeypatch.setenv("RAGLOOM_DISABLED_PLUGINS", "broken, other")
    _, owners = plugin_manager()
    assert "broken" not in owners


def test_importing_ragloom_stays_light() -> None:
    import subprocess

    code = (
        "import sys, ragloom; ragloom.get_registry(); "
        "heavy = ('torch', 'faiss', 'hnswlib', 'transformers', 'numpy'); "
        "heavy = [m for m in heavy if m in sys.modules]; "
        "print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
