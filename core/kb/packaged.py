"""Knowledge bases of packaged corpora: ``kb = "asset:wikipedia"`` is the embedded Wikipedia
sample (:mod:`ragloom.kb.wikipedia`) encoded by the pipeline's own encoder, found in the cache
(:func:`ragloom.assets.cache_directory`), one per encoder fingerprint (or passages only, without
an encoder, for ``bm25``). On first use it is unpacked from the package when the package ships
it prebuilt for that encoder (:mod:`ragloom.kb.prebuilt`: the embedded default's), and built
otherwise. The names are :data:`ragloom.assets.KNOWLEDGE_BASES`."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from .. import atomic, locks
from ..assets import ASSET_PREFIX, KNOWLEDGE_BASES, AssetError, cache_directory
from ..protocols import Encoder
from ..suggest import listing, suggestion
from . import prebuilt
from .build import build_knowledge_base
from .documents import passages
from .edit import passages_copy
from .knowledge_base import KnowledgeBase
from .manifest import MANIFEST_FILE, NO_ENCODER
from .wikipedia import CREDIT, wikipedia_documents

log = logging.getLogger(__name__)

SPLIT_WORDS = 100
EMBEDDINGS_DTYPE = "float16"
"""How packaged KBs store their vectors: half the bytes of float32 (the prebuilt archive ships
in the package), the same recall on the embedded questions (docs/corpus.md)."""


def checked_name(reference: str) -> str:
    name = reference.removeprefix(ASSET_PREFIX)
    if name not in KNOWLEDGE_BASES:
        raise AssetError(
            f'"{reference}": no packaged knowledge base "{name}".'
            f"{suggestion(name, KNOWLEDGE_BASES)} Packaged: {listing(KNOWLEDGE_BASES)}."
        )
    return name


def knowledge_base(reference: str, encoder: Encoder | None, encoder_type: str) -> Path:
    """``"asset:wikipedia"`` → a KB of the embedded corpus encoded by ``encoder`` (None: its
    passages only), made in the cache on first use and found there afterwards (one per
    encoder fingerprint)."""
    name = checked_name(reference)
    if encoder is None:
        return _cached(name, NO_ENCODER.fingerprint, partial(_passages_only, name))
    return _cached(name, encoder.fingerprint, partial(_encoded, name, encoder, encoder_type))


def _cached(name: str, fingerprint: str, make: Callable[[Path], object]) -> Path:
    """The cache's KB of ``name`` for ``fingerprint``, which ``make(target)`` writes when absent
    (once, however many processes and threads first use it at the same time)."""
    target = cache_directory() / "kb" / f"{name}-{fingerprint}"
    atomic.recover_directory(target)
    if not (target / MANIFEST_FILE).is_file():
        with locks.exclusive(target):
            if not (target / MANIFEST_FILE).is_file():
                make(target)
    return target


def _encoded(name: str, encoder: Encoder, encoder_type: str, target: Path) -> None:
    if not _unpacked(name, encoder.fingerprint, target):
        log.info("building the %s knowledge base in %s (once)", name, target)
        build(name, encoder, encoder_type, target)


def _unpacked(name: str, fingerprint: str, target: Path) -> bool:
    """Whether the package's prebuilt ``name`` for ``fingerprint`` was unpacked at ``target``."""
    installed = prebuilt.install(name, fingerprint, target)
    if installed:
        log.info("unpacked the prebuilt %s knowledge base into %s (once)", name, target)
    return installed


def _passages_only(name: str, target: Path) -> None:
    """The passages of the prebuilt KB, byte for byte, when the package ships one (so bm25 over
    them and dense over the prebuilt search the same passages whatever pyarrow writes), or
    built from the corpus."""
    for fingerprint in prebuilt.fingerprints(name):
        shipped = _cached(name, fingerprint, partial(_unpacked, name, fingerprint))
        if (shipped / MANIFEST_FILE).is_file():
            kb = KnowledgeBase.open(shipped)
            passages_copy(kb, target, {**kb.manifest.source, "passages_of": fingerprint})
            log.info("took the %s passages of %s into %s (once)", name, shipped, target)
            return
    log.info("building the %s knowledge base in %s (once)", name, target)
    build(name, None, "none", target)


def first_use(reference: str, fingerprint: str | None) -> str:
    """What the first use of ``reference`` does for an encoder of ``fingerprint`` (validate)."""
    name = reference.removeprefix(ASSET_PREFIX)
    if fingerprint and prebuilt.archive_path(name, fingerprint).is_file():
        return "unpacked on first use (the package ships it prebuilt for this encoder)"
    return (
        "encoded with the encoder on first use (prebuilt only for the embedded default's encoder)"
    )


def build(name: str, encoder: Encoder | None, encoder_type: str, target: Path) -> None:
    """Split and encode the packaged corpus ``name`` into a KB at ``target``."""
    build_knowledge_base(
        passages(wikipedia_documents(), SPLIT_WORDS),
        encoder,
        target,
        encoder_type=encoder_type,
        dtype=EMBEDDINGS_DTYPE,
        batch_size=64,
        source={"asset": name, "split_words": SPLIT_WORDS, "credit": CREDIT},
        warn_truncation=False,  # its passages are fixed: what is cut is a note
    )


def package(
    reference: str, encoder: Encoder, encoder_type: str, folder: Path, rebuild: str
) -> Path:
    """Build the packaged corpus ``reference`` with ``encoder`` from scratch and write it into
    ``folder`` as the prebuilt archive :func:`knowledge_base` unpacks; the archive's path."""
    name = checked_name(reference)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=f".{name}-build-") as scratch:
        kb = Path(scratch) / name
        build(name, encoder, encoder_type, kb)
        return prebuilt.write_archive(kb, name, folder, rebuild)
