"""The registry: every component ragloom can build, keyed by kind and short name.

Names resolve only through here. A spec says ``type = "faiss-exact"``, never an import path; the
only import paths are the ones built-ins and plugins registered themselves.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import DuplicateComponentError, MissingExtraError, UnknownComponentError
from .kinds import KIND_NAMES
from .suggest import listing, suggestion

KINDS: tuple[str, ...] = KIND_NAMES
"""The registry's kinds, by name (the table: :data:`ragloom.kinds.KINDS`)."""


@dataclass(frozen=True)
class Owner:
    """Who registered a component: a distribution (with version) or ragloom itself."""

    distribution: str
    version: str
    plugin: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} (plugin {self.plugin})"


@dataclass(frozen=True)
class Entry:
    """One registered component.

    ``target`` is the component itself or a ``"module:attribute"`` string loaded on first use.
    ``requires`` lists the modules it needs beyond ragloom's own dependencies; ``install`` is the
    command that installs them.
    """

    kind: str
    name: str
    target: Any
    description: str
    requires: tuple[str, ...]
    install: str | None
    owner: Owner

    def missing_modules(self) -> list[str]:
        """The modules of ``requires`` that are not importable here."""
        return [module for module in self.requires if importlib.util.find_spec(module) is None]


class Registry:
    """Components by kind and name; loads lazily registered targets on first use."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}
        self._loaded: dict[tuple[str, str], Any] = {}

    def add(self, entry: Entry) -> None:
        """Add ``entry``; a second entry for the same kind and name is an error naming both."""
        if entry.kind not in KINDS:
            raise UnknownComponentError(
                f'{entry.owner} registered "{entry.name}" under the unknown kind "{entry.kind}".'
                f"{suggestion(entry.kind, KINDS)} Kinds: {listing(KINDS)}."
            )
        key = (entry.kind, entry.name)
        previous = self._entries.get(key)
        if previous is not None:
            raise DuplicateComponentError(
                f'{entry.kind} "{entry.name}" is registered twice: by {previous.owner} and by '
                f"{entry.owner}. Uninstall one of them, or block one with "
                f"RAGLOOM_DISABLED_PLUGINS=<plugin name>."
            )
        self._entries[key] = entry

    def names(self, kind: str) -> list[str]:
        """The registered names of ``kind``, sorted."""
        return sorted(name for entry_kind, name in self._entries if entry_kind == kind)

    def entries(self, kind: str | None = None) -> list[Entry]:
        """All entries (of ``kind`` if given), sorted by kind order then name."""
        selected = [e for e in self._entries.values() if kind is None or e.kind == kind]
        return sorted(selected, key=lambda e: (KINDS.index(e.kind), e.name))

    def entry(self, kind: str, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises with a suggestion and the known names."""
        found = self._entries.get((kind, name))
        if found is None:
            raise UnknownComponentError(unknown_name_message(kind, name, self.names(kind)))
        return found

    def load(self, kind: str, name: str) -> Any:
        """The component class for ``name``, importing it on first use.

        Raises :class:`MissingExtraError` naming the install command when a required module is
        missing; an import error inside the component's module propagates with its traceback.
        """
        key = (kind, name)
        if key in self._loaded:
            return self._loaded[key]
        entry = self.entry(kind, name)
        missing = entry.missing_modules()
        if missing:
            how = f"Install it with: {entry.install}" if entry.install else "Install them."
            raise MissingExtraError(
                f'{kind} "{name}" needs {", ".join(missing)}, which is not installed. {how}'
            )
        target = entry.target
        if isinstance(target, str):
            target = import_target(target)
        self._loaded[key] = target
        return target


def unknown_name_message(kind: str, name: str, known: Sequence[str]) -> str:
    """The message for a name nobody registered under ``kind``."""
    return (
        f'"{name}" is not a registered {kind} type.{suggestion(name, known)} '
        f"Registered {kind} types: {listing(known)}. If it comes from a plugin, install the "
        f"plugin; `ragloom plugins` lists what is registered."
    )


def import_target(target: str) -> Any:
    """Import ``"package.module:attribute"``."""
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ImportError(f'module "{module_name}" has no attribute "{attribute}"') from None


class Registrar:
    """The ``register`` callable handed to ``register_components``, bound to one plugin."""

    def __init__(self, registry: Registry, owner: Owner) -> None:
        self._registry = registry
        self._owner = owner

    def __call__(
        self,
        kind: str,
        name: str,
        component: Any,
        *,
        description: str = "",
        requires: Iterable[str] = (),
        install: str | None = None,
    ) -> None:
        """Register ``component`` (a class, or a ``"module:attribute"`` string) as kind/name."""
        self._registry.add(
            Entry(
                kind=kind,
                name=name,
                target=component,
                description=description,
                requires=tuple(requires),
                install=install,
                owner=self._owner,
            )
        )
