"""Prebuilt knowledge bases shipped inside the package, so that a first ``ragloom demo`` answers
without encoding the embedded corpus (4,857 passages: about two minutes on two cores).

``prebuilt/NAME-FINGERPRINT.tar.xz`` is a knowledge base directory exactly as
:func:`~ragloom.kb.build.build_knowledge_base` wrote it, for the encoder of that fingerprint;
``prebuilt/NAME-FINGERPRINT.json`` beside it records the archive's size and SHA-256. Installing
checks the archive against that record, unpacks it into a staging directory, checks every file
against the knowledge base's own manifest (sizes and xxh3) and only then renames it into place.
``ragloom kb package NAME`` makes both files again (:func:`ragloom.kb.packaged.package`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from .. import atomic
from ..digest import CHUNK
from ..errors import IndexFileError
from .manifest import KB_KIND, MANIFEST_FILE, KBManifest, file_problems

log = logging.getLogger(__name__)

FOLDER = Path(__file__).parent / "prebuilt"
"""Where the package keeps its prebuilt archives."""

ARCHIVE_SUFFIX = ".tar.xz"


class ArchiveRecord(BaseModel):
    """What ``NAME-FINGERPRINT.json`` says of its archive: the packaged corpus, the encoder
    fingerprint its vectors belong to, the archive's size in bytes and SHA-256, and the
    passages it holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    fingerprint: str
    size: int
    sha256: str
    count: int
    ragloom_version: str
    rebuild: str


def archive_path(name: str, fingerprint: str, folder: Path | None = None) -> Path:
    """Where the archive of ``name`` for ``fingerprint`` is (default folder: :data:`FOLDER`)."""
    return (folder or FOLDER) / f"{name}-{fingerprint}{ARCHIVE_SUFFIX}"


def record_path(archive: Path) -> Path:
    return archive.with_name(archive.name.removesuffix(ARCHIVE_SUFFIX) + ".json")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_archive(kb: Path, name: str, folder: Path, rebuild: str) -> Path:
    """Pack the knowledge base at ``kb`` (no indexes: they are built on first use) into
    ``folder`` as NAME-FINGERPRINT.tar.xz with its record; both files are replaced atomically.
    The archive's bytes depend only on the knowledge base's (no times, owners or modes)."""
    manifest = KBManifest.read(kb, "ragloom knowledge base")
    if not manifest.files:
        raise IndexFileError(f"{kb} records no files in its manifest; build it again.")
    archive = archive_path(name, manifest.encoder.fingerprint, folder)
    names = [MANIFEST_FILE, *sorted(manifest.files)]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz", preset=9) as tar:
        for member in names:
            info = tar.gettarinfo(kb / member, arcname=member)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o644
            with (kb / member).open("rb") as file:
                tar.addfile(info, file)
    atomic.write_bytes(archive, buffer.getvalue())
    record = ArchiveRecord(
        name=name,
        fingerprint=manifest.encoder.fingerprint,
        size=archive.stat().st_size,
        sha256=sha256(archive),
        count=manifest.count,
        ragloom_version=manifest.ragloom_version,
        rebuild=rebuild,
    )
    atomic.write_text(record_path(archive), record.model_dump_json(indent=2) + "\n")
    return archive


def _archive_problem(archive: Path) -> str | None:
    """What is wrong with ``archive`` against its record, or None when it matches."""
    path = record_path(archive)
    try:
        record = ArchiveRecord.model_validate_json(path.read_bytes(), strict=True)
    except OSError as error:
        return f"its record {path} cannot be read ({error.strerror})"
    except ValidationError as error:
        return f"its record {path} is not a valid archive record ({error.error_count()} errors)"
    actual = archive.stat().st_size
    if actual != record.size:
        return f"it has {actual} bytes, its record says {record.size}"
    if (digest := sha256(archive)) != record.sha256:
        return f"its SHA-256 is {digest}, its record says {record.sha256}"
    return None


def install(name: str, fingerprint: str, target: Path, folder: Path | None = None) -> bool:
    """Unpack the prebuilt ``name`` for ``fingerprint`` into ``target`` once it is verified;
    False (nothing written) when the package has none for that fingerprint, or when the one it
    has fails a check: the caller then builds the knowledge base itself."""
    archive = archive_path(name, fingerprint, folder)
    if not archive.is_file():
        return False
    problem = _archive_problem(archive)
    if problem is None:
        try:
            with atomic.directory(target, KB_KIND) as staging:
                _unpack(archive, staging)
            return True
        except (IndexFileError, tarfile.TarError, OSError) as error:
            problem = str(error)
    log.warning(
        "the prebuilt %s knowledge base %s is damaged (%s); building it instead. Reinstalling "
        "ragloom restores the archive.",
        name,
        archive,
        problem,
    )
    return False


def _unpack(archive: Path, staging: Path) -> None:
    """Extract ``archive`` into ``staging`` and check the files against the KB's manifest."""
    with (
        tempfile.TemporaryDirectory(dir=staging.parent) as scratch,
        tarfile.open(archive, "r:xz") as tar,
    ):
        tar.extractall(scratch, filter="data")
        unpacked = Path(scratch)
        manifest = KBManifest.read(unpacked, "ragloom knowledge base")
        problems = file_problems(unpacked, manifest.files or {}, checksums=True)
        expected = {MANIFEST_FILE, *(manifest.files or {})}
        extra = sorted(p.name for p in unpacked.iterdir() if p.name not in expected)
        if extra:
            problems.append(f"it holds files its manifest does not name: {', '.join(extra)}")
        if problems:
            raise IndexFileError("; ".join(problems))
        for path in unpacked.iterdir():
            path.rename(staging / path.name)
