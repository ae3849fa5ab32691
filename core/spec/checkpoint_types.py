"""The types of ``[encoder]`` and ``[generator]`` that a transformers RAG checkpoint implies.

``RagTokenForGeneration.from_pretrained(checkpoint)`` builds its question encoder and its
generator from the checkpoint's ``config.json``. A spec whose ``[pipeline] checkpoint`` is such
a directory likewise needs no ``[encoder]`` or ``[generator]`` table, or one without ``type``:
a DPR question encoder is read by ``dpr``; an encoder-decoder generator (BART) by ``bart``, any
other (a causal LM) by ``causal-lm``. The config is read as JSON; nothing is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..rag_checkpoint import CheckpointError, is_rag_checkpoint, read_config
from .paths import absolute

if TYPE_CHECKING:
    from .model import Spec

INFERRED_TABLES = ("encoder", "generator")
"""The tables whose type a RAG checkpoint gives."""


@dataclass(frozen=True)
class CheckpointType:
    """The type of one table, and what in the checkpoint's config says so."""

    type: str
    reason: str


def checkpoint_type(table: str, checkpoint: Path) -> CheckpointType:
    """The type of ``[table]`` (one of :data:`INFERRED_TABLES`) that the RAG checkpoint at
    ``checkpoint`` implies; :class:`CheckpointError` says why there is none."""
    if not (checkpoint / "config.json").is_file():
        raise CheckpointError(f"{checkpoint} holds no config.json")
    if not is_rag_checkpoint(checkpoint):
        raise CheckpointError(
            f'{checkpoint / "config.json"} is not a RAG config (model_type "rag")'
        )
    if table == "encoder":
        encoder = read_config(checkpoint, "question_encoder").get("model_type")
        if encoder != "dpr":
            raise CheckpointError(
                f"its question encoder is {encoder!r}, not DPR, and its config does not say how "
                f"its vectors are pooled"
            )
        return CheckpointType("dpr", "its question encoder is DPR")
    generator = read_config(checkpoint, "generator")
    model_type = generator.get("model_type", "of no model_type")
    if generator.get("is_encoder_decoder") is True:
        return CheckpointType("bart", f"its generator is {model_type}, an encoder-decoder")
    return CheckpointType("causal-lm", f"its generator is {model_type}, not an encoder-decoder")


def untyped_notes(spec: Spec) -> list[str]:
    """For ``ragloom validate``: why each table of :data:`INFERRED_TABLES` that ``spec`` does
    not declare did not come from its ``[pipeline] checkpoint`` (none without a checkpoint)."""
    checkpoint = spec.pipeline.checkpoint
    if checkpoint is None:
        return []
    notes = []
    for table in INFERRED_TABLES:
        if table in spec.components:
            continue
        try:
            checkpoint_type(table, Path(absolute(checkpoint, spec.base_dir)))
        except CheckpointError as error:
            notes.append(
                f"[{table}] not declared, and [pipeline] checkpoint cannot give its type: "
                f"{str(error).rstrip('.')}"
            )
    return notes
