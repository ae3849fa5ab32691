"""Copies of a knowledge base: a new edition with a few passages rewritten and re-encoded
alone, and the passages alone, without vectors.

The new edition is the paper's hot-swap of knowledge (Lewis et al. 2020, §4.5) in miniature: a
pipeline reads the edited KB instead of the original and answers from the new text, its weights
untouched.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import atomic
from ..digest import file_sha256
from .documents import Document
from .knowledge_base import EMBEDDINGS_FILE, KnowledgeBase, record_kb_files
from .manifest import KB_KIND, NO_ENCODER, KBManifest, ragloom_version
from .passages import PASSAGES_FILE, write_passages

if TYPE_CHECKING:
    from ..protocols import Encoder


def edited_copy(
    kb: KnowledgeBase, out: Path, edits: Mapping[int, tuple[str, str]], encoder: Encoder
) -> KnowledgeBase:
    """Write at ``out`` a copy of ``kb`` whose passages ``edits`` (row → new title and text) are
    replaced and re-encoded by ``encoder`` (which must be the KB's own)."""
    import numpy as np

    kb.check_encoder(encoder.fingerprint)
    for row in edits:
        if not 0 <= row < len(kb):
            raise IndexError(f"passage id {row} is outside 0..{len(kb) - 1}")
    titles, texts = kb.passages.columns(0, len(kb))
    for row, (title, text) in edits.items():
        titles[row], texts[row] = title, text
    with atomic.directory(out, KB_KIND) as staging:
        write_passages(
            staging / PASSAGES_FILE,
            (
                Document(title, text, str(row))
                for row, (title, text) in enumerate(zip(titles, texts, strict=True))
            ),
        )
        embeddings = np.array(kb.embeddings)
        rows = sorted(edits)
        vectors = encoder.encode_passages([titles[r] for r in rows], [texts[r] for r in rows])
        embeddings[rows] = vectors.detach().cpu().numpy().astype(embeddings.dtype)
        np.save(staging / EMBEDDINGS_FILE, embeddings)
        KBManifest(
            **{
                **kb.manifest.model_dump(),
                "ragloom_version": ragloom_version(),
                "passages_sha256": file_sha256(staging / PASSAGES_FILE),
                "source": {**kb.manifest.source, "edited_from": str(kb.directory), "edited": rows},
                "files": record_kb_files(staging),
            }
        ).write(staging)
    return KnowledgeBase.open(out)


def passages_copy(kb: KnowledgeBase, out: Path, source: dict[str, Any]) -> KnowledgeBase:
    """Write at ``out`` a knowledge base of ``kb``'s passages without vectors, as a build
    without an encoder makes one (for ``bm25``), its passages file copied byte for byte: both
    have the same passages checksum, so a hybrid may fuse retrievers over the two."""
    import numpy as np

    with atomic.directory(out, KB_KIND) as staging:
        shutil.copyfile(kb.directory / PASSAGES_FILE, staging / PASSAGES_FILE)
        np.save(staging / EMBEDDINGS_FILE, np.zeros((len(kb), 0), np.float32))
        KBManifest(
            ragloom_version=ragloom_version(),
            count=len(kb),
            dim=0,
            embeddings_dtype="float32",
            encoder=NO_ENCODER,
            passages_sha256=kb.manifest.passages_sha256,
            source=source,
            files=record_kb_files(staging),
        ).write(staging)
    return KnowledgeBase.open(out)
