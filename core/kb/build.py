"""Building a knowledge base: passages, then embeddings in length-sorted batches, resumably.

The build happens in a staging directory beside the target (``.<name>.building``). Embeddings go
straight into the memory-mapped ``embeddings.npy``; after each flushed stretch of batches,
``progress.json`` records how many batches are on disk, so a build that is killed resumes there
(same input, same encoder). Only a finished build is renamed over the target, so the previous KB
stays usable until the new one is complete.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import atomic
from ..digest import file_sha256
from .documents import Document
from .knowledge_base import EMBEDDINGS_FILE, KnowledgeBase
from .manifest import EncoderRecord, KBManifest, ragloom_version
from .passages import PASSAGES_FILE, ArrowPassageStore, write_passages

if TYPE_CHECKING:
    import numpy as np

    from ..protocols import Encoder

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
FLUSH_SECONDS = 5.0


def staging_directory(out: Path) -> Path:
    return out.parent / f".{out.name}.building"


def build_knowledge_base(
    documents: Iterable[Document],
    encoder: Encoder,
    out: Path,
    *,
    encoder_type: str,
    dtype: str = "float32",
    batch_size: int = 256,
    source: dict[str, Any] | None = None,
    progress: bool = True,
    flush_seconds: float = FLUSH_SECONDS,
) -> KnowledgeBase:
    """Encode ``documents`` (already split into passages) into a KB at ``out``.

    Progress is saved at least every ``flush_seconds`` (0: after every batch).
    """
    import numpy as np
    from tqdm import tqdm

    staged = stage_passages(documents, out)
    count, lengths, staging = staged.count, staged.lengths, staged.directory
    plan = staged.plan(encoder, dtype, batch_size=batch_size)
    recorded = resumable_progress(staging, plan)
    done = int(recorded.get("batches_done", 0)) if recorded else 0
    if done:
        log.info("resuming the build in %s: %d batches already encoded", staging, done)
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
            vectors = encoder.encode_passages(
                [p.title for p in passages], [p.text for p in passages]
            )
            embeddings[rows] = vectors.detach().cpu().numpy().astype(dtype)
            bar.update(len(rows))
            if time.monotonic() - last_flush >= flush_seconds or number == len(batches) - 1:
                embeddings.flush()
                staged.record(plan, batches_done=number + 1)
                last_flush = time.monotonic()
    del embeddings
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
        """The memory-mapped embeddings file, continued or created."""
        import numpy as np

        return np.lib.format.open_memmap(
            self.directory / EMBEDDINGS_FILE,
            mode="r+" if resume else "w+",
            dtype=np.dtype(dtype),
            shape=(self.count, dim),
        )

    def record(self, plan: dict[str, Any], **progress: Any) -> None:
        """Save how far encoding got (after flushing the embeddings)."""
        atomic.write_text(self.directory / PROGRESS_FILE, json.dumps({**plan, **progress}))

    def publish(
        self,
        out: Path,
        encoder: EncoderRecord,
        dim: int,
        dtype: str,
        source: dict[str, Any] | None,
    ) -> KnowledgeBase:
        """Write the manifest and rename the finished build over ``out``."""
        KBManifest(
            ragloom_version=ragloom_version(),
            count=self.count,
            dim=dim,
            embeddings_dtype="float16" if dtype == "float16" else "float32",
            encoder=encoder,
            passages_sha256=self.checksum,
            source=source or {},
        ).write(self.directory)
        (self.directory / PROGRESS_FILE).unlink(missing_ok=True)
        atomic.replace_directory(self.directory, out)
        return KnowledgeBase.open(out)


def stage_passages(documents: Iterable[Document], out: Path) -> StagedPassages:
    """Write the passages into the staging directory of ``out``; an unfinished build's
    embeddings there are kept for :func:`resumable_progress` to judge."""
    staging = staging_directory(out)
    staging.mkdir(parents=True, exist_ok=True)
    incoming = staging / f"{PASSAGES_FILE}.incoming"
    count, lengths = write_passages(incoming, documents)
    if count == 0:
        shutil.rmtree(staging)
        raise ValueError("no passages to index: the input has no non-empty text.")
    checksum = file_sha256(incoming)
    previous = staging / PASSAGES_FILE
    if previous.exists() and file_sha256(previous) == checksum:
        incoming.unlink()
    else:
        incoming.replace(previous)
    return StagedPassages(staging, count, lengths, checksum)


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
        if {key: recorded.get(key) for key in plan} == plan:
            return recorded
        log.info(
            "the unfinished build in %s was for other input or settings; starting over", staging
        )
    _clear(staging)
    return None


def _clear(staging: Path) -> None:
    """Remove everything but the passages just staged."""
    for path in staging.iterdir():
        if path.name != PASSAGES_FILE:
            path.unlink() if path.is_file() else shutil.rmtree(path)
