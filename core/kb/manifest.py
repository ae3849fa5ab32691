"""The manifests of a knowledge base and of each index built from it.

A manifest records, besides what the artifact holds, every file of it with its size and xxh3
checksum (``files``), computed when the artifact is sealed. Sizes are checked whenever an
artifact is opened, checksums before an index file reaches a native loader (faiss, hnswlib) and
by ``ragloom kb info --verify``. Manifests are parsed strictly: ``"dim": "32"`` is refused, not
read as 32.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .. import atomic
from ..artifacts import json_marker
from ..digest import file_xxh3
from ..errors import IndexFileError
from ..version import ragloom_version as ragloom_version

MANIFEST_FILE = "manifest.json"

KB_KIND = json_marker("knowledge base", MANIFEST_FILE, format="ragloom-kb")
INDEX_KIND = json_marker(
    "index", MANIFEST_FILE, type=..., encoder_fingerprint=..., passages_sha256=...
)

M = TypeVar("M", bound="Manifest")


class Manifest(BaseModel):
    """A JSON manifest file, written atomically and read with clear errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def write(self, directory: Path) -> None:
        atomic.write_text(directory / MANIFEST_FILE, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls: type[M], directory: Path, what: str) -> M:
        path = directory / MANIFEST_FILE
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise IndexFileError(
                f"{directory} is not a {what}: it has no {MANIFEST_FILE}."
            ) from None
        except OSError as error:
            raise IndexFileError(f"{path} cannot be read ({error.strerror}).") from None
        try:
            return cls.model_validate_json(text, strict=True)
        except ValidationError as error:
            fields = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}" for e in error.errors()
            )
            raise IndexFileError(
                f"{path} is not a valid {what} manifest ({fields}). It was damaged, edited by "
                f"hand or written by another version; build it again."
            ) from None


class FileRecord(BaseModel):
    """One file of an artifact: its size in bytes and the xxh3-128 of its content."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    size: int
    xxh3_128: str


def record_files(directory: Path, names: Iterable[str] | None = None) -> dict[str, FileRecord]:
    """The files ``names`` of ``directory`` (default: every file under it but the manifest), by
    relative path, sized and checksummed."""
    if names is None:
        paths = [p for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE]
    else:
        paths = [directory / name for name in names]
    return {
        path.relative_to(directory).as_posix(): FileRecord(
            size=path.stat().st_size, xxh3_128=file_xxh3(path)
        )
        for path in paths
    }


def file_problems(
    directory: Path, files: dict[str, FileRecord], checksums: bool, only: str = ""
) -> list[str]:
    """What differs between the files under ``directory`` (those whose path starts with
    ``only``) and their ``files`` records: missing, resized, or (with ``checksums``) changed."""
    problems = []
    for name, record in files.items():
        if not name.startswith(only):
            continue
        if Path(name).is_absolute() or ".." in Path(name).parts:
            problems.append(f"its manifest names {name!r}, a file outside {directory}")
            continue
        path = directory / name
        try:
            size = path.stat().st_size
        except OSError:
            problems.append(f"{path} is missing")
            continue
        if size != record.size:
            problems.append(f"{path} has {size} bytes, its manifest says {record.size}")
        elif checksums and (actual := file_xxh3(path)) != record.xxh3_128:
            problems.append(
                f"{path} has checksum {actual}, its manifest says {record.xxh3_128} (the same "
                f"size: bytes were changed in place)"
            )
    return problems


def verify_files(
    directory: Path, files: dict[str, FileRecord] | None, checksums: bool, rebuild: str
) -> None:
    """Raise :class:`IndexFileError` naming each damaged file of the artifact at ``directory``
    and ``rebuild`` (the command that makes it again); nothing to check without records."""
    problems = file_problems(directory, files or {}, checksums)
    if problems:
        raise IndexFileError(f"{'; '.join(problems)}. The artifact is damaged: {rebuild}.")


UNVERIFIED = "unverified"
"""The encoder type and fingerprint of a KB imported from transformers' format without an
encoder to check its embeddings with (``ragloom kb import-hf`` without ``--spec``)."""


class EncoderRecord(BaseModel):
    """Which encoder made the embeddings: its registered type and its fingerprint."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    fingerprint: str

    @property
    def unverified(self) -> bool:
        """Whether no encoder was recorded: the KB was imported without one (:data:`UNVERIFIED`),
        so no question encoder can be checked against it."""
        return self.fingerprint == UNVERIFIED

    def described(self) -> str:
        """``dpr 3f2a...`` (type and fingerprint), or what an unverified record means."""
        if self.unverified:
            return "none recorded (imported without --spec)"
        return f"{self.type} {self.fingerprint}"


NO_ENCODER = EncoderRecord(type="none", fingerprint="none")
"""What a KB of passages only records (built without an ``[encoder]``, for text retrievers such
as ``bm25``): its ``dim`` is 0 and ``embeddings.npy`` an empty ``[count, 0]`` matrix."""


class KBManifest(Manifest):
    format: Literal["ragloom-kb"] = "ragloom-kb"
    version: Literal[1] = 1
    ragloom_version: str
    count: int
    dim: int
    embeddings_dtype: Literal["float32", "float16"]
    encoder: EncoderRecord
    passages_sha256: str
    source: dict[str, Any] = {}
    files: dict[str, FileRecord] | None = None  # None: written before ragloom recorded files


class IndexManifest(Manifest):
    format: Literal["ragloom-index"] = "ragloom-index"
    type: str
    params: dict[str, Any]
    dim: int
    metric: str
    count: int
    encoder_fingerprint: str
    passages_sha256: str
    build_seconds: float
    ragloom_version: str
    rows: list[int] | None = None  # [start, stop) for a shard's index
    files: dict[str, FileRecord] | None = None  # None: written before ragloom recorded files
