"""Plugin discovery with pluggy: entry points of the group ``ragloom`` plus the built-ins.

Built-in components are registered by the plugin module ``ragloom.plugins.builtin`` through the
same ``register_components`` hook as third-party plugins. Environment controls:

- ``RAGLOOM_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry points (built-ins still load);
- ``RAGLOOM_DISABLED_PLUGINS=a,b``: block the named plugins (entry-point names).

A plugin that fails to import or to register raises :class:`PluginLoadError` naming its
distribution and entry point, chained to the original exception; it is never skipped silently.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
from types import ModuleType

import pluggy

from . import hookspecs
from .errors import PluginLoadError, RagloomError
from .registry import Owner, Registrar, Registry
from .suggest import listing, suggestion
from .version import ragloom_version

ENTRY_POINT_GROUP = "ragloom"
DEFAULT_PLUGINS: tuple[str, ...] = ("ragloom.plugins.builtin",)
AUTOLOAD_ENV = "RAGLOOM_DISABLE_PLUGIN_AUTOLOAD"
DISABLED_ENV = "RAGLOOM_DISABLED_PLUGINS"


def _ragloom_owner(plugin: str) -> Owner:
    return Owner("ragloom", ragloom_version(), plugin)


def _disabled() -> set[str]:
    return {name.strip() for name in os.environ.get(DISABLED_ENV, "").split(",") if name.strip()}


def _autoload() -> bool:
    return os.environ.get(AUTOLOAD_ENV, "").strip().lower() not in {"1", "true", "yes"}


def plugin_manager() -> tuple[pluggy.PluginManager, dict[str, Owner]]:
    """A plugin manager with the hook specs, the entry-point plugins and the built-ins.

    Returns the manager and the owner (distribution, version) of each registered plugin name.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    owners: dict[str, Owner] = {}
    for name in _disabled():
        manager.set_blocked(name)
    if _autoload():
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if manager.is_blocked(entry_point.name) or manager.has_plugin(entry_point.name):
                continue
            distribution = entry_point.dist
            owner = Owner(
                distribution.name if distribution else "unknown distribution",
                distribution.version if distribution else "?",
                entry_point.name,
            )
            where = (
                f'plugin "{entry_point.name}" ({owner.distribution} {owner.version}, '
                f"entry point {entry_point.name} = {entry_point.value})"
            )
            try:
                plugin = entry_point.load()
                manager.register(plugin, name=entry_point.name)
            except Exception as error:
                raise PluginLoadError(
                    f"Error loading {where}: {type(error).__name__}: {error}. Fix or uninstall "
                    f"the plugin, or skip it with {DISABLED_ENV}={entry_point.name}."
                ) from error
            owners[entry_point.name] = owner
    for module_name in DEFAULT_PLUGINS:
        module: ModuleType = importlib.import_module(module_name)
        manager.register(module, name=module_name)
        owners[module_name] = _ragloom_owner(module_name)
    _check_hook_names(manager)
    return manager, owners


def _check_hook_names(manager: pluggy.PluginManager) -> None:
    """Refuse implementations of hooks ragloom does not define (usually a misspelling)."""
    defined = [name for name, caller in vars(manager.hook).items() if caller.spec is not None]
    for name, caller in vars(manager.hook).items():
        if caller.spec is None and caller.get_hookimpls():
            plugin = caller.get_hookimpls()[0].plugin_name
            raise PluginLoadError(
                f'plugin "{plugin}" implements the hook "{name}", which ragloom does not define.'
                f"{suggestion(name, defined)} Hooks: {listing(defined)} (ragloom.hookspecs)."
            )


def build_registry(manager: pluggy.PluginManager, owners: dict[str, Owner]) -> Registry:
    """Call every plugin's ``register_components`` with a ``register`` bound to that plugin."""
    registry = Registry()
    for implementation in manager.hook.register_components.get_hookimpls():
        owner = owners[implementation.plugin_name]
        try:
            implementation.function(register=Registrar(registry, owner))
        except RagloomError:
            raise
        except Exception as error:
            raise PluginLoadError(
                f'plugin "{owner.plugin}" ({owner.distribution} {owner.version}) failed in '
                f"register_components: {type(error).__name__}: {error}"
            ) from error
    return registry


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry (plugins are discovered once, on first call)."""
    return build_registry(*plugin_manager())
