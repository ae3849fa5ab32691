"""A reranker that needs no model: the retriever's candidates re-scored by the share of the
question's words each holds, the best ``k`` kept, best first (ties in retrieval order)."""

import re

from pydantic import BaseModel, ConfigDict, Field

from ragloom.protocols import Passage, Retrieved


def words(text):
    return set(re.findall(r"\w+", text.lower()))


class WordOverlapReranker:
    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        candidates: int = Field(default=20, ge=1)  # every reranker's Params has it
        temperature: float = Field(default=1.0, gt=0)

    def __init__(self, params):
        self.params = params

    @classmethod
    def from_spec(cls, params, context, **children):
        return cls(params)

    def score(self, question, passage):
        asked = words(question)
        return len(asked & words(f"{passage.title} {passage.text}")) / max(len(asked), 1)

    def rerank(self, questions, retrieved, k):
        import torch

        rows = len(questions)
        ids = torch.full((rows, k), -1, dtype=torch.int64)
        scores = torch.full((rows, k), float("-inf"))
        vectors = None
        if retrieved.doc_vectors is not None:
            vectors = retrieved.doc_vectors.new_zeros((rows, k, retrieved.doc_vectors.shape[2]))
        kept = []
        for row, (question, passages) in enumerate(zip(questions, retrieved.passages, strict=True)):
            found = [(j, p) for j, p in enumerate(passages) if p.id >= 0]
            ranked = sorted(found, key=lambda item: -self.score(question, item[1]))[:k]
            kept.append([])
            for place, (column, passage) in enumerate(ranked):
                score = self.score(question, passage)
                ids[row, place], scores[row, place] = passage.id, score
                kept[-1].append(Passage(passage.id, passage.title, passage.text, score))
                if vectors is not None:
                    vectors[row, place] = retrieved.doc_vectors[row, column]
        return Retrieved(ids, scores, scores / self.params.temperature, kept, vectors)
