"""The kinds of component ragloom builds: the one table the registry, the spec loader, the
pipeline and the docs derive from.

A kind is a registry namespace (``register("index", "hnsw", ...)``), the protocol its built
components satisfy, and where a spec declares one: a top-level table named after the kind
(``[encoder]``), or only nested in another component's table (``[retriever.index]``, through the
parent's ``slots``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .protocols import Encoder, Generator, Index, Marginalizer, Reranker, Retriever

C = TypeVar("C")


@dataclass(frozen=True)
class Kind(Generic[C]):
    """One kind of component; ``C`` is its protocol as mypy sees it (``protocol`` at runtime)."""

    name: str
    protocol: type
    spec_table: bool
    """True: declared in the top-level table ``[<name>]``; False: only nested in a parent's."""
    description: str
    """One line for the docs."""


ENCODER: Kind[Encoder] = Kind("encoder", Encoder, True, "turns questions and passages into vectors")
INDEX: Kind[Index] = Kind(
    "index", Index, False, "searches stored vectors by inner product (a retriever's `index` slot)"
)
RETRIEVER: Kind[Retriever] = Kind(
    "retriever", Retriever, True, "finds the best passages of a knowledge base for each question"
)
RERANKER: Kind[Reranker] = Kind(
    "reranker", Reranker, True, "re-scores the retriever's best candidates and keeps the best"
)
GENERATOR: Kind[Generator] = Kind(
    "generator", Generator, True, "scores and extends answers token by token, given a passage"
)
MARGINALIZER: Kind[Marginalizer] = Kind(
    "marginalizer", Marginalizer, True, "combines the per-passage predictions into one answer"
)

KINDS: tuple[Kind[Any], ...] = (ENCODER, INDEX, RETRIEVER, RERANKER, GENERATOR, MARGINALIZER)
"""Every kind, in the order listings show them."""

KIND_NAMES: tuple[str, ...] = tuple(kind.name for kind in KINDS)

SPEC_TABLES: tuple[str, ...] = tuple(kind.name for kind in KINDS if kind.spec_table)
"""The top-level spec tables that declare a component; each resolves in the kind of its name."""

BY_NAME: dict[str, Kind[Any]] = {kind.name: kind for kind in KINDS}
