"""Content digests of files (fingerprints and checksums)."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 22


def file_sha256(path: Path, chunk: int = CHUNK) -> str:
    """The sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_xxh3(path: Path, chunk: int = CHUNK) -> str:
    """The 128-bit xxh3 of a file's bytes: the integrity checksum of artifact files (several
    GB/s, so verifying an index before loading it costs little next to reading it)."""
    import xxhash

    digest = xxhash.xxh3_128()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
