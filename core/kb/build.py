"""Building a knowledge base: passages, then embeddings in length-sorted batches, resumably.

The build happens in a staging directory beside the target (``.<name>.building``), under the
target's lock (:func:`ragloom.locks.exclusive`: a second build of the same KB waits). Embeddings
go straight into the memory-mapped ``embeddings.npy``, whose whole size is reserved on disk first
(a full disk is an error before encoding, never a SIGBUS); after each flushed stretch of batches,
``progress.json`` records how many batches are on disk, so a build that is killed resumes there
(same input, same encoder). A staging directory left by a build of other input is cleared before
anything is written. Only a finished build is sealed (every file sized and checksummed in the
manifest) and renamed over the target, so the previous KB stays usable until the new one is
complete. A target that is not a KB is never replaced, nor a KB of other passages without
``force``. Without an encoder the KB holds passages only (:data:`~ragloom.kb.manifest.NO_ENCODER`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import atomic, locks
from ..artifacts import absolute, claim
from ..digest import file_sha256
from ..errors import ArtifactError, IndexFileError, RagloomError
from .documents import Document
from .knowledge_base import EMBEDDINGS_FILE, INDEXES_DIR, KnowledgeBase, record_kb_files
from .manifest import KB_KIND, NO_ENCODER, EncoderRecord, KBManifest, ragloom_version
from .passages import PASSAGES_FILE, ArrowPassageStore, write_passages
from .truncation import Truncation, passage_overflow, report

if TYPE_CHECKING:
    import numpy as np

    from ..protocols import Encoder

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
INPUT_FILE = "input.json"
FLUSH_SECONDS = 5.0


class EncodingError(RagloomError):
    """An encoder that produced vectors a knowledge base cannot hold (NaN or infinite)."""


def staging_directory(out: Path) -> Path:
    return out.parent / f".{out.name}.building"


@contextmanager
def staged_build(
    documents: Iterable[Document],
    out: Path,
    *,
    fingerprint: str,
    force: bool = False,
    input_key: Any = None,
) -> Iterator[StagedPassages]:
    """Hold ``out``'s lock, check that it may be replaced, and stage the passages.

    A KB at ``out`` of other passages, or encoded by another encoder than ``fingerprint``'s, is
    replaced only with ``force``. ``input_key`` identifies the input (e.g. its path, size and
    modification time): a staging directory left by a build of another key is cleared first,
    so a dead build's files never crowd out a new one. Writes that fail for lack of space raise
    :class:`WriteError`.
    """
    out = absolute(out)
    with locks.exclusive(out):
        claim(out, KB_KIND)
        try:
            staged = stage_passages(documents, out, input_key)
            _refuse_other_contents(out, staged, fingerprint, force)
            yield staged
        except BaseException as error:
            atomic.raise_if_out_of_space(error, out)
            raise


def check_finite(vectors: np.ndarray, rows: Any) -> None:
    """Refuse NaN or infinite passage vectors, naming the first passages that have them."""
    import numpy as np

    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        ids = np.asarray(rows)[bad][:10].tolist()
        raise EncodingError(
            f"the encoder returned NaN or infinite vectors for {int(bad.sum())} passages (ids "
            f"{ids}{' ...' if bad.sum() > 10 else ''}); a knowledge base of them would retrieve "
            f"at random. Check the encoder's weights and dtype (float16 overflows on long "
            f"passages: use float32 or bfloat16)."
        )


def build_knowledge_base(
    documents: Iterable[Document],
    encoder: Encoder | None,
    out: Path,
    *,
    encoder_type: str,
    dtype: str = "float32",
    batch_size: int = 256,
    source: dict[str, Any] | None = None,
    progress: bool = True,
    flush_seconds: float = FLUSH_SECONDS,
    force: bool = False,
    input_key: Any = None,
    warn_truncation: bool = True,
) -> KnowledgeBase:
    """Encode ``documents`` (already split into passages) into a KB at ``out``.

    Progress is saved at least every ``flush_seconds`` (0: after every batch). See
    :func:`staged_build` for ``force`` and ``input_key``. With ``encoder`` None the KB holds
    the passages only, for retrievers that read text (``bm25``). Passages longer than the
    encoder reads are counted and reported in one warning (:mod:`ragloom.kb.truncation`; a
    note instead without ``warn_truncation``).
    """
    fingerprint = NO_ENCODER.fingerprint if encoder is None else encoder.fingerprint
    with staged_build(
        documents, out, fingerprint=fingerprint, force=force, input_key=input_key
    ) as staged:
        if encoder is None:
            return staged.publish_passages_only(absolute(out), source)
        return _encode(
            staged,
            encoder,
            absolute(out),
            encoder_type,
            dtype,
            batch_size,
            source,
            progress,
            flush_seconds,
            warn_truncation,
        )


def _encode(
    staged: StagedPassages,
    encoder: Encoder,
    out: Path,
    encoder_type: str,
    dtype: str,
    batch_size: int,
    source: dict[str, Any] | None,
    progress: bool,
    flush_seconds: float,
    warn_truncation: bool,
) -> KnowledgeBase:
    import numpy as np
    from tqdm import tqdm

    count, lengths, staging = staged.count, staged.lengths, staged.directory
    plan = staged.plan(encoder, dtype, batch_size=batch_size)
    recorded = resumable_progress(staging, plan)
    done = int(recorded.get("batches_done", 0)) if recorded else 0
    if done:
        log.info("resuming the build in %s: %d batches already encoded", staging, done)
    truncation = Truncation.recorded(recorded)
    embeddings = staged.embeddings(encoder.dim, dtype, resume=recorded is not None)
    store = ArrowPassageStore(staging / PASSAGES_FILE)
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, count, batch_size)]
    last_flush = time.monotonic()
    with tqdm(total=count, unit="passage", desc="encoding", disable=not progress, initial=0) as bar:
        bar.update(sum(len(rows) for rows in batches[:done]))
        for number in range(done, len(batches)):
            rows = np.sort(batches[number])
            passages = store.get(rows.tolist())
            titles, texts = [p.title for p in passages], [p.text for p in passages]
            vectors = encoder.encode_passages(titles, texts)
            truncation = truncation.plus(passage_overflow(encoder, titles, texts))
            array = vectors.detach().cpu().float().numpy()
            check_finite(array, rows)
            embeddings[rows] = array.astype(dtype)
            bar.update(len(rows))
            if time.monotonic() - last_flush >= flush_seconds or number == len(batches) - 1:
                embeddings.flush()
                staged.record(plan, batches_done=number + 1, **truncation.record())
                last_flush = time.monotonic()
    del embeddings
    report(truncation, encoder, count, warn=warn_truncation)
    record = EncoderRecord(type=encoder_type, fingerprint=encoder.fingerprint)
    return staged.publish(out, record, encoder.dim, dtype, source)


@dataclass(frozen=True)
class StagedPassages:
    """The passages of a build written into its staging directory, before any encoding."""

    directory: Path
    count: int
    lengths: list[int]
    checksum: str

    def plan(self, encoder: Encoder, dtype: str, **settings: Any) -> dict[str, Any]:
        """What a resumed build must share with the interrupted one."""
        return {
            "passages_sha256": self.checksum,
            "encoder_fingerprint": encoder.fingerprint,
            "dtype": dtype,
            "count": self.count,
            "dim": encoder.dim,
            **settings,
        }

    def embeddings(self, dim: int, dtype: str, resume: bool) -> np.memmap[Any, Any]:
        """The memory-mapped embeddings file, continued or created with its whole size
        reserved on disk."""
        import numpy as np

        path = self.directory / EMBEDDINGS_FILE
        if not resume:
            needed = self.count * dim * np.dtype(dtype).itemsize
            atomic.ensure_free_space(self.directory, needed, f"the embeddings {path}")
        embeddings = np.lib.format.open_memmap(
            path, mode="r+" if resume else "w+", dtype=np.dtype(dtype), shape=(self.count, dim)
        )
        atomic.reserve(path, path.stat().st_size)
        return embeddings

    def record(self, plan: dict[str, Any], **progress: Any) -> None:
        """Save how far encoding got (after flushing the embeddings)."""
        atomic.write_text(self.directory / PROGRESS_FILE, json.dumps({**plan, **progress}))

    def publish_passages_only(self, out: Path, source: dict[str, Any] | None) -> KnowledgeBase:
        """Seal the staged passages as a KB without vectors (an empty ``[count, 0]`` embeddings
        matrix, encoder "none") and rename it over ``out``."""
        import numpy as np

        _clear(self.directory)  # an unfinished encoded build's embeddings and progress
        np.save(self.directory / EMBEDDINGS_FILE, np.zeros((self.count, 0), np.float32))
        return self.publish(out, NO_ENCODER, 0, "float32", source)

    def publish(
        self,
        out: Path,
        encoder: EncoderRecord,
        dim: int,
        dtype: str,
        source: dict[str, Any] | None,
    ) -> KnowledgeBase:
        """Seal the finished build (its manifest, with every file's size and checksum) and
        rename it over ``out``."""
        (self.directory / PROGRESS_FILE).unlink(missing_ok=True)
        (self.directory / INPUT_FILE).unlink(missing_ok=True)
        manifest = KBManifest(
            ragloom_version=ragloom_version(),
            count=self.count,
            dim=dim,
            embeddings_dtype="float16" if dtype == "float16" else "float32",
            encoder=encoder,
            passages_sha256=self.checksum,
            source=source or {},
            files=record_kb_files(self.directory),
        )
        manifest.write(self.directory)
        _carry_indexes(out, self.directory, manifest)
        atomic.install(self.directory, out, KB_KIND)
        return KnowledgeBase.open(out)


def _carry_indexes(out: Path, staging: Path, manifest: KBManifest) -> None:
    """Move the cached indexes of the KB at ``out`` into the build replacing it when they stay
    valid: the same passages encoded by the same encoder (a rebuild, a resumed build). Indexes
    can take hours to build; they are never thrown away for nothing."""
    indexes = out / INDEXES_DIR
    if not indexes.is_dir() or indexes.is_symlink() or not KB_KIND.recognizes(out):
        return
    try:
        previous = KBManifest.read(out, "ragloom knowledge base")
    except IndexFileError:
        return
    same = (previous.passages_sha256, previous.encoder, previous.dim) == (
        manifest.passages_sha256,
        manifest.encoder,
        manifest.dim,
    )
    if same:
        os.rename(indexes, staging / INDEXES_DIR)
    else:
        log.info("%s: its indexes were built from other passages or vectors; not kept", out)


def stage_passages(
    documents: Iterable[Document], out: Path, input_key: Any = None
) -> StagedPassages:
    """Write the passages into the staging directory of ``out``; an unfinished build's
    embeddings there are kept for :func:`resumable_progress` to judge, unless that build read
    another input (``input_key``), whose staging is cleared first."""
    staging = staging_directory(out)
    _clear_other_input(staging, input_key)
    staging.mkdir(parents=True, exist_ok=True)
    atomic.write_text(staging / INPUT_FILE, json.dumps(input_key))
    incoming = staging / f"{PASSAGES_FILE}.incoming"
    try:
        count, lengths = write_passages(incoming, documents)
        if count == 0:
            raise ValueError("no passages to index: the input has no non-empty text.")
    except BaseException:
        incoming.unlink(missing_ok=True)
        _discard_unless_resumable(staging)
        raise
    checksum = file_sha256(incoming)
    previous = staging / PASSAGES_FILE
    if previous.exists() and file_sha256(previous) == checksum:
        incoming.unlink()
    else:
        incoming.replace(previous)
    return StagedPassages(staging, count, lengths, checksum)


def _clear_other_input(staging: Path, input_key: Any) -> None:
    if not staging.is_dir():
        return
    try:
        recorded = json.loads((staging / INPUT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = ...
    if recorded != json.loads(json.dumps(input_key)):
        log.info("clearing %s: an unfinished build of other input", staging)
        shutil.rmtree(staging)


def _discard_unless_resumable(staging: Path) -> None:
    """Remove a staging directory that holds no encoding progress worth resuming."""
    if not (staging / PROGRESS_FILE).exists():
        shutil.rmtree(staging, ignore_errors=True)


def _refuse_other_contents(
    out: Path, staged: StagedPassages, fingerprint: str, force: bool
) -> None:
    """Refuse to replace the KB at ``out`` by one of other passages, or of the same passages
    encoded by another encoder, unless ``force``: its embeddings and indexes would be lost."""
    if force or not KB_KIND.recognizes(out):
        return
    try:
        existing = KBManifest.read(out, "ragloom knowledge base")
    except IndexFileError:
        return  # a damaged KB is replaced by the new build
    if existing.passages_sha256 != staged.checksum:
        origin = existing.source.get("input") or existing.source.get("asset") or "another input"
        what = (
            f"a knowledge base of other passages ({existing.count} passages from {origin}); "
            f"this input gives {staged.count} different ones"
        )
    elif existing.encoder.fingerprint != fingerprint:
        what = (
            f"a knowledge base of these passages encoded by {existing.encoder.type} "
            f"{existing.encoder.fingerprint}; this build's encoder is {fingerprint}"
        )
    else:
        return
    _discard_unless_resumable(staged.directory)
    raise ArtifactError(
        f"{out} is {what}. Building over it replaces its embeddings and indexes: pass --force "
        f"to do that, or choose another --out."
    )


def resumable_progress(staging: Path, plan: dict[str, Any]) -> dict[str, Any] | None:
    """The progress an unfinished build in ``staging`` recorded for this exact plan; None (and
    the old embeddings removed) when there is nothing to resume."""
    progress = staging / PROGRESS_FILE
    recorded: dict[str, Any] = {}
    if progress.exists() and (staging / EMBEDDINGS_FILE).exists():
        try:
            recorded = json.loads(progress.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            recorded = {}
        if not isinstance(recorded, dict):
            recorded = {}  # damaged: start over
        if {key: recorded.get(key) for key in plan} == plan:
            return recorded
        log.info(
            "the unfinished build in %s was for other input or settings; starting over", staging
        )
    _clear(staging)
    return None


def _clear(staging: Path) -> None:
    """Remove everything but the passages just staged and what input they came from."""
    for path in staging.iterdir():
        if path.name not in (PASSAGES_FILE, INPUT_FILE):
            path.unlink() if path.is_file() else shutil.rmtree(path)
