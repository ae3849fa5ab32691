"""``Declared``: a nested component as the spec resolves it and its parent receives it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel


@dataclass(frozen=True)
class Declared:
    """A nested component as its parent receives it: resolved and validated, not yet built.

    The parent decides when and how to build it (a dense retriever loads a cached index or builds
    one from stored embeddings). ``component`` is the registered class, ``params`` its validated
    ``Params``, ``type`` the registered name.
    """

    type: str
    component: Any
    params: BaseModel
