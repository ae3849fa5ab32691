"""Knowledge bases of packaged corpora: ``kb = "asset:wikipedia"`` is the embedded Wikipedia
sample (:mod:`ragloom.kb.wikipedia`) encoded by the pipeline's own encoder, built into the cache
(:func:`ragloom.assets.cache_directory`) on first use and found there afterwards, one per encoder
fingerprint (or passages only, without an encoder, for ``bm25``). The names are
:data:`ragloom.assets.KNOWLEDGE_BASES`."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import atomic, locks
from ..assets import ASSET_PREFIX, KNOWLEDGE_BASES, AssetError, cache_directory
from ..protocols import Encoder
from ..suggest import listing, suggestion
from .build import build_knowledge_base
from .documents import passages
from .manifest import NO_ENCODER
from .wikipedia import CREDIT, wikipedia_documents

log = logging.getLogger(__name__)


def knowledge_base(reference: str, encoder: Encoder | None, encoder_type: str) -> Path:
    """``"asset:wikipedia"`` → a KB of the embedded corpus encoded by ``encoder`` (None: its
    passages only), built into the cache on first use and found there afterwards (one per
    encoder fingerprint)."""
    name = reference.removeprefix(ASSET_PREFIX)
    if name not in KNOWLEDGE_BASES:
        raise AssetError(
            f'"{reference}": no packaged knowledge base "{name}".'
            f"{suggestion(name, KNOWLEDGE_BASES)} Packaged: {listing(KNOWLEDGE_BASES)}."
        )
    fingerprint = encoder.fingerprint if encoder is not None else NO_ENCODER.fingerprint
    target = cache_directory() / "kb" / f"{name}-{fingerprint}"
    atomic.recover_directory(target)
    if (target / "manifest.json").is_file():
        return target
    with locks.exclusive(target):  # concurrent first uses build it once
        if not (target / "manifest.json").is_file():
            log.info("building the %s knowledge base in %s (once)", name, target)
            build_knowledge_base(
                passages(wikipedia_documents(), 100),
                encoder,
                target,
                encoder_type=encoder_type,
                batch_size=64,
                source={"asset": name, "split_words": 100, "credit": CREDIT},
                warn_truncation=False,  # its passages are fixed: what is cut is a note
            )
    return target
