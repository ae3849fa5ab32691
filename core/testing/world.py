"""A generated world of facts in two editions, for training and hot-swap experiments.

Every entity has one value per attribute; edition ``"B"`` gives every fact another value than
edition ``"A"`` (same entities, changed attributes, as a world four years on). Each fact is one
passage, ``"The capital of Velkaro is Dunmi."``, titled by its entity, and one question,
``"What is the capital of Velkaro?"``, answered by the value. Names are pronounceable nonsense, so
a model can know them only from the passages it reads.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYLLABLES = (
    "ka lo mi ren tor vel sha dun pi qua zor bel nim fa gri tho wen sul ra mek "
    "dai jo ru sef lin bo cra har ves tam"
).split()
ATTRIBUTES = ("capital", "leader", "river", "currency", "mountain", "poet")
EDITIONS = ("A", "B")


def _name(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(syllables)).capitalize()


def _names(rng: random.Random, count: int, syllables: int, taken: set[str]) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = _name(rng, syllables)
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


@dataclass(frozen=True)
class World:
    """Every entity has every attribute; ``values[edition][entity, attribute]`` is the answer."""

    entities: list[str]
    attributes: tuple[str, ...]
    values: dict[str, dict[tuple[str, str], str]]

    def facts(self) -> list[tuple[str, str]]:
        return [(entity, attribute) for entity in self.entities for attribute in self.attributes]

    def documents(self, edition: str) -> list[dict[str, str]]:
        """One passage per fact of ``edition``: ``title`` (the entity) and ``text``."""
        values = self.values[edition]
        return [
            {"title": e, "text": f"The {attribute} of {e} is {values[e, attribute]}."}
            for e, attribute in self.facts()
        ]

    def questions(
        self, edition: str, entities: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """One question per fact of ``entities`` (default all), answered as in ``edition``."""
        chosen = self.entities if entities is None else entities
        return [
            {
                "question": f"What is the {attribute} of {entity}?",
                "answers": [self.values[edition][entity, attribute]],
            }
            for entity in chosen
            for attribute in self.attributes
        ]

    def texts(self) -> list[str]:
        """Every passage, question and answer of both editions (to train a tokenizer on)."""
        lines = []
        for edition in EDITIONS:
            lines += [row["text"] for row in self.documents(edition)]
            for row in self.questions(edition):
                lines += [row["question"], *row["answers"]]
        return lines


def generate_world(
    entities: int, attributes: int = 2, values_per_attribute: int = 30, seed: int = 0
) -> World:
    """A seeded world; values are drawn from a pool per attribute, and edition B redraws every
    fact's value from the same pool, never keeping edition A's."""
    if not 1 <= attributes <= len(ATTRIBUTES):
        raise ValueError(f"attributes must be 1..{len(ATTRIBUTES)}, got {attributes}")
    if values_per_attribute < 2:
        raise ValueError("values_per_attribute must be at least 2 (editions must differ)")
    rng = random.Random(seed)
    taken: set[str] = set()
    names = _names(rng, entities, 3, taken)
    chosen = ATTRIBUTES[:attributes]
    pools = {attribute: _names(rng, values_per_attribute, 2, taken) for attribute in chosen}
    first = {(e, a): rng.choice(pools[a]) for e in names for a in chosen}
    second = {
        fact: rng.choice([v for v in pools[fact[1]] if v != value]) for fact, value in first.items()
    }
    return World(names, chosen, {"A": first, "B": second})


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """``rows`` as one JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
