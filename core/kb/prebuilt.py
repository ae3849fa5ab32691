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

import io
import logging
import lzma
import tarfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from .. import atomic
from ..digest import file_sha256
from ..errors import ArtifactError, IndexFileError
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


def fingerprints(name: str, folder: Path | None = None) -> list[str]:
    """The encoder fingerprints the package ships ``name`` prebuilt for."""
    prefix = f"{name}-"
    return sorted(
        path.name.removeprefix(prefix).removesuffix(ARCHIVE_SUFFIX)
        for path in (folder or FOLDER).glob(f"{prefix}*{ARCHIVE_SUFFIX}")
    )


def record_path(archive: Path) -> Path:
    return archive.with_name(archive.name.removesuffix(ARCHIVE_SUFFIX) + ".json")


def write_archive(kb: Path, name: str, folder: Path, rebuild: str) -> Path:
    """Pack the knowledge base at ``kb`` (no indexes: they are built on first use) into
    ``folder`` as NAME-FINGERPRINT.tar.xz with its record; both files are replaced atomically.
    The archive's bytes depend only on the knowledge base's (no times, owners or modes)."""
    manifest = KBManifest.read(kb, "ragloom knowledge base")
    if not manifest.files:
        raise IndexFileError(f"{kb} records no files in its manifest; build it again.")
    archive = archive_path(name, manifest.encoder.fingerprint, folder)
    _check_replaceable(archive)
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
        sha256=file_sha256(archive),
        count=manifest.count,
        ragloom_version=manifest.ragloom_version,
        rebuild=rebuild,
    )
    atomic.write_text(record_path(archive), record.model_dump_json(indent=2) + "\n")
    return archive


def _check_replaceable(archive: Path) -> None:
    """Refuse to write over anything at ``archive`` or its record but an archive of ours: two
    regular files, the record a valid one."""
    record = record_path(archive)
    for path in (archive, record):
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise ArtifactError(f"{path} is not a regular file; move it or give another --out.")
    if archive.exists() or record.exists():
        try:
            ArchiveRecord.model_validate_json(record.read_bytes(), strict=True)
        except (OSError, ValidationError):
            raise ArtifactError(
                f"{archive} or {record.name} exists and is not a prebuilt archive of ragloom's "
                f"(no valid record); move it or give another --out."
            ) from None


class Damaged(Exception):
    """A prebuilt archive that fails a check: what failed, in words."""


def _checked_record(archive: Path) -> ArchiveRecord:
    """The record of ``archive``, which the archive's size and SHA-256 must match."""
    path = record_path(archive)
    try:
        record = ArchiveRecord.model_validate_json(path.read_bytes(), strict=True)
    except OSError as error:
        raise Damaged(f"its record {path} cannot be read ({error.strerror})") from None
    except ValidationError as error:
        raise Damaged(
            f"its record {path} is not a valid archive record ({error.error_count()} errors)"
        ) from None
    actual = archive.stat().st_size
    if actual != record.size:
        raise Damaged(f"it has {actual} bytes, its record says {record.size}")
    if (digest := file_sha256(archive)) != record.sha256:
        raise Damaged(f"its SHA-256 is {digest}, its record says {record.sha256}")
    return record


def install(name: str, fingerprint: str, target: Path, folder: Path | None = None) -> bool:
    """Unpack the prebuilt ``name`` for ``fingerprint`` into ``target`` once it is verified;
    False (nothing written) when the package has none for that fingerprint, or when the one it
    has fails a check (a warning says which): the caller then builds the knowledge base itself.
    Errors of writing the cache (a full disk, no permission) are raised, as a build's would be.
    """
    archive = archive_path(name, fingerprint, folder)
    if not archive.is_file():
        return False
    try:
        record = _checked_record(archive)
        with atomic.directory(target, KB_KIND) as staging:
            _unpack(archive, staging, fingerprint, record.count)
        return True
    except Damaged as problem:
        log.warning(
            "the prebuilt %s knowledge base %s is damaged (%s); building it instead. "
            "Reinstalling ragloom restores the archive.",
            name,
            archive,
            problem,
        )
        return False


def _unpack(archive: Path, staging: Path, fingerprint: str, count: int) -> None:
    """Extract ``archive`` into ``staging`` (regular files only, none outside it) and check
    the files against the knowledge base's manifest, and the manifest against the encoder
    ``fingerprint`` asked for and the ``count`` of passages the archive's record gives."""
    try:
        with tarfile.open(archive, "r:xz") as tar:
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, lzma.LZMAError, EOFError) as error:
        raise Damaged(f"it cannot be unpacked ({error})") from None
    try:
        manifest = KBManifest.read(staging, "ragloom knowledge base")
    except IndexFileError as error:
        raise Damaged(str(error).replace(f"{staging}/", "")) from None
    files = manifest.files or {}
    problems = [
        problem.replace(f"{staging}/", "")
        for problem in file_problems(staging, files, checksums=True)
    ]
    unpacked = {p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()}
    extra = sorted(unpacked - {MANIFEST_FILE, *files})
    if extra:
        problems.append(f"it holds files its manifest does not name: {', '.join(extra)}")
    if (manifest.encoder.fingerprint, manifest.count) != (fingerprint, count):
        problems.append(
            f"it holds {manifest.count} passages for encoder {manifest.encoder.fingerprint}, "
            f"not {count} for {fingerprint} as its name and record say"
        )
    if problems:
        raise Damaged("; ".join(problems))
