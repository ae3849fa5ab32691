"""A knowledge base of random unit vectors, for scale benchmarks that need millions of rows
without encoding a corpus. Passage ``i`` reads ``"passage i"``; the encoder record names the
seed, so no real encoder matches it (search it with query vectors, not questions)."""

from __future__ import annotations

from pathlib import Path

from ..kb import KnowledgeBase
from ..kb.build import staged_build
from ..kb.documents import Document
from ..kb.manifest import EncoderRecord
from .index_contract import unit_vectors

CHUNK = 65_536


def random_knowledge_base(out: Path, count: int, dim: int = 768, seed: int = 0) -> KnowledgeBase:
    """A KB at ``out`` holding ``count`` seeded random unit vectors of ``dim``."""
    documents = (Document(f"p{i}", f"passage {i}", str(i)) for i in range(count))
    record = EncoderRecord(type="random", fingerprint=f"random-unit-{dim}-seed{seed}")
    with staged_build(documents, out, fingerprint=record.fingerprint, force=True) as staged:
        embeddings = staged.embeddings(dim, "float32", resume=False)
        for number, start in enumerate(range(0, count, CHUNK)):
            stop = min(start + CHUNK, count)
            embeddings[start:stop] = unit_vectors(stop - start, dim, seed * 100_003 + number)
        embeddings.flush()
        del embeddings
        return staged.publish(out, record, dim, "float32", {"random": count})
