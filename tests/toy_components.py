"""Small components that exercise the spec and pipeline machinery (slots, literals, defaults).

They stand in for later built-ins in tests of the core only; they are not registered anywhere but
in the ``toy_registry`` fixture.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragloom.context import BuildContext, Declared
from ragloom.protocols import Passage, Questions, Retrieved
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


class ToyKeywordRetriever:
    """A retriever that reads the questions' text: passages ranked by the words they share."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        passages: list[str]

    def __init__(self, params: Params) -> None:
        self.passages = params.passages

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> ToyKeywordRetriever:
        return cls(params)

    def retrieve(self, questions: Questions, k: int) -> Retrieved:
        import torch

        rows = []
        for text in questions.texts:
            words = set(text.lower().split())
            shared = [len(words & set(p.lower().split())) for p in self.passages]
            order = sorted(range(len(self.passages)), key=lambda i: (-shared[i], i))[:k]
            rows.append([Passage(i, "", self.passages[i], float(shared[i])) for i in order])
        scores = torch.tensor([[p.score for p in row] for row in rows])
        return Retrieved(
            ids=torch.tensor([[p.id for p in row] for row in rows]),
            scores=scores,
            doc_scores=scores,
            passages=rows,
        )


class RefusingEncoder:
    """An encoder that must never be built: a pipeline whose retriever reads text needs none."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> RefusingEncoder:
        raise AssertionError("the encoder was built although nothing needs query vectors")


def register_toys(register: Registrar) -> None:
    register("retriever", "toy", ToyRetriever, description="test retriever")
    register("retriever", "toy-keywords", ToyKeywordRetriever, description="reads text")
    register("encoder", "refusing", RefusingEncoder, description="must not be built")
    register("generator", "toy", ToyGenerator, description="test generator")
    register(
        "index",
        "needs-missing",
        "no_such_module_anywhere:Thing",
        description="needs a module that is not installed",
        requires=["no_such_module_anywhere"],
        install="pip install 'ragloom[nothing]'",
    )
