"""The plugin that registers ragloom's built-in components from ``registry.toml``.

It goes through the same ``register_components`` hook as any third-party plugin. Entries name
``module:attribute`` targets, so a component's module is imported only when a spec uses it.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ragloom.hookspecs import hookimpl
from ragloom.registry import KINDS, Registrar

MANIFEST = "registry.toml"


class _BuiltinEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str
    description: str
    extra: str | None = None


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    extras: dict[str, list[str]] = {}
    components: dict[str, dict[str, _BuiltinEntry]] = {}


def read_manifest() -> _Manifest:
    """``registry.toml`` as shipped inside the ``ragloom`` package, validated."""
    text = importlib.resources.files("ragloom").joinpath(MANIFEST).read_text(encoding="utf-8")
    raw: dict[str, Any] = tomllib.loads(text)
    try:
        manifest = _Manifest.model_validate(raw)
    except ValidationError as error:  # a packaging bug, not a user error: keep pydantic's detail
        raise RuntimeError(f"ragloom's {MANIFEST} is malformed:\n{error}") from error
    for kind, entries in manifest.components.items():
        if kind not in KINDS:
            raise RuntimeError(f"ragloom's {MANIFEST}: unknown kind [components.{kind}]")
        for name, entry in entries.items():
            if entry.extra is not None and entry.extra not in manifest.extras:
                raise RuntimeError(
                    f"ragloom's {MANIFEST}: [components.{kind}.{name}] names the extra "
                    f'"{entry.extra}", which [extras] does not define'
                )
    return manifest


@hookimpl
def register_components(register: Registrar) -> None:
    manifest = read_manifest()
    for kind, entries in manifest.components.items():
        for name, entry in entries.items():
            requires = manifest.extras.get(entry.extra, []) if entry.extra else []
            register(
                kind,
                name,
                entry.target,
                description=entry.description,
                requires=requires,
                install=f"pip install 'ragloom[{entry.extra}]'" if entry.extra else None,
            )
