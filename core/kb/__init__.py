"""Knowledge bases: passages, their embeddings, a manifest, and the indexes derived from them.

A knowledge base (KB) is a directory::

    manifest.json        encoder fingerprint, dim, count, passages checksum, ragloom version
    passages.arrow       Arrow IPC file, memory-mapped; row i has id i (columns id, title, text,
                         source_id)
    embeddings.npy       float32 or float16 [count, dim], memory-mapped
    indexes/<type>-<params>/
        manifest.json    index type and build parameters, dim, metric, count, encoder
                         fingerprint and passages checksum of the KB it was built from
        index/           the index's own files (Index.save)

Nothing in a KB is ever unpickled.
"""

from .build import build_knowledge_base
from .documents import Document, read_documents, split_words
from .knowledge_base import KnowledgeBase
from .manifest import IndexManifest, KBManifest

__all__ = [
    "Document",
    "IndexManifest",
    "KBManifest",
    "KnowledgeBase",
    "build_knowledge_base",
    "read_documents",
    "split_words",
]
