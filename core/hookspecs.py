"""The hooks a ragloom plugin implements.

A plugin is a module (or object) with functions marked ``@ragloom.hookimpl`` whose names match the
specs below. Third-party plugins are found through the ``ragloom`` entry-point group; the built-in
components are registered by the plugin ``ragloom.plugins.builtin`` through the same hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .registry import Registrar

PROJECT = "ragloom"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_components(register: Registrar) -> None:
    """Register components under (kind, name).

    :param register: call ``register(kind, name, component, description=..., requires=...,
        install=...)`` once per component. ``kind`` is the name of one of the kinds in
        :data:`ragloom.kinds.KINDS`; ``component`` is a class satisfying
        :class:`ragloom.protocols.Component`, or a ``"module:attribute"`` string naming one,
        imported only when a spec first uses it.
    """
