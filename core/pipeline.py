"""The pipeline: a validated spec whose components are built on first use.

``Pipeline.from_spec`` validates the whole spec (types resolved in the registry, every component's
parameters checked) but loads nothing heavy; each component is built the first time a method needs
it. A method whose component the spec does not declare raises :class:`MissingComponentError`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .context import BuildContext, Declared
from .errors import MissingComponentError, ParameterError, QuestionError, SpecError
from .protocols import Answer, Encoder, Generator, Marginalizer, Passage, Retrieved, Retriever
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
        self._building = threading.RLock()  # first uses from several threads build once
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
        """The component declared in ``[table]``, built on first use (once, however many
        threads ask at the same time)."""
        if table not in self._built:
            with self._building:
                if table not in self._built:
                    self._built[table] = self._build(self._declared(table, needed_by))
        return self._built[table]

    def _declared(self, table: str, needed_by: str) -> ComponentSpec:
        declared = self.spec.components.get(table)
        if declared is None:
            kinds = ", ".join(self.registry.names(table)) or "none registered"
            raise MissingComponentError(
                f"{needed_by} needs a {table}, but the spec {self.spec.source} has no "
                f'[{table}] table. Add one with type = "..." ({table} types: {kinds}).'
            )
        return declared

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
        """The ``k`` (default ``[pipeline] n_docs``) best passages for each question; no
        questions, an empty :class:`Retrieved`."""
        import torch

        _check_questions(questions)
        _check_k(k)
        if not questions:
            return self._nothing_retrieved(k or self.spec.pipeline.n_docs)
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
            queries, retrieved = self._retrieve_for_generation(questions)
            doc_logprior = self._doc_logprior(queries, retrieved)
            state = generator.start(self._question_text(questions), retrieved.passages)
            decoded = marginalizer.decode(generator, state, doc_logprior, settings)
        answers = []
        opening = len(generator.start_token_ids)
        for sequence, score, passages in zip(
            decoded.sequences, decoded.scores.tolist(), retrieved.passages, strict=True
        ):
            tokens = [t for t in sequence[opening:] if t not in generator.special_token_ids]
            found = [passage for passage in passages if passage.id >= 0]
            answers.append(Answer(generator.decode(tokens), float(score), tokens, found))
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
        queries, retrieved = self._retrieve_for_generation(questions)
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
        k = k if k is not None else self.spec.pipeline.n_docs
        return queries, retriever.retrieve(queries.detach(), k)

    def _retrieve_for_generation(self, questions: Sequence[str]) -> tuple[torch.Tensor, Retrieved]:
        """``n_docs`` passages per question, as :func:`_found_documents` lays them out."""
        queries, retrieved = self._retrieve(questions, None)
        return queries, _found_documents(questions, retrieved)

    def _nothing_retrieved(self, k: int) -> Retrieved:
        """What ``retrieve([])`` returns: no rows, ``k`` columns."""
        import torch

        return Retrieved(
            ids=torch.zeros((0, k), dtype=torch.int64),
            scores=torch.zeros((0, k)),
            doc_vectors=torch.zeros((0, k, self.encoder.dim)),
            passages=[],
        )

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
    """Refuse anything but a list of strings that are valid Unicode text."""
    if isinstance(questions, str):
        raise QuestionError("questions must be a list of strings, not one string")
    for number, question in enumerate(questions, start=1):
        if not isinstance(question, str):
            raise QuestionError(
                f"question {number} is {type(question).__name__} {question!r}, not a string. "
                f"Pass questions as a list of str (decode bytes first)."
            )
        _check_text(number, question)


def _check_text(number: int, question: str) -> None:
    """Refuse a question with a lone surrogate: Python's stand-in for a byte that was not UTF-8
    (``sys.argv``, ``surrogateescape``) or half of a broken UTF-16 pair; no tokenizer reads it."""
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(question[error.start])
        undecoded = 0xDC80 <= code <= 0xDCFF
        what = (
            f"the byte 0x{code - 0xDC00:02x}, which is not UTF-8 (the text was decoded with "
            f"another encoding, or is binary)"
            if undecoded
            else f"the lone surrogate U+{code:04X} (half of a UTF-16 pair)"
        )
        raise QuestionError(
            f"question {number} is not valid text: character {error.start + 1} is {what}. "
            f"Give the question as UTF-8 text."
        ) from None


def _check_k(k: int | None) -> None:
    """``k`` is None (``[pipeline] n_docs``) or a whole number of at least 1."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ParameterError(
            f"retrieve(k={k!r}): k is the number of passages per question, a whole number of "
            f"at least 1; leave it out to use [pipeline] n_docs."
        )


def _found_documents(questions: Sequence[str], retrieved: Retrieved) -> Retrieved:
    """``retrieved`` laid out for generation, whose rows are ``B * k`` (passage, question)
    pairs: columns where no question found a passage (a knowledge base smaller than ``k``) are
    dropped, and the gaps left in other rows hold an empty passage with id ``-1``, which the doc
    prior weighs at zero. A question without any passage is refused."""
    found = retrieved.ids >= 0
    counts = found.sum(dim=1).tolist()
    if 0 in counts:
        number = counts.index(0)
        raise ParameterError(
            f"no passage was retrieved for question {number + 1} ({questions[number]!r}): the "
            f"knowledge base or its index returned none. Check it with ragloom kb info --verify."
        )
    k = max(counts)
    if k == retrieved.ids.shape[1] and min(counts) == k:
        return retrieved
    gap = Passage(-1, "", "", float("-inf"))
    return Retrieved(
        ids=retrieved.ids[:, :k],
        scores=retrieved.scores[:, :k],
        doc_vectors=retrieved.doc_vectors[:, :k],
        passages=[[*row, *[gap] * (k - len(row))] for row in retrieved.passages],
    )
