"""``Declared``: a nested component as the spec resolves it and its parent receives it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .context import BuildContext


@dataclass(frozen=True)
class Declared:
    """A nested component as its parent receives it: resolved and validated, not yet built.

    The parent decides when and how to build it (a dense retriever loads a cached index or builds
    one from stored embeddings). ``component`` is the registered class, ``params`` its validated
    ``Params``, ``type`` the registered name, ``children`` its own nested components as its
    ``from_spec`` takes them (a ``Declared`` per slot, a name → ``Declared`` mapping per named
    slot).
    """

    type: str
    component: Any
    params: BaseModel
    children: Mapping[str, Any] = field(default_factory=dict)

    def build(self, context: BuildContext) -> Any:
        """The component built as the pipeline builds a top-level one:
        ``component.from_spec(params, context, **children)`` (a hybrid retriever builds its
        members so)."""
        return self.component.from_spec(self.params, context, **self.children)
