"""Small components that exercise the spec and pipeline machinery (slots, literals, defaults).

They stand in for later built-ins in tests of the core only; they are not registered anywhere but
in the ``toy_registry`` fixture.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragloom.context import BuildContext, Declared
from ragloom.registry import Registrar


class ToyRetriever:
    """A retriever table with a nested index slot and typed parameters."""

    slots: ClassVar[dict[str, str]] = {"index": "index"}

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        kb: str
        cache: bool = False

    def __init__(self, params: Params, index: Declared) -> None:
        self.params = params
        self.index = index

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> ToyRetriever:
        return cls(params, **children)


class ToyGenerator:
    """A generator table with a literal choice, a dtype and a path."""

    built = 0

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        path: str
        attention: Literal["eager", "sdpa", "flash"] = "sdpa"
        temperature: float = Field(default=1.0, gt=0)
        layers: list[int] = []

    def __init__(self, params: Params) -> None:
        ToyGenerator.built += 1
        self.params = params

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> ToyGenerator:
        return cls(params)


class BareGenerator(ToyGenerator):
    """A generator type that takes no keys at all."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")


def register_toys(register: Registrar) -> None:
    register("retriever", "toy", ToyRetriever, description="test retriever")
    register("generator", "toy", ToyGenerator, description="test generator")
    register(
        "index",
        "needs-missing",
        "no_such_module_anywhere:Thing",
        description="needs a module that is not installed",
        requires=["no_such_module_anywhere"],
        install="pip install 'ragloom[nothing]'",
    )
