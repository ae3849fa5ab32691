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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import atomic
from ..digest import file_sha256
from .documents import Document
from .knowledge_base import EMBEDDINGS_FILE, KnowledgeBase
from .manifest import EncoderRecord, KBManifest, ragloom_version
from .passages import PASSAGES_FILE, ArrowPassageStore, write_passages

if TYPE_CHECKING:
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

    staging = staging_directory(out)
    staging.mkdir(parents=True, exist_ok=True)
    incoming = staging / f"{PASSAGES_FILE}.incoming"
    count, lengths = write_passages(incoming, documents)
    if count == 0:
        shutil.rmtree(staging)
        raise ValueError("no passages to index: the input has no non-empty text.")
    checksum = file_sha256(incoming)
    plan = {
        "passages_sha256": checksum,
        "encoder_fingerprint": encoder.fingerprint,
        "dtype": dtype,
        "batch_size": batch_size,
        "count": count,
        "dim": encoder.dim,
    }
    done = _resumable_batches(staging, plan)
    if done:
        incoming.unlink()
        log.info("resuming the build in %s: %d batches already encoded", staging, done)
    else:
        incoming.replace(staging / PASSAGES_FILE)
    embeddings = np.lib.format.open_memmap(
        staging / EMBEDDINGS_FILE,
        mode="r+" if done else "w+",
        dtype=np.dtype(dtype),
        shape=(count, encoder.dim),
    )
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
                atomic.write_text(
                    staging / PROGRESS_FILE, json.dumps({**plan, "batches_done": number + 1})
                )
                last_flush = time.monotonic()
    del embeddings
    KBManifest(
        ragloom_version=ragloom_version(),
        count=count,
        dim=encoder.dim,
        embeddings_dtype="float16" if dtype == "float16" else "float32",
        encoder=EncoderRecord(type=encoder_type, fingerprint=encoder.fingerprint),
        passages_sha256=checksum,
        source=source or {},
    ).write(staging)
    (staging / PROGRESS_FILE).unlink()
    atomic.replace_directory(staging, out)
    return KnowledgeBase.open(out)


def _resumable_batches(staging: Path, plan: dict[str, Any]) -> int:
    """Batches already encoded in ``staging`` for this exact plan (0: start afresh)."""
    progress = staging / PROGRESS_FILE
    if not progress.exists() or not (staging / EMBEDDINGS_FILE).exists():
        _clear(staging)
        return 0
    try:
        recorded = json.loads(progress.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        recorded = {}
    if {key: recorded.get(key) for key in plan} != plan:
        log.info(
            "the unfinished build in %s was for other input or settings; starting over", staging
        )
        _clear(staging)
        return 0
    return int(recorded.get("batches_done", 0))


def _clear(staging: Path) -> None:
    for path in staging.iterdir():
        if not path.name.endswith(".incoming"):
            path.unlink() if path.is_file() else shutil.rmtree(path)
