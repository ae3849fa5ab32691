"""Opening a knowledge base, reading its vectors, and its cached indexes."""

from __future__ import annotations

import dataclasses
import logging
import re
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .. import atomic, locks
from ..artifacts import claim
from ..context import Declared
from ..errors import IndexFileError, MismatchError
from ..protocols import SampledTraining
from .manifest import (
    INDEX_KIND,
    MANIFEST_FILE,
    FileRecord,
    IndexManifest,
    KBManifest,
    ragloom_version,
    record_files,
    verify_files,
)
from .passages import PASSAGES_FILE, ArrowPassageStore, check_ids
from .shards import Shard

if TYPE_CHECKING:
    import numpy as np

    from ..protocols import Index

log = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.npy"
INDEXES_DIR = "indexes"
INDEX_SUBDIR = "index"
ADD_CHUNK = 16_384
DEFAULT_TRAIN_SAMPLE = 65_536
REBUILD_KB = "build the knowledge base again (`ragloom kb build`)"


def record_kb_files(directory: Path) -> dict[str, FileRecord]:
    """The records of a KB's own files (its indexes have manifests of their own)."""
    return record_files(directory, (PASSAGES_FILE, EMBEDDINGS_FILE))


def index_directory_name(type_name: str, build_params: dict[str, Any]) -> str:
    """``<type>-<params>``: e.g. ``hnsw-M32-ef_construction200-seed100``; ``faiss-exact``."""
    parts = [type_name]
    for key in sorted(build_params):
        value = re.sub(r"[^A-Za-z0-9._]+", ".", str(build_params[key])).strip(".")
        parts.append(f"{key}{value}")
    return "-".join(parts)


@runtime_checkable
class SizedBuild(Protocol):
    """An index type whose build parameters may depend on the vectors it will hold:
    ``for_data(n, dim, params)`` → the parameters it builds ``n`` vectors of ``dim`` with
    (defaults chosen from the data filled in, explicit values kept). A knowledge base names,
    builds and records the index by these, so a name says what was built."""

    def for_data(self, n: int, dim: int, params: Any) -> Any: ...


def sized(declared: Declared, rows: int, dim: int) -> Declared:
    """``declared`` with the parameters its index type builds ``rows`` vectors of ``dim`` with."""
    if not isinstance(declared.component, SizedBuild):
        return declared
    return dataclasses.replace(
        declared, params=declared.component.for_data(rows, dim, declared.params)
    )


def sized_rows(count: int, shard: Shard | None) -> int:
    """The rows an index is sized for: the KB's, or for a shard the smallest shard's, so that
    every shard of a split is named and built alike."""
    return count if shard is None else count // shard.count


def index_location(directory: Path, declared: Declared, shard: Shard | None) -> Path:
    """``indexes/<type>-<build params>`` of the KB at ``directory`` (``.shards-N/shard-i``
    for a shard), by ``declared``'s parameters as they are."""
    name = index_directory_name(declared.type, build_params(declared))
    if shard is None:
        return directory / INDEXES_DIR / name
    return directory / INDEXES_DIR / f"{name}.shards-{shard.count}" / f"shard-{shard.number}"


def build_params(declared: Declared) -> dict[str, Any]:
    """The parameters of an index spec that decide what is built (not the search-time ones)."""
    search: frozenset[str] = declared.component.search_params  # a member of the Index protocol
    values: dict[str, Any] = declared.params.model_dump(mode="json")
    return {key: value for key, value in values.items() if key not in search}


def encoder_problem(subject: str, manifest: KBManifest, encoder: str, fingerprint: str) -> str:
    """Why the encoder named ``encoder`` (``"[encoder]"``) of ``fingerprint`` may not search
    the KB named ``subject`` (``"knowledge base kb/"``), whose manifest records another encoder
    or none."""
    if manifest.encoder.unverified:
        return (
            f"{subject} was imported without an encoder fingerprint (`ragloom kb import-hf` "
            f"without --spec), so nothing shows that {encoder} ({fingerprint}) made its passage "
            f"vectors."
        )
    return (
        f"{subject} was encoded by {manifest.encoder.described()}, but {encoder} is "
        f"{fingerprint}: question and passage vectors would not be comparable."
    )


def encoder_fix(directory: Path, manifest: KBManifest) -> str:
    """What to do about :func:`encoder_problem`: for a KB imported without an encoder, the
    command that records one."""
    if manifest.encoder.unverified:
        imported_from = shlex.quote(str(manifest.source.get("imported_from", "PASSAGES")))
        return (
            f"Record the fingerprint by importing it again with the spec whose [encoder] made "
            f"the embeddings (a sample is re-encoded to check them): `ragloom kb import-hf "
            f"{imported_from} --spec SPEC --out {shlex.quote(str(directory))}` (with --index "
            f"FILE if the first import had one); or set [retriever] allow_mismatch = true if you "
            f"know they match."
        )
    return (
        "Rebuild the KB with this encoder (`ragloom kb build`), or set [retriever] "
        "allow_mismatch = true if you know they are compatible."
    )


class KnowledgeBase:
    """A KB directory opened for reading (see the package docstring for the layout)."""

    def __init__(self, directory: Path, manifest: KBManifest) -> None:
        import numpy as np

        self.directory = directory
        self.manifest = manifest
        verify_files(directory, manifest.files, checksums=False, rebuild=REBUILD_KB)
        self.passages = ArrowPassageStore(directory / PASSAGES_FILE)
        try:
            self.embeddings = np.load(
                directory / EMBEDDINGS_FILE, mmap_mode="r", allow_pickle=False
            )
        except (OSError, ValueError) as error:
            raise IndexFileError(
                f"{directory / EMBEDDINGS_FILE} is missing, truncated or corrupt ({error}). Build "
                f"the knowledge base again."
            ) from None
        expected = (manifest.count, manifest.dim)
        if (
            self.embeddings.shape != expected
            or str(self.embeddings.dtype) != manifest.embeddings_dtype
        ):
            raise IndexFileError(
                f"{directory / EMBEDDINGS_FILE} holds {self.embeddings.dtype} "
                f"{list(self.embeddings.shape)}, the manifest says {manifest.embeddings_dtype} "
                f"{list(expected)}. Build the knowledge base again."
            )
        if len(self.passages) != manifest.count:
            raise IndexFileError(
                f"{directory / PASSAGES_FILE} holds {len(self.passages)} passages, the manifest "
                f"says {manifest.count}. Build the knowledge base again."
            )

    @classmethod
    def open(cls, directory: Path) -> KnowledgeBase:
        atomic.recover_directory(directory)
        if directory.exists() and not directory.is_dir():
            raise IndexFileError(
                f"{directory} is a file; a knowledge base is a directory (written by `ragloom kb "
                f"build INPUT --spec SPEC --out DIR`). Give the knowledge base's directory."
            )
        if not directory.is_dir():
            raise IndexFileError(
                f"knowledge base {directory} does not exist. Build one with "
                f"`ragloom kb build INPUT --spec SPEC --out {directory}`."
            )
        return cls(directory, KBManifest.read(directory, "ragloom knowledge base"))

    def __len__(self) -> int:
        return self.manifest.count

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """``float32 [..., dim]`` stored embeddings of ``ids`` (any shape); zeros where id < 0."""
        import numpy as np

        flat = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.zeros((len(flat), self.dim), np.float32)
        valid = flat >= 0
        check_ids(flat[valid], len(self), self.directory / EMBEDDINGS_FILE)
        if valid.any():
            rows = flat[valid]
            order = np.argsort(rows, kind="stable")
            out[np.flatnonzero(valid)[order]] = self.embeddings[rows[order]]
        return out.reshape(*np.shape(ids), self.dim)

    def require_vectors(self, needed_by: str) -> None:
        """Refuse ``needed_by`` (a dense index, a question encoder) a KB of passages only."""
        if self.manifest.dim == 0:
            raise MismatchError(
                f"knowledge base {self.directory} holds passages only (it was built without an "
                f"[encoder], for text retrievers such as bm25), so {needed_by} has no passage "
                f"vectors to use. Build a knowledge base with an [encoder] for it "
                f"(`ragloom kb build INPUT --spec SPEC --out DIR`), or use [retriever] type = "
                f'"bm25" with this one.'
            )

    def check_encoder(self, fingerprint: str, allow_mismatch: bool = False) -> None:
        """Refuse an encoder whose fingerprint differs from the one that made the embeddings."""
        recorded = self.manifest.encoder.fingerprint
        if fingerprint == recorded:
            return
        self.require_vectors("the question encoder")
        message = encoder_problem(
            f"knowledge base {self.directory}", self.manifest, "the pipeline's encoder", fingerprint
        )
        if not allow_mismatch:
            raise MismatchError(f"{message} {encoder_fix(self.directory, self.manifest)}")
        log.warning("%s Continuing because [retriever] allow_mismatch = true.", message)

    # --- indexes ---------------------------------------------------------------------------

    def sized(self, declared: Declared, shard: Shard | None = None) -> Declared:
        """``declared`` with the parameters its index is built with over this KB (or
        ``shard``): defaults that depend on the data (:class:`SizedBuild`) chosen."""
        return sized(declared, sized_rows(len(self), shard), self.dim)

    def index_path(self, declared: Declared, shard: Shard | None = None) -> Path:
        """Where this KB keeps the index ``declared`` by a spec (of one shard), named by the
        parameters it is built with (:meth:`sized`)."""
        return index_location(self.directory, self.sized(declared, shard), shard)

    @staticmethod
    def index_path_in(directory: Path, declared: Declared, shard: Shard | None = None) -> Path:
        """:meth:`index_path` of the KB at ``directory``, without opening it (its manifest is
        read when the index type sizes itself to the data)."""
        if isinstance(declared.component, SizedBuild):
            manifest = KBManifest.read(directory, "ragloom knowledge base")
            declared = sized(declared, sized_rows(manifest.count, shard), manifest.dim)
        return index_location(directory, declared, shard)

    def shards(self, count: int) -> list[Shard]:
        """The KB's rows in ``count`` contiguous shards."""
        return Shard.split(len(self), count)

    def unbuilt_shards(self, declared: Declared, count: int) -> list[Shard]:
        """The shards of ``count`` whose index of ``declared`` is not built yet."""
        return [
            shard
            for shard in self.shards(count)
            if not (self.index_path(declared, shard) / MANIFEST_FILE).exists()
        ]

    def index_manifests(self) -> list[tuple[Path, IndexManifest]]:
        """Every built index with its manifest, whole-KB indexes first, then shard indexes."""
        root = self.directory / INDEXES_DIR
        manifests = [
            *sorted(root.glob(f"*/{MANIFEST_FILE}")),
            *sorted(root.glob(f"*.shards-*/shard-*/{MANIFEST_FILE}")),
        ]
        return [
            (path.parent, IndexManifest.read(path.parent, "ragloom index"))
            for path in manifests
            if not any(part.startswith(".") for part in path.relative_to(root).parts)
        ]

    def load_index(
        self,
        declared: Declared,
        build: bool = True,
        allow_mismatch: bool = False,
        shard: Shard | None = None,
    ) -> Index:
        """The index ``declared`` by a spec (over ``shard``'s rows only, if given): loaded from
        the KB's cache, or built and cached. Concurrent first uses (threads or processes) build
        it once; the others wait and load it."""
        self.require_vectors(f"the index {declared.type}")
        declared = self.sized(declared, shard)
        path = self.index_path(declared, shard)
        atomic.recover_directory(path)
        if not path.exists():
            if not build:
                shards = f" --shards {shard.count}" if shard else ""
                raise IndexFileError(
                    f"{path} has not been built. Build it with `ragloom index build "
                    f"{self.directory} --type {declared.type}{shards}`."
                )
            claim(path, INDEX_KIND, root=self.directory)  # no lock file through a link
            with locks.exclusive(path):
                if not path.exists():
                    log.info("building index %s (first use)", path.relative_to(self.directory))
                    return self.build_index(declared, shard=shard)
        manifest = IndexManifest.read(path, "ragloom index")
        self._check_index(path, manifest, allow_mismatch, shard)
        rebuild = f"rebuild it with `ragloom index build {self.directory} --type {declared.type}`"
        verify_files(path, manifest.files, checksums=True, rebuild=rebuild)
        index: Index = declared.component.load(path / INDEX_SUBDIR)
        index.tune(declared.params)
        return index

    def _check_index(
        self, path: Path, manifest: IndexManifest, allow_mismatch: bool, shard: Shard | None
    ) -> None:
        problems = []
        if manifest.encoder_fingerprint != self.manifest.encoder.fingerprint:
            problems.append(
                f"encoder {manifest.encoder_fingerprint} (the KB's is "
                f"{self.manifest.encoder.fingerprint})"
            )
        if manifest.passages_sha256 != self.manifest.passages_sha256:
            problems.append(
                f"passages {manifest.passages_sha256[:16]} (the KB's are "
                f"{self.manifest.passages_sha256[:16]})"
            )
        rows = [0, self.manifest.count] if shard is None else [shard.start, shard.stop]
        if (manifest.rows or [0, manifest.count]) != rows:
            problems.append(f"rows {manifest.rows or [0, manifest.count]} (expected {rows})")
        if not problems:
            return
        message = f"index {path} was built from other data: {'; '.join(problems)}."
        if not allow_mismatch:
            raise MismatchError(
                f"{message} Rebuild it with `ragloom index build {self.directory} --type "
                f"{manifest.type}` (it replaces the old one)."
            )
        log.warning("%s Loading it anyway because [retriever] allow_mismatch = true.", message)

    def build_index(
        self, declared: Declared, progress: bool = True, shard: Shard | None = None
    ) -> Index:
        """Build the declared index from the stored embeddings (of ``shard``'s rows only, if
        given) and save it atomically, with the parameters it is built with in its name and
        manifest (:meth:`sized`)."""
        import numpy as np
        from tqdm import tqdm

        self.require_vectors(f"the index {declared.type}")
        declared = self.sized(declared, shard)
        started = time.perf_counter()
        target = self.index_path(declared, shard)
        index: Index = declared.component.create(self.dim, declared.params)
        first, end = (0, len(self)) if shard is None else (shard.start, shard.stop)
        count = end - first
        params = declared.params
        train_size, seed = (
            (params.train_size, params.seed)
            if isinstance(params, SampledTraining)
            else (DEFAULT_TRAIN_SAMPLE, 0)
        )
        sample_size = min(count, train_size)
        rng = np.random.default_rng(seed)
        sample_rows = first + np.sort(rng.choice(count, size=sample_size, replace=False))
        index.train(np.asarray(self.embeddings[sample_rows], dtype=np.float32))
        label = f"index {declared.type}" + (f" {shard}" if shard else "")
        with tqdm(total=count, unit="vec", desc=label, disable=not progress) as bar:
            for start in range(first, end, ADD_CHUNK):
                stop = min(start + ADD_CHUNK, end)
                index.add(
                    np.asarray(self.embeddings[start:stop], dtype=np.float32),
                    np.arange(start, stop, dtype=np.int64),
                )
                bar.update(stop - start)
        with atomic.directory(target, INDEX_KIND, root=self.directory) as temporary:
            index.save(temporary / INDEX_SUBDIR)
            IndexManifest(
                type=declared.type,
                params=declared.params.model_dump(mode="json"),
                dim=self.dim,
                metric=index.metric,
                count=count,
                encoder_fingerprint=self.manifest.encoder.fingerprint,
                passages_sha256=self.manifest.passages_sha256,
                build_seconds=round(time.perf_counter() - started, 3),
                ragloom_version=ragloom_version(),
                rows=None if shard is None else [shard.start, shard.stop],
                files=record_files(temporary),
            ).write(temporary)
        return index
