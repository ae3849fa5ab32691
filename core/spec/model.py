"""What a validated spec holds: the fixed tables and the resolved component tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

COMPONENT_TABLES: dict[str, str] = {
    "encoder": "encoder",
    "retriever": "retriever",
    "generator": "generator",
    "marginalizer": "marginalizer",
}
"""Top-level tables that declare a component, and the registry kind each resolves in."""


class Settings(BaseModel):
    """A fixed table of the spec: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelineSettings(Settings):
    """``[pipeline]``: how many documents to retrieve, and an optional RAG checkpoint directory."""

    n_docs: int = Field(default=5, ge=1, description="documents retrieved per question")
    checkpoint: str | None = Field(
        default=None,
        description="a transformers RAG save_pretrained directory supplying encoder and generator",
    )


class GenerationSettings(Settings):
    """``[generation]``: decoding settings shared by every marginalizer."""

    num_beams: int = Field(default=1, ge=1, description="beam width (1: greedy)")
    max_length: int = Field(default=50, ge=1, description="maximum generated tokens")
    min_length: int = Field(default=0, ge=0, description="minimum generated tokens before EOS")
    length_penalty: float = Field(
        default=1.0, description="beam scores are divided by length ** length_penalty"
    )
    early_stopping: bool = Field(
        default=False, description="beam search stops once num_beams hypotheses are finished"
    )


@dataclass(frozen=True)
class ComponentSpec:
    """A resolved component table: its kind, registered ``type``, validated params, children."""

    kind: str
    type: str
    params: BaseModel
    children: dict[str, ComponentSpec] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The table as it would be written in TOML (None values left out)."""
        table: dict[str, Any] = {"type": self.type}
        table.update(self.params.model_dump(mode="json", exclude_none=True))
        for key, child in self.children.items():
            table[key] = child.to_dict()
        return table


@dataclass(frozen=True)
class Spec:
    """A validated spec. Equality compares content, not where it was read from."""

    pipeline: PipelineSettings
    generation: GenerationSettings
    components: dict[str, ComponentSpec]
    source: str = field(default="<dict>", compare=False)
    base_dir: Path = field(default_factory=Path.cwd, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a TOML-ready mapping, every default made explicit."""
        data: dict[str, Any] = {"schema": SCHEMA_VERSION}
        data["pipeline"] = self.pipeline.model_dump(mode="json", exclude_none=True)
        for table, component in self.components.items():
            data[table] = component.to_dict()
        data["generation"] = self.generation.model_dump(mode="json", exclude_none=True)
        return data

    def to_toml(self) -> str:
        """The spec as TOML text; loading it gives an equal spec."""
        return tomli_w.dumps(self.to_dict())
