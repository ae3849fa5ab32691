"""Checks ``ragloom validate`` makes beyond the schema, before any model or index loads.

Components opt in through capabilities (:mod:`ragloom.protocols`), class methods that read files
only:

- an encoder that is :class:`EncoderFromFiles`: its fingerprint and vector size;
- a generator that is :class:`DecoderFromFiles`: what decoding memory depends on
  (:class:`DecoderShape`);
- a retriever with :class:`RetrieverPreflight`: notes (sizes, memory estimates) and problems
  (an encoder that does not match the knowledge base);
- a ``[reranker]``: ``candidates`` at least ``n_docs``.

From the vector size and the decoder shape, validate estimates the memory one question needs
(retrieval's ``n_docs`` doc vectors, where a retriever searches a vector index; decoding's
``n_docs * num_beams`` rows of key/value caches and vocabulary-wide log-probs) and refuses
settings that cannot fit in the memory available. A text retriever (``bm25``) holds no doc
vectors: its own preflight notes what its index and scoring hold.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .context import BuildContext
from .errors import RagloomError
from .protocols import (
    DecoderFromFiles,
    EncoderFromFiles,
    FusesDocuments,
    RetrieverPreflight,
    candidates_problem,
    reader_problem,
)
from .registry import Registry
from .spec import Spec
from .spec.checkpoint_types import untyped_notes

LOGIT_COPIES = 4
"""float32 vocabulary-wide vectors a decoding row holds at a step: the logits, their
log-softmax, the processed (or doc-mixed) copy and the search's accumulated scores."""
CACHE_COPIES = 2
"""Key/value caches alive at once while beams are reordered (the cache and its selected copy)."""
DOC_VECTOR_COPIES = 2
"""float32 copies of each retrieved document's vector (the KB's gather, the doc prior's)."""
ID_AND_SCORE_BYTES = 8 + 4
"""Per retrieved document: its int64 id and float32 score."""


@dataclass(frozen=True)
class DecoderShape:
    """What a generator's decoding memory depends on, read from its config (no weights).

    ``kv_width``: key (or value) numbers per token and layer; ``context_tokens``: tokens each
    row attends to besides its answer (passage and question); ``value_bytes``: bytes per cached
    number; ``answer_positions``: the most answer tokens the model has positions for (None:
    no limit known).
    """

    vocab_size: int
    layers: int
    kv_width: int
    context_tokens: int
    value_bytes: int
    answer_positions: int | None = None
    fused: DecoderShape | None = None
    """The shape of a row that reads all passages of a question in one context (the fusion
    marginalizer), when it is one per question whatever ``n_docs`` is (a causal LM's fused
    prompt); None: a fused row costs what ``n_docs`` rows of this shape cost."""

    def bytes_per_row(self, max_length: int) -> int:
        """Memory of one decoding row (one beam of one document) at its longest."""
        tokens = self.context_tokens + max_length
        cache = self.layers * 2 * self.kv_width * tokens * self.value_bytes
        return CACHE_COPIES * cache + LOGIT_COPIES * 4 * self.vocab_size


@dataclass
class Preflight:
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def preflight(spec: Spec, registry: Registry) -> Preflight:
    """Notes and problems found from the spec's files without loading models or indexes."""
    result = Preflight(notes=untyped_notes(spec))
    context = BuildContext(spec.base_dir, spec.pipeline)
    encoder = _registered(spec, registry, "encoder")
    fingerprint = dim = shape = None
    if isinstance(encoder, EncoderFromFiles):
        fingerprint = _from_files(spec, context, "encoder", encoder.fingerprint_from_spec, result)
        dim = _from_files(spec, context, "encoder", encoder.dim_from_spec, result)
    if fingerprint is not None:
        result.notes.append(f"[encoder] fingerprint {fingerprint}")
    retriever = _registered(spec, registry, "retriever")
    if isinstance(retriever, RetrieverPreflight):
        declared = spec.components["retriever"]
        children = declared.declared_children(registry)
        notes, problems = retriever.preflight(declared.params, context, fingerprint, **children)
        result.notes.extend(notes)
        result.problems.extend(problems)
    reranker = spec.components.get("reranker")
    if reranker is not None:
        problem = candidates_problem(reranker.type, reranker.params, spec.pipeline.n_docs)
        result.problems.extend([problem] if problem is not None else [])
    generator = _registered(spec, registry, "generator")
    marginalizer = _registered(spec, registry, "marginalizer")
    if generator is not None and marginalizer is not None:
        problem = reader_problem(marginalizer, generator, spec.components["generator"].type)
        result.problems.extend([problem] if problem is not None else [])
    if isinstance(generator, DecoderFromFiles):
        shape = _from_files(spec, context, "generator", generator.decoder_shape_from_spec, result)
    _check_memory(spec, dim, shape, isinstance(marginalizer, FusesDocuments), result)
    return result


def _registered(spec: Spec, registry: Registry, table: str) -> object:
    """The registered class of the spec's ``[table]`` (None without the table)."""
    declared = spec.components.get(table)
    return None if declared is None else registry.load(table, declared.type)


def _from_files(
    spec: Spec,
    context: BuildContext,
    table: str,
    compute: Callable[[Any, BuildContext], Any],
    result: Preflight,
) -> Any:
    """What the component of ``[table]`` tells from its files through ``compute``; None when
    the files cannot tell (noted)."""
    try:
        return compute(spec.components[table].params, context)
    except RagloomError as error:
        note = f"[{table}] not checked: {error}"
        if note not in result.notes:
            result.notes.append(note)
        return None


def _check_memory(
    spec: Spec, dim: int | None, shape: DecoderShape | None, fused: bool, result: Preflight
) -> None:
    """Note the memory a question needs; refuse settings that cannot fit or cannot run.
    ``fused``: the marginalizer reads all passages of a question in one row."""
    generation, n_docs = spec.generation, spec.pipeline.n_docs
    per_document, per_question, parts = 0, 0, []
    if dim is not None and searches_vectors(spec):
        retrieval = DOC_VECTOR_COPIES * 4 * dim + ID_AND_SCORE_BYTES
        per_document += retrieval
        parts.append(f"retrieval {size(n_docs * retrieval)}")
    if shape is not None:
        row = shape.fused if fused and shape.fused is not None else shape
        decoding = generation.num_beams * row.bytes_per_row(generation.max_length)
        if row is shape:
            per_document += decoding
        else:
            per_question += decoding
        parts.append(f"decoding {size(decoding if row is not shape else n_docs * decoding)}")
        _check_positions(generation.max_length, row, result)
    if not parts:
        return
    needed = n_docs * per_document + per_question
    result.notes.append(
        f"[pipeline] n_docs {n_docs}, [generation] num_beams {generation.num_beams}, "
        f"max_length {generation.max_length}: about {size(needed)} per question "
        f"({', '.join(parts)})"
    )
    available = available_memory()
    if available is not None and needed > available:
        fits = max(0, available - per_question) // per_document if per_document else 0
        advice = (
            f"At most n_docs = {fits} fits with these settings"
            if fits
            else "Not even n_docs = 1 fits with these settings"
        )
        result.problems.append(
            f"[pipeline] n_docs = {n_docs} with [generation] num_beams = {generation.num_beams} "
            f"and max_length = {generation.max_length}: one question needs about {size(needed)} "
            f"({', '.join(parts)}), and this machine has {size(available)} of memory "
            f"available. {advice}; lower n_docs, num_beams or max_length."
        )


def searches_vectors(spec: Spec) -> bool:
    """Whether retrieval gathers doc vectors: ``[retriever]``, or a retriever nested in it (a
    hybrid's member), searches a vector index (``[retriever.index]``), as dense ones do."""
    retriever = spec.components.get("retriever")
    return retriever is not None and any(table.kind == "index" for _, table in retriever.nested())


def _check_positions(max_length: int, shape: DecoderShape, result: Preflight) -> None:
    """Refuse answers longer than the generator has positions for."""
    room = shape.answer_positions
    if room is None or max_length <= room:
        return
    if room > 0:
        result.problems.append(
            f"[generation] max_length = {max_length}: after contexts of up to "
            f"{shape.context_tokens} tokens the generator has positions for at most {room} "
            f"answer tokens; set max_length to at most {room}, or shorten the contexts "
            f"([generator] max_prompt_length, max_fused_prompt_length, max_context_length)."
        )
    else:
        result.problems.append(
            f"[generator] contexts of up to {shape.context_tokens} tokens leave the generator "
            f"no positions for an answer (it has {shape.context_tokens + room}): lower "
            f"max_prompt_length (or max_fused_prompt_length under fusion) in [generator]."
        )


def available_memory() -> int | None:
    """Bytes of memory available for new allocations (Linux' MemAvailable, else free pages);
    None where the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def size(count: int) -> str:
    """Bytes as MiB, or GiB from 1 GiB on."""
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"
