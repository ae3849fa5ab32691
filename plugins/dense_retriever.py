"""Retriever ``dense``: a knowledge base plus one of its indexes.

The questions' vectors (from the pipeline's encoder) search the index for passage ids; the
document scores are the exact inner products with the KB's stored embeddings, whatever the index
(differentiable in the query vectors), and the passages come from its Arrow file. The index named by
``[retriever.index]`` is loaded from the KB's cache, or built from the stored embeddings on first
use, so swapping index types never re-encodes the corpus.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ragloom.assets import ASSET_PREFIX
from ragloom.context import BuildContext, Declared
from ragloom.kb import KBManifest, KnowledgeBase, packaged
from ragloom.kb.knowledge_base import encoder_fix, encoder_problem
from ragloom.kb.manifest import MANIFEST_FILE
from ragloom.protocols import Encoder, Passage, Questions, Retrieved, VectorSearch
from ragloom.spec import SpecPath

log = logging.getLogger(__name__)


class DenseRetriever:
    """Maximum inner-product search in a knowledge base (see the module docstring)."""

    slots: ClassVar[dict[str, str]] = {"index": "index"}
    doc_scores_differentiable = True

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        kb: SpecPath = Field(
            description="knowledge base directory (ragloom kb build / import-hf), or "
            '"asset:wikipedia" for the embedded corpus'
        )
        build_index: bool = Field(
            default=True, description="build the index from the stored embeddings if missing"
        )
        allow_mismatch: bool = Field(
            default=False,
            description="use the KB/index even if encoder or passages differ (logged loudly)",
        )
        temperature: float = Field(
            default=1.0,
            gt=0,
            allow_inf_nan=False,
            description="the document prior is softmax(q · d / temperature); 1 as DPR and "
            "transformers' RAG, about 0.05 for encoders of unit vectors (cosine scores)",
        )

    def __init__(
        self,
        kb: KnowledgeBase,
        searcher: VectorSearch,
        params: Params,
        index_directory: Path | None = None,
    ) -> None:
        self.kb = kb
        self.searcher = searcher
        self.params = params
        self.index_directory = index_directory

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> DenseRetriever:
        declared: Declared = children["index"]
        kb = KnowledgeBase.open(cls._kb_path(params, context))
        index = kb.load_index(
            declared, build=params.build_index, allow_mismatch=params.allow_mismatch
        )
        return cls(kb, index, params, kb.index_path(declared))

    @staticmethod
    def _kb_path(params: Any, context: BuildContext) -> Path:
        """The KB directory; ``asset:NAME`` is a packaged corpus encoded by the pipeline's
        encoder, made in the cache on first use (unpacked when the package ships it prebuilt)."""
        if params.kb.startswith(ASSET_PREFIX):
            encoder = context.component("encoder")
            return packaged.knowledge_base(params.kb, encoder, context.types.get("encoder", "?"))
        return context.resolve_path(params.kb)

    @classmethod
    def preflight(
        cls,
        params: Any,
        context: BuildContext,
        encoder_fingerprint: str | None,
        **children: Any,
    ) -> tuple[list[str], list[str]]:
        """What ``ragloom validate`` reports: KB size, index memory estimate, encoder match."""
        if params.kb.startswith(ASSET_PREFIX):
            first_use = packaged.first_use(params.kb, encoder_fingerprint)
            return [f"[retriever] kb {params.kb}: {first_use}"], []
        path = context.resolve_path(params.kb)
        if not (path / MANIFEST_FILE).exists():
            return [f"[retriever] kb {path}: not built yet (ragloom kb build)"], []
        manifest = KBManifest.read(path, "ragloom knowledge base")
        if manifest.dim == 0:
            return [], [
                f"[retriever] kb {path} holds passages only (built without an [encoder]): the "
                f'dense retriever needs their vectors. Use type = "bm25", or build a KB with an '
                f"[encoder]."
            ]
        declared: Declared = children["index"]
        estimate = declared.component.estimate(manifest.count, manifest.dim, declared.params)
        built = KnowledgeBase.index_path_in(path, declared).exists()
        notes = [
            f"[retriever] kb {path}: {manifest.count} passages of dim {manifest.dim} "
            f"({manifest.embeddings_dtype}, memory-mapped)",
            f"[retriever.index] {declared.type}: about {estimate / 2**20:.1f} MiB in memory; "
            + ("built" if built else "built from the stored embeddings on first use"),
        ]
        problems = []
        recorded = manifest.encoder.fingerprint
        if encoder_fingerprint and encoder_fingerprint != recorded and not params.allow_mismatch:
            problem = encoder_problem(
                f"[retriever] kb {path}", manifest, "[encoder]", encoder_fingerprint
            )
            problems.append(f"{problem} {encoder_fix(path, manifest)}")
        return notes, problems

    def check_encoder(self, encoder: Encoder) -> None:
        """Refuse a question encoder other than the one that encoded the KB's passages."""
        self.kb.check_encoder(encoder.fingerprint, self.params.allow_mismatch)

    def retrieve(self, questions: Questions, k: int) -> Retrieved:
        queries = questions.vectors()
        vectors = queries.detach().to("cpu", torch.float32).numpy()
        scores, ids = self.searcher.search(vectors, k)
        doc_vectors = torch.from_numpy(self.kb.vectors(ids))
        exact = doc_vectors.to(device=queries.device, dtype=queries.dtype)
        doc_scores = torch.bmm(queries.unsqueeze(1), exact.transpose(1, 2)).squeeze(1)
        if self.params.temperature != 1.0:  # 1: transformers' doc scores, bit for bit
            doc_scores = doc_scores / self.params.temperature
        flat = ids[ids >= 0]
        texts = {p.id: p for p in self.kb.passages.get(np.unique(flat).tolist())}
        passages = [
            [
                Passage(int(i), texts[int(i)].title, texts[int(i)].text, float(score))
                for i, score in zip(row_ids, row_scores, strict=True)
                if i >= 0
            ]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]
        return Retrieved(
            ids=torch.from_numpy(ids),
            scores=torch.from_numpy(scores),
            doc_scores=doc_scores,
            passages=passages,
            doc_vectors=doc_vectors,
        )
