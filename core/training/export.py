"""The trained model as a directory that loads two ways: ``[pipeline] checkpoint = DIR`` (the
RAG checkpoint layout, :mod:`ragloom.rag_checkpoint`) and ``DIR/spec.toml``, the training spec
rewritten to take encoder and generator from ``DIR`` and everything else from where it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

from .. import atomic
from ..artifacts import file_marker
from ..protocols import Trainable
from ..rag_checkpoint import write_rag_checkpoint
from ..spec import Spec, load_spec

SPEC_FILE = "spec.toml"
CHECKPOINT_KIND = file_marker("trained checkpoint", SPEC_FILE)


def trained_spec(spec: Spec, encoder: Trainable, generator: Trainable) -> dict[str, Any]:
    """``spec`` for a checkpoint directory holding the trained encoder and generator: every
    other path absolute, ``checkpoint = "."`` (the directory of the spec file itself)."""
    data = spec.with_absolute_paths()
    data["pipeline"]["checkpoint"] = "."
    data["encoder"] = encoder.checkpoint_table(data["encoder"])
    data["generator"] = generator.checkpoint_table(data["generator"])
    return data


def export_checkpoint(
    directory: Path, spec: Spec, encoder: Trainable, generator: Trainable
) -> None:
    """Write the checkpoint and its ``spec.toml`` at ``directory``, atomically."""
    question, answer = encoder.trainable_model(), generator.trainable_model()
    text = tomli_w.dumps(trained_spec(spec, encoder, generator))
    with atomic.directory(directory, CHECKPOINT_KIND, root=directory.parent) as staging:
        write_rag_checkpoint(
            staging,
            question.model,
            question.tokenizer,
            answer.model,
            answer.tokenizer,
            n_docs=spec.pipeline.n_docs,
        )
        (staging / SPEC_FILE).write_text(text, encoding="utf-8")
        load_spec(staging / SPEC_FILE)  # what was written reads back
