"""The pipeline: a validated spec whose components are built on first use.

``Pipeline.from_spec`` validates the whole spec (types resolved in the registry, every component's
parameters checked) but loads nothing heavy; each component is built the first time a method needs
it. A method whose component the spec does not declare raises :class:`MissingComponentError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .context import BuildContext, Declared
from .errors import MissingComponentError, SpecError
from .protocols import Answer, Encoder, Generator, Marginalizer, Retrieved, Retriever
from .registry import Registry
from .spec import ComponentSpec, GenerationSettings, Spec, load_spec
from .spec.problems import describe

if TYPE_CHECKING:
    import torch


class Pipeline:
    """Encoder → retriever → generator → marginalizer, as declared in a spec."""

    def __init__(self, spec: Spec, registry: Registry) -> None:
        self.spec = spec
        self.registry = registry
        types = {table: component.type for table, component in spec.components.items()}
        self.context = BuildContext(spec.base_dir, spec.pipeline, self.component, types)
        self._built: dict[str, Any] = {}
        self._checked_compatibility = False

    @classmethod
    def from_spec(
        cls,
        spec: str | Path | Mapping[str, Any] | Spec,
        overrides: Mapping[str, Any] | None = None,
        registry: Registry | None = None,
    ) -> Pipeline:
        """Validate ``spec`` (a TOML path, a mapping, or a :class:`Spec`) with ``overrides``.

        ``overrides`` maps dotted key paths to values: ``{"retriever.index.type": "hnsw"}``.
        Raises :class:`SpecError` listing every problem found.
        """
        if registry is None:
            from .plugin_manager import get_registry

            registry = get_registry()
        if isinstance(spec, Spec):
            if overrides:
                spec = load_spec(spec, overrides, registry)
        else:
            spec = load_spec(spec, overrides, registry)
        return cls(spec, registry)

    def share(self, other: Pipeline, *tables: str) -> Pipeline:
        """Use ``other``'s built components for ``tables`` (same objects, same weights): how an
        experiment swaps one part, e.g. the knowledge base, and keeps the models loaded."""
        for table in tables:
            self._built[table] = other.component(table, "share()")
        return self

    def to_spec(self) -> str:
        """The pipeline's spec as TOML, every default explicit; ``from_spec`` reads it back."""
        return self.spec.to_toml()

    # --- components -------------------------------------------------------------------------

    def component(self, table: str, needed_by: str = "this call") -> Any:
        """The component declared in ``[table]``, built on first use."""
        if table not in self._built:
            declared = self.spec.components.get(table)
            if declared is None:
                kinds = ", ".join(self.registry.names(table)) or "none registered"
                raise MissingComponentError(
                    f"{needed_by} needs a {table}, but the spec {self.spec.source} has no "
                    f'[{table}] table. Add one with type = "..." ({table} types: {kinds}).'
                )
            self._built[table] = self._build(declared)
        return self._built[table]

    def _build(self, declared: ComponentSpec) -> Any:
        """Build a component, never in inference mode (its weights may be trained later)."""
        import torch

        with torch.inference_mode(False):
            return self._build_now(declared)

    def _build_now(self, declared: ComponentSpec) -> Any:
        children = {
            key: Declared(child.type, self.registry.load(child.kind, child.type), child.params)
            for key, child in declared.children.items()
        }
        factory = self.registry.load(declared.kind, declared.type)
        return factory.from_spec(declared.params, self.context, **children)

    @property
    def encoder(self) -> Encoder:
        """The question encoder of ``[encoder]``."""
        encoder: Encoder = self.component("encoder", "retrieval")
        return encoder

    @property
    def retriever(self) -> Retriever:
        """The retriever of ``[retriever]``."""
        retriever: Retriever = self.component("retriever", "retrieval")
        return retriever

    @property
    def generator(self) -> Generator:
        """The generator of ``[generator]``."""
        generator: Generator = self.component("generator", "generation")
        return generator

    @property
    def marginalizer(self) -> Marginalizer:
        """The marginalizer of ``[marginalizer]``."""
        marginalizer: Marginalizer = self.component("marginalizer", "generation")
        return marginalizer

    # --- the public methods -----------------------------------------------------------------

    def retrieve(self, questions: Sequence[str], k: int | None = None) -> Retrieved:
        """The ``k`` (default ``[pipeline] n_docs``) best passages for each question."""
        import torch

        with torch.inference_mode():
            _, retrieved = self._retrieve(questions, k)
        return retrieved

    def generate(self, questions: Sequence[str], **generation: Any) -> list[Answer]:
        """One answer per question; ``generation`` overrides keys of ``[generation]``.

        Retrieves ``n_docs`` passages per question, starts the generator on every
        (passage, question) context once, and lets the marginalizer decode over all questions
        together.
        """
        import torch

        settings = self._generation_settings(generation)
        _check_questions(questions)
        if not questions:
            return []
        generator, marginalizer = self.generator, self.marginalizer
        with torch.inference_mode():
            queries, retrieved = self._retrieve(questions, None)
            doc_logprior = self._doc_logprior(queries, retrieved)
            state = generator.start(self._question_text(questions), retrieved.passages)
            decoded = marginalizer.decode(generator, state, doc_logprior, settings)
        answers = []
        opening = len(generator.start_token_ids)
        for sequence, score, passages in zip(
            decoded.sequences, decoded.scores.tolist(), retrieved.passages, strict=True
        ):
            tokens = [t for t in sequence[opening:] if t not in generator.special_token_ids]
            answers.append(Answer(generator.decode(tokens), float(score), tokens, passages))
        return answers

    def loss(
        self,
        questions: Sequence[str],
        targets: Sequence[str],
        reduce: bool = True,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        """Negative marginal log-likelihood of ``targets`` given ``questions``; differentiable.

        Gradients reach the question encoder through the doc scores and the generator through
        its token log-probabilities. Returns a scalar when ``reduce`` (summed over the batch), else
        one value per question.
        """
        if len(questions) != len(targets):
            raise ValueError(
                f"loss needs one target per question: got {len(questions)} questions and "
                f"{len(targets)} targets."
            )
        from .tensors import shift_left

        generator, marginalizer = self.generator, self.marginalizer
        queries, retrieved = self._retrieve(questions, None)
        doc_logprior = self._doc_logprior(queries, retrieved)
        batch, k = doc_logprior.shape
        labels = generator.encode_targets(targets).to(doc_logprior.device)
        state = generator.start(self._question_text(questions), retrieved.passages)
        logprobs = generator.score(state, labels.repeat_interleave(k, dim=0))
        return marginalizer.loss(
            logprobs.view(batch, k, *logprobs.shape[1:]),
            doc_logprior,
            shift_left(labels, generator.pad_token_id),
            generator.pad_token_id,
            reduce=reduce,
            label_smoothing=label_smoothing,
        )

    # --- internals ----------------------------------------------------------------------------

    def _retrieve(self, questions: Sequence[str], k: int | None) -> tuple[torch.Tensor, Retrieved]:
        _check_questions(questions)
        encoder, retriever = self.encoder, self.retriever
        if not self._checked_compatibility:
            check = getattr(retriever, "check_encoder", None)
            if check is not None:
                check(encoder)
            self._checked_compatibility = True
        queries = encoder.encode_queries(questions)
        return queries, retriever.retrieve(queries.detach(), k or self.spec.pipeline.n_docs)

    def _question_text(self, questions: Sequence[str]) -> list[str]:
        """The questions as the generator sees them: through the encoder's ``question_text``
        when it has one (the DPR encoder reproduces transformers' lowercased, re-spaced
        question), else as given."""
        rewrite = getattr(self.encoder, "question_text", None)
        return list(rewrite(questions)) if rewrite is not None else list(questions)

    @staticmethod
    def _doc_logprior(queries: torch.Tensor, retrieved: Retrieved) -> torch.Tensor:
        """``log_softmax`` over documents of ``q · doc_vector``; ``-inf`` for missing documents."""
        import torch

        vectors = retrieved.doc_vectors.to(device=queries.device, dtype=queries.dtype)
        scores = torch.bmm(queries.unsqueeze(1), vectors.transpose(1, 2)).squeeze(1)
        missing = retrieved.ids.to(queries.device) < 0
        return torch.log_softmax(scores.masked_fill(missing, float("-inf")), dim=1)

    def _generation_settings(self, generation: Mapping[str, Any]) -> GenerationSettings:
        merged = {**self.spec.generation.model_dump(), **generation}
        try:
            return GenerationSettings.model_validate(merged)
        except ValidationError as error:
            raise SpecError(
                "generate()", describe(error, ("generation",), GenerationSettings)
            ) from None


def _check_questions(questions: Sequence[str]) -> None:
    if isinstance(questions, str):
        raise TypeError("questions must be a list of strings, not one string")
