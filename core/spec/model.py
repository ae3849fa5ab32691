"""What a validated spec holds: the fixed tables and the resolved component tables (the tables
of :data:`ragloom.kinds.SPEC_TABLES`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .devices import Device
from .paths import SpecPath, absolute_paths

if TYPE_CHECKING:
    from ..declared import Declared
    from ..registry import Registry

SCHEMA_VERSION = 1

MAX_K = 10_000
"""The most passages a retrieval returns per question (``retrieve(k=...)``, ``eval -k``,
``index compare -k``): more is a mistake, not a larger experiment (docs/spec.md, "Limits")."""

MAX_LENGTH = 32_768
"""The largest ``[generation] max_length`` (and ``generate(max_length=...)``): beyond the
positions of any generator ragloom runs (docs/spec.md, "Limits")."""

MAX_STOP_STRINGS = 16
"""The most ``[generation] stop`` strings (docs/spec.md, "Limits")."""

MAX_STOP_LENGTH = 64
"""The most characters of one ``[generation] stop`` string (docs/spec.md, "Limits")."""


class Settings(BaseModel):
    """A fixed table of the spec: unknown keys are errors, and values are strictly typed
    (``true`` is not a number, ``1e8`` is not a whole number)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PipelineSettings(Settings):
    """``[pipeline]``: how many documents to retrieve, an optional RAG checkpoint directory, and
    how many threads torch and faiss use."""

    n_docs: int = Field(default=5, ge=1, description="documents retrieved per question")
    checkpoint: SpecPath | None = Field(
        default=None,
        description="a RAG checkpoint directory (transformers' save_pretrained, or ragloom "
        "train's) supplying encoder and generator",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="threads of torch and faiss, set when a component is built (unset: the "
        "process's setting; the CLI's default is OMP_NUM_THREADS, else the CPUs this process "
        "may use)",
    )


class GenerationSettings(Settings):
    """``[generation]``: decoding settings shared by every marginalizer."""

    num_beams: int = Field(default=1, ge=1, description="beam width (1: greedy)")
    max_length: int = Field(default=50, ge=1, le=MAX_LENGTH, description="maximum generated tokens")
    min_length: int = Field(default=0, ge=0, description="minimum generated tokens before EOS")
    length_penalty: float = Field(
        default=1.0, description="beam scores are divided by length ** length_penalty"
    )
    early_stopping: bool = Field(
        default=False, description="beam search stops once num_beams hypotheses are finished"
    )
    repetition_penalty: float = Field(
        default=1.0,
        gt=0,
        allow_inf_nan=False,
        description="the log-prob of a token already in the sequence (start tokens included) is "
        "multiplied by it (transformers' repetition_penalty on log-probs); 1: off. rag-sequence "
        "greedy (num_beams = 1) may pick other tokens than transformers, whose greedy search "
        "divides the generator's positive raw logits instead",
    )
    no_repeat_ngram_size: int = Field(
        default=0, ge=0, description="no n-gram of this many tokens occurs twice (0: off)"
    )
    stop: list[str] = Field(
        default=[],
        description=f"stop strings: a hypothesis ends once its generated text contains one (at "
        f"most {MAX_STOP_STRINGS}, each 1 to {MAX_STOP_LENGTH} characters)",
    )

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop: list[str]) -> list[str]:
        if len(stop) > MAX_STOP_STRINGS:
            raise ValueError(
                f"{len(stop)} stop strings, at most {MAX_STOP_STRINGS} are allowed: keep the "
                "ones that matter"
            )
        for number, text in enumerate(stop, start=1):
            if not text:
                raise ValueError(
                    f"stop string {number} is empty, and an empty string would end every answer "
                    "before its first token: remove it"
                )
            if len(text) > MAX_STOP_LENGTH:
                raise ValueError(
                    f"stop string {number} has {len(text)} characters, at most "
                    f"{MAX_STOP_LENGTH} are allowed: shorten it"
                )
        return stop


TrainablePart = Literal["question_encoder", "generator"]


class TrainSettings(Settings):
    """``[train]``: how ``ragloom train`` fine-tunes the pipeline (the marginalized likelihood of
    the answers; the passage encoder and the index stay fixed)."""

    train: list[TrainablePart] = Field(
        default=["question_encoder", "generator"],
        min_length=1,
        description="the parts that learn; the others are frozen",
    )
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    learning_rate: float = Field(default=3e-5, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Literal["constant", "linear", "cosine"] = Field(
        default="linear", description="learning rate after warmup: constant, or decaying to 0"
    )
    warmup_steps: int = Field(default=0, ge=0, description="optimizer steps of linear warmup")
    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(
        default=None, ge=1, description="stop after this many optimizer steps (default: epochs)"
    )
    batch_size: int = Field(default=8, ge=1, description="questions per forward pass")
    gradient_accumulation: int = Field(
        default=1, ge=1, description="forward passes per optimizer step"
    )
    n_docs: int | None = Field(
        default=None, ge=1, description="documents per question in training (default: [pipeline])"
    )
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    max_grad_norm: float = Field(
        default=1.0, ge=0, description="gradient norm clipping; 0 turns it off"
    )
    gradient_checkpointing: bool = Field(
        default=False, description="recompute the generator's activations in backward"
    )
    device: Device = Field(
        default="auto", description='"auto" (CUDA when present), "cpu", "cuda" or "cuda:N"'
    )
    seed: int = Field(default=0, description="model dropout and data order")
    eval_every: int = Field(
        default=0, ge=0, description="optimizer steps between dev evaluations (0: each epoch end)"
    )
    save_every: int = Field(
        default=50, ge=1, description="optimizer steps between resumable training states"
    )
    save_state: bool = Field(
        default=True,
        description="keep a resumable state in OUT/state/ (the trained weights and the "
        "optimizer's: 3x the trained weights with adam or adamw); false: only OUT/best/, and a "
        "killed run starts over",
    )
    best_metric: Literal["f1", "exact_match", "loss"] = Field(
        default="f1", description="the dev metric that picks the best checkpoint"
    )
    dev_limit: int | None = Field(
        default=None, ge=1, description="evaluate on the first N dev questions only"
    )


@dataclass(frozen=True)
class ComponentSpec:
    """A resolved component table: its kind, registered ``type``, validated params, children
    (one per slot: ``[retriever.index]``) and named children (per named slot, by name:
    ``[retriever.members.NAME]``)."""

    kind: str
    type: str
    params: BaseModel
    children: dict[str, ComponentSpec] = field(default_factory=dict)
    named: dict[str, dict[str, ComponentSpec]] = field(default_factory=dict)

    def declared(self, registry: Registry) -> Declared:
        """The table as a parent receives it: its registered class loaded, not built, with its
        own children declared."""
        from ..declared import Declared

        component = registry.load(self.kind, self.type)
        return Declared(self.type, component, self.params, self.declared_children(registry))

    def declared_children(self, registry: Registry) -> dict[str, Any]:
        """The nested tables as ``from_spec``'s ``**children``: each slot's as a
        :meth:`declared`, each named slot's as a mapping of name to :meth:`declared`."""
        children: dict[str, Any] = {
            slot: child.declared(registry) for slot, child in self.children.items()
        }
        for key, members in self.named.items():
            children[key] = {name: child.declared(registry) for name, child in members.items()}
        return children

    def nested(self) -> list[tuple[tuple[str, ...], ComponentSpec]]:
        """Every nested component with its key path below this table, depth first:
        ``(("index",), ...)``, ``(("members", "bm25"), ...)``."""
        found: list[tuple[tuple[str, ...], ComponentSpec]] = []
        below: list[tuple[tuple[str, ...], ComponentSpec]]
        below = [((key,), child) for key, child in self.children.items()]
        below += [((key, n), c) for key, group in self.named.items() for n, c in group.items()]
        for path, child in below:
            found.append((path, child))
            found.extend(((*path, *deeper), grandchild) for deeper, grandchild in child.nested())
        return found

    def to_dict(self) -> dict[str, Any]:
        """The table as it would be written in TOML (None values left out)."""
        return self._table(lambda child: child.to_dict())

    def with_absolute_paths(self, base_dir: Path) -> dict[str, Any]:
        """:meth:`to_dict`, with every path key made absolute against ``base_dir``."""
        table = self._table(lambda child: child.with_absolute_paths(base_dir))
        absolute_paths(table, type(self.params), base_dir)
        return table

    def _table(self, write: Callable[[ComponentSpec], dict[str, Any]]) -> dict[str, Any]:
        """``type``, the params, and each nested table as ``write`` writes it."""
        table: dict[str, Any] = {"type": self.type}
        table.update(self.params.model_dump(mode="json", exclude_none=True))
        for key, child in self.children.items():
            table[key] = write(child)
        for key, members in self.named.items():
            table[key] = {name: write(child) for name, child in members.items()}
        return table


@dataclass(frozen=True)
class Spec:
    """A validated spec. Equality compares content, not where it was read from."""

    pipeline: PipelineSettings
    generation: GenerationSettings
    components: dict[str, ComponentSpec]
    train: TrainSettings = field(default_factory=TrainSettings)
    source: str = field(default="<dict>", compare=False)
    base_dir: Path = field(default_factory=Path.cwd, compare=False)
    inferred: dict[str, str] = field(default_factory=dict, compare=False)
    """The tables whose ``type`` the spec left out and ``[pipeline] checkpoint`` gave (their
    types come from its config), each with what says so; the dumped spec writes them out."""

    def to_dict(self) -> dict[str, Any]:
        """The spec as a TOML-ready mapping, every default made explicit."""
        data: dict[str, Any] = {"schema": SCHEMA_VERSION}
        data["pipeline"] = self.pipeline.model_dump(mode="json", exclude_none=True)
        for table, component in self.components.items():
            data[table] = component.to_dict()
        data["generation"] = self.generation.model_dump(mode="json", exclude_none=True)
        data["train"] = self.train.model_dump(mode="json", exclude_none=True)
        return data

    def with_absolute_paths(self) -> dict[str, Any]:
        """:meth:`to_dict` with every path made absolute, for a spec written elsewhere."""
        data = self.to_dict()
        absolute_paths(data["pipeline"], PipelineSettings, self.base_dir)
        for table, component in self.components.items():
            data[table] = component.with_absolute_paths(self.base_dir)
        return data

    def to_toml(self) -> str:
        """The spec as TOML text; loading it gives an equal spec."""
        return tomli_w.dumps(self.to_dict())
