"""Retriever ``hybrid``: two or more member retrievers, their rankings fused into one.

Each member is a retriever declared in its own named table (``[retriever.members.NAME]``: any
registered retriever, a third-party one or another hybrid) and built as the pipeline builds a
top-level one, so it keeps its own index and caches. Every member gets the same
:class:`ragloom.protocols.Questions`, so the questions are encoded once however many members
read their vectors, and none if no member does. Each returns ``max(depth, k)`` candidates; their
union is ranked by one of two fusions (rank ties by the best rank any member gave, then by id):

- ``rrf``, reciprocal rank fusion (Cormack et al. 2009): ``Σ_m w_m / (rrf_k + rank_m(d))`` over
  the members that returned ``d`` (ranks from 1);
- ``linear``: ``Σ_m w_m · norm_m(d)``, where ``norm_m`` min-max normalizes member ``m``'s doc
  scores over its own candidates of that question to [0, 1]. A member that did not return ``d``
  adds 0, as its worst candidate does: pyserini's HybridSearcher fills a missing score with the
  member's minimum, so its normalized ranking is this one with alpha = the sparse member's
  weight over the dense one's.

``scores`` are the fused scores and ``doc_scores`` the fused scores divided by ``temperature``:
fused scores are on no logit scale (RRF's are at most ``Σ w_m / (rrf_k + 1)``), so the
temperature says how peaked the document prior ``softmax(doc_scores)`` is. RRF depends on ranks
only and is not differentiable; ``linear`` is computed with torch from the members' doc scores,
so it is differentiable in the query vectors through every differentiable member (a dense one)
with a positive weight.

Ids are fused as the same passage: members must number one set of passages. Members over
knowledge bases of different passages are refused when built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ragloom.context import BuildContext, Declared
from ragloom.errors import MismatchError
from ragloom.protocols import (
    ChecksEncoder,
    DifferentiableScores,
    Encoder,
    KnowledgeBaseRetriever,
    Passage,
    Questions,
    Retrieved,
    Retriever,
    RetrieverPreflight,
)
from ragloom.suggest import listing, suggestion

MEMBERS = "members"
"""The key of the named member tables: ``[retriever.members.NAME]``."""


class HybridRetriever:
    """Member retrievers fused by rank or by normalized score (see the module docstring)."""

    named_slots: ClassVar[dict[str, str]] = {MEMBERS: "retriever"}

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        fusion: Literal["rrf", "linear"] = Field(
            default="rrf", description="rrf: reciprocal ranks; linear: normalized scores"
        )
        rrf_k: int = Field(default=60, ge=0, description="the constant k of 1 / (k + rank)")
        depth: int = Field(
            default=100, ge=1, description="candidates taken from each member (at least n_docs)"
        )
        weights: dict[str, Annotated[float, Field(ge=0)]] = Field(
            default_factory=dict, description="a weight per member name (default 1.0 each)"
        )
        temperature: float = Field(
            default=1.0, gt=0, description="the document prior is softmax(fused / temperature)"
        )

    def __init__(self, members: Mapping[str, Retriever], params: Params) -> None:
        self.members = dict(members)
        self.params = params
        self.weights = {name: params.weights.get(name, 1.0) for name in self.members}
        self.doc_scores_differentiable = params.fusion == "linear" and any(
            _differentiable(member) and self.weights[name] > 0
            for name, member in self.members.items()
        )
        kbs = [m.kb for m in self.members.values() if isinstance(m, KnowledgeBaseRetriever)]
        _check_same_passages(self.members)
        if kbs and len(kbs) == len(self.members):
            # KnowledgeBaseRetriever: every member searches the same passages; the KB shown is
            # one with passage vectors if any member's has them (the demo re-encodes its edits)
            self.kb = next((kb for kb in kbs if kb.manifest.dim > 0), kbs[0])
            self.index_directory = None  # several indexes, one per member

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> HybridRetriever:
        declared: dict[str, Declared] = children[MEMBERS]
        return cls({name: member.build(context) for name, member in declared.items()}, params)

    @classmethod
    def check_table(
        cls, params: Any, pipeline: Any, **children: Any
    ) -> list[tuple[str | None, str]]:
        """Two or more members, weights naming members, ``depth`` at least ``n_docs``."""
        names = list(children[MEMBERS])
        problems: list[tuple[str | None, str]] = []
        if len(names) < 2:
            problems.append(
                (
                    MEMBERS,
                    f'declares one retriever ("{names[0]}"), but a hybrid fuses two or more. '
                    f"Add another member table beside it, or declare that retriever on its own "
                    f"in place of the hybrid.",
                )
            )
        for name in params.weights:
            if name not in names:
                problems.append(
                    (
                        "weights",
                        f'names "{name}", which is no member.{suggestion(name, names)} The '
                        f"members are: {listing(names)}.",
                    )
                )
        if (
            params.weights
            and len(names) >= 2
            and not any(params.weights.get(n, 1.0) for n in names)
        ):
            problems.append(("weights", "are all 0: no member would count. Give one a weight."))
        n_docs = getattr(pipeline, "n_docs", None)
        if n_docs is not None and params.depth < n_docs:
            problems.append(
                (
                    "depth",
                    f"= {params.depth} is below [pipeline] n_docs = {n_docs}: each member would "
                    f"give fewer candidates than the hybrid returns. Set depth to {n_docs} or "
                    f"more (it is how many candidates each member returns), or lower n_docs.",
                )
            )
        return problems

    @classmethod
    def preflight(
        cls,
        params: Any,
        context: BuildContext,
        encoder_fingerprint: str | None,
        **children: Any,
    ) -> tuple[list[str], list[str]]:
        """The members' own notes and problems, each naming the member's table."""
        declared: dict[str, Declared] = children[MEMBERS]
        notes = [
            f"[retriever] hybrid of {', '.join(declared)} by {params.fusion}, "
            f"{params.depth} candidates from each"
        ]
        problems: list[str] = []
        for name, member in declared.items():
            if not isinstance(member.component, RetrieverPreflight):
                continue
            found, refused = member.component.preflight(
                member.params, context, encoder_fingerprint, **member.children
            )
            notes.extend(_in_member(name, line) for line in found)
            problems.extend(_in_member(name, line) for line in refused)
        return notes, problems

    def check_encoder(self, encoder: Encoder) -> None:
        """Every member that checks the encoder checks it."""
        for member in self.members.values():
            if isinstance(member, ChecksEncoder):
                member.check_encoder(encoder)

    def retrieve(self, questions: Questions, k: int) -> Retrieved:
        depth = max(self.params.depth, k)
        found = {name: member.retrieve(questions, depth) for name, member in self.members.items()}
        linear = self.params.fusion == "linear"
        normalized = {name: _normalized(r.doc_scores, r.ids) for name, r in found.items()}
        batch = len(questions)
        ids = torch.full((batch, k), -1, dtype=torch.int64)
        fused_values = torch.full((batch, k), float("-inf"))
        # per member, the column of each fused document in its results (its depth: not found)
        columns = {name: torch.full((batch, k), r.ids.shape[1]) for name, r in found.items()}
        passages: list[list[Passage]] = []
        for b in range(batch):
            ranked = self._fuse(b, found, normalized)[:k]
            row = []
            for j, candidate in enumerate(ranked):
                ids[b, j] = candidate.id
                fused_values[b, j] = candidate.value
                for name, column in candidate.columns.items():
                    columns[name][b, j] = column
                row.append(replace(candidate.passage, score=candidate.value))
            passages.append(row)
        missing = ids < 0
        if linear:
            fused = self._linear(normalized, columns).masked_fill(missing, float("-inf"))
        else:
            fused = fused_values
        return Retrieved(
            ids=ids,
            scores=fused.detach().to("cpu", torch.float32),
            doc_scores=fused / self.params.temperature,
            passages=passages,
        )

    def _fuse(
        self, b: int, found: dict[str, Retrieved], normalized: dict[str, torch.Tensor]
    ) -> list[_Candidate]:
        """Question ``b``'s candidates from every member, best first."""
        candidates: dict[int, _Candidate] = {}
        for name, retrieved in found.items():
            weight = self.weights[name]
            norms = normalized[name][b].detach().tolist()
            row_ids = retrieved.ids[b].tolist()
            for column, passage in zip(range(len(row_ids)), retrieved.passages[b], strict=False):
                doc = row_ids[column]
                candidate = candidates.setdefault(doc, _Candidate(doc, passage, column + 1))
                candidate.best_rank = min(candidate.best_rank, column + 1)
                candidate.columns[name] = column
                if self.params.fusion == "rrf":
                    candidate.value += weight / (self.params.rrf_k + column + 1)
                else:
                    candidate.value += weight * norms[column]
        return sorted(candidates.values(), key=lambda c: (-c.value, c.best_rank, c.id))

    def _linear(
        self, normalized: dict[str, torch.Tensor], columns: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """``Σ_m w_m · norm_m`` at the fused documents, with torch (differentiable)."""
        total: torch.Tensor | None = None
        for name, norms in normalized.items():
            padded = torch.cat([norms, norms.new_zeros((norms.shape[0], 1))], dim=1)
            term = self.weights[name] * padded.gather(1, columns[name].to(norms.device))
            total = term if total is None else total + term.to(total.device)
        assert total is not None
        return total.float()


@dataclass
class _Candidate:
    """A document some member returned: its fused value so far, the best rank a member gave
    it, and its column in each member's results."""

    id: int
    passage: Passage
    best_rank: int
    value: float = 0.0
    columns: dict[str, int] = field(default_factory=dict)


def _normalized(doc_scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``doc_scores`` min-max normalized to [0, 1] over each row's found documents (1 where they
    all score the same), 0 where none was found; differentiable, never NaN."""
    valid = ids.to(doc_scores.device) >= 0
    scores = doc_scores.float().masked_fill(~valid, 0.0)
    any_found = valid.any(dim=1, keepdim=True)
    low = scores.masked_fill(~valid, float("inf")).min(dim=1, keepdim=True).values
    high = scores.masked_fill(~valid, float("-inf")).max(dim=1, keepdim=True).values
    low = torch.where(any_found, low, torch.zeros_like(low))
    span = torch.where(any_found, high - low, torch.zeros_like(low))
    spread = span > 0
    scaled = (scores - low) / torch.where(spread, span, torch.ones_like(span))
    return torch.where(spread, scaled, torch.ones_like(scaled)).masked_fill(~valid, 0.0)


def _differentiable(member: Retriever) -> bool:
    return isinstance(member, DifferentiableScores) and member.doc_scores_differentiable


def _check_same_passages(members: Mapping[str, Retriever]) -> None:
    """Refuse members over knowledge bases of different passages: their ids would be fused as
    the same passage."""
    checksums = {
        name: member.kb.manifest.passages_sha256
        for name, member in members.items()
        if isinstance(member, KnowledgeBaseRetriever)
    }
    if len(set(checksums.values())) > 1:
        kinds = ", ".join(f"{name}: {checksum[:16]}" for name, checksum in checksums.items())
        raise MismatchError(
            f"[retriever] {MEMBERS} search knowledge bases of different passages ({kinds}), and "
            f"a hybrid fuses passage ids as the same passage. Point every member's kb at one "
            f"knowledge base (or KBs built from the same documents)."
        )


def _in_member(name: str, line: str) -> str:
    """A member's preflight line, which names ``[retriever...]``, as the member's table."""
    table = f"[retriever.{MEMBERS}.{name}"
    if line.startswith("[retriever"):
        return table + line.removeprefix("[retriever")
    return f"{table}] {line}"
