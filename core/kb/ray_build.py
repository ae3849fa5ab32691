"""Building a knowledge base and its shard indexes as Ray jobs.

Encoding: the passages are staged as for a local build (:mod:`ragloom.kb.build`), then cut into
chunks of ``chunk_size`` consecutive rows. Each chunk is a Ray task: the worker builds the encoder
from the spec once (per worker process) and returns the chunk's vectors, which the driver writes
into the memory-mapped embeddings as they arrive, recording the finished chunks in
``progress.json``. A build that is killed resumes with the chunks still missing (same input, same
encoder, same chunk size); only the finished build replaces the target.

Shard indexes: one Ray task per shard builds that shard's index from the stored embeddings and
saves it atomically in the KB's index cache (:mod:`ragloom.kb.shards`); shards already built are
skipped, so a rerun finishes what a killed one left.

Workers read and write the staging directory and the KB by path: on a cluster of several machines
those must be on a shared file system.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..context import Declared
from ..distributed import connect
from .build import StagedPassages, check_finite, resumable_progress, staged_build
from .documents import Document
from .knowledge_base import KnowledgeBase
from .manifest import EncoderRecord
from .passages import PASSAGES_FILE, ArrowPassageStore
from .truncation import Truncation, passage_overflow, report

if TYPE_CHECKING:
    import numpy as np

    from ..protocols import Encoder

log = logging.getLogger(__name__)

_ENCODERS: dict[str, Any] = {}
"""Encoders a worker process built, by spec: later chunks on that worker reuse them."""


def _encoder_for(spec: dict[str, Any]) -> Encoder:
    key = json.dumps(spec, sort_keys=True)
    if key not in _ENCODERS:
        from ..context import BuildContext
        from ..plugin_manager import get_registry
        from ..spec import load_spec

        loaded = load_spec(spec)
        declared = loaded.components["encoder"].declared(get_registry())
        context = BuildContext(loaded.base_dir, loaded.pipeline)
        _ENCODERS[key] = declared.component.from_spec(declared.params, context)
    encoder: Encoder = _ENCODERS[key]
    return encoder


def encode_chunk(
    spec: dict[str, Any], passages: str, start: int, stop: int, batch_size: int, dtype: str
) -> tuple[np.ndarray, Truncation]:
    """Rows ``[start, stop)`` of the staged passages, encoded: ``[stop - start, dim]``, and what
    the encoder cut off them. Runs in a Ray worker; batches are length-sorted inside the chunk."""
    import numpy as np

    encoder = _encoder_for(spec)
    store = ArrowPassageStore(Path(passages))
    rows = list(range(start, stop))
    found = store.get(rows)
    order = np.argsort([-len(p.text) for p in found], kind="stable")
    vectors = np.zeros((len(rows), encoder.dim), dtype=np.dtype(dtype))
    truncation = Truncation()
    for first in range(0, len(rows), batch_size):
        batch = order[first : first + batch_size]
        titles, texts = [found[i].title for i in batch], [found[i].text for i in batch]
        encoded = encoder.encode_passages(titles, texts)
        truncation = truncation.plus(passage_overflow(encoder, titles, texts))
        vectors[batch] = encoded.detach().cpu().numpy().astype(dtype)
    return vectors, truncation


def build_knowledge_base_on_ray(
    documents: Iterable[Document],
    encoder: Encoder,
    spec: dict[str, Any],
    out: Path,
    *,
    encoder_type: str,
    address: str = "local",
    num_cpus: int | None = None,
    dtype: str = "float32",
    batch_size: int = 256,
    chunk_size: int = 8192,
    source: dict[str, Any] | None = None,
    progress: bool = True,
    force: bool = False,
    input_key: Any = None,
) -> KnowledgeBase:
    """Encode ``documents`` into a KB at ``out`` with Ray workers (see the module docstring).

    ``encoder`` is the driver's copy of the spec's encoder (for its fingerprint and dimension);
    ``spec`` is the spec as a mapping with absolute paths, from which each worker builds its own.
    ``force`` and ``input_key`` are those of :func:`ragloom.kb.build.staged_build`.
    """
    with staged_build(
        documents, out, fingerprint=encoder.fingerprint, force=force, input_key=input_key
    ) as staged:
        return _encode_on_ray(
            staged,
            encoder,
            spec,
            out,
            encoder_type,
            address,
            num_cpus,
            dtype,
            batch_size,
            chunk_size,
            source,
            progress,
        )


def _encode_on_ray(
    staged: StagedPassages,
    encoder: Encoder,
    spec: dict[str, Any],
    out: Path,
    encoder_type: str,
    address: str,
    num_cpus: int | None,
    dtype: str,
    batch_size: int,
    chunk_size: int,
    source: dict[str, Any] | None,
    progress: bool,
) -> KnowledgeBase:
    import numpy as np
    import ray
    from tqdm import tqdm

    plan = staged.plan(encoder, dtype, batch_size=batch_size, chunk_size=chunk_size)
    recorded = resumable_progress(staged.directory, plan)
    done: set[int] = set(recorded.get("chunks_done", [])) if recorded else set()
    chunks = [
        (start, min(start + chunk_size, staged.count))
        for start in range(0, staged.count, chunk_size)
    ]
    if done:
        log.info(
            "resuming the build in %s: %d of %d chunks already encoded",
            staged.directory,
            len(done),
            len(chunks),
        )
    embeddings = staged.embeddings(encoder.dim, dtype, resume=recorded is not None)
    connect(address, num_cpus)
    task = ray.remote(encode_chunk).options(num_cpus=1)
    passages = str(staged.directory / PASSAGES_FILE)
    pending = {
        task.remote(spec, passages, start, stop, batch_size, dtype): number
        for number, (start, stop) in enumerate(chunks)
        if number not in done
    }
    encoded = sum(stop - start for number, (start, stop) in enumerate(chunks) if number in done)
    truncation = Truncation.recorded(recorded)
    with tqdm(
        total=staged.count, initial=encoded, unit="passage", desc="encoding", disable=not progress
    ) as bar:
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            number = pending.pop(finished[0])
            start, stop = chunks[number]
            vectors, cut = ray.get(finished[0])
            check_finite(vectors.astype(np.float32), range(start, stop))
            embeddings[start:stop] = vectors
            embeddings.flush()
            done.add(number)
            truncation = truncation.combined(cut)
            staged.record(plan, chunks_done=sorted(done), **truncation.record())
            bar.update(stop - start)
    del embeddings
    report(truncation, encoder, staged.count)
    record = EncoderRecord(type=encoder_type, fingerprint=encoder.fingerprint)
    return staged.publish(out, record, encoder.dim, dtype, {**(source or {}), "ray": True})


def build_shard_index(kb: str, declared: Declared, number: int, count: int) -> None:
    """Build shard ``number`` of ``count``'s index in the KB at ``kb``. Runs in a Ray worker."""
    knowledge_base = KnowledgeBase.open(Path(kb))
    knowledge_base.build_index(declared, progress=False, shard=knowledge_base.shards(count)[number])


def build_shard_indexes_on_ray(
    kb: KnowledgeBase,
    declared: Declared,
    shards: int,
    address: str = "local",
    num_cpus: int | None = None,
) -> None:
    """Every shard's index of ``declared``, built in parallel Ray tasks; shards already built
    are kept."""
    import ray

    missing = kb.unbuilt_shards(declared, shards)
    if len(missing) < shards:
        log.info("%d of %d shard indexes already built", shards - len(missing), shards)
    if missing:
        connect(address, num_cpus)
        task = ray.remote(build_shard_index).options(num_cpus=1)
        ray.get([task.remote(str(kb.directory), declared, s.number, shards) for s in missing])
