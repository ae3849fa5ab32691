"""A retriever that reads the questions' text: passages ranked by the words they share with it.

It never asks for ``questions.vectors()``, so a pipeline with this retriever never runs its
encoder on the questions. Its corpus is given in its spec table, as ``passages`` (a list of
texts) or ``path`` (a JSONL file of ``{"title": ..., "text": ...}`` lines); row ``i`` is
passage ``i``.
"""

import json
import re

from pydantic import BaseModel, ConfigDict, model_validator

from ragloom.protocols import Passage, PassageText, Retrieved


def words(text):
    return set(re.findall(r"\w+", text.lower()))


class KeywordRetriever:
    doc_scores_differentiable = False  # the DifferentiableScores capability: counts, not q . d

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        passages: list[str] | None = None
        path: str | None = None

        @model_validator(mode="after")
        def _one_corpus(self):
            if (self.passages is None) == (self.path is None):
                raise ValueError("give the corpus as passages = [...] or path = a JSONL file")
            return self

    def __init__(self, passages):
        self.passages = list(passages)
        self._words = [words(f"{p.title} {p.text}") for p in self.passages]

    @classmethod
    def from_spec(cls, params, context, **children):
        if params.passages is not None:
            return cls(PassageText(i, "", text) for i, text in enumerate(params.passages))
        with context.resolve_path(params.path).open(encoding="utf-8") as lines:
            rows = [json.loads(line) for line in lines if line.strip()]
        return cls(PassageText(i, row.get("title", ""), row["text"]) for i, row in enumerate(rows))

    def retrieve(self, questions, k):
        import torch

        ids = torch.full((len(questions), k), -1, dtype=torch.int64)
        scores = torch.full((len(questions), k), float("-inf"))
        found = []
        for row, text in enumerate(questions.texts):
            asked = words(text)
            overlap = [len(asked & passage) for passage in self._words]
            best = sorted(range(len(overlap)), key=lambda i: (-overlap[i], i))[:k]
            ids[row, : len(best)] = torch.tensor(best, dtype=torch.int64)
            scores[row, : len(best)] = torch.tensor([float(overlap[i]) for i in best])
            found.append(
                [
                    Passage(i, self.passages[i].title, self.passages[i].text, float(overlap[i]))
                    for i in best
                ]
            )
        return Retrieved(ids=ids, scores=scores, doc_scores=scores.clone(), passages=found)
