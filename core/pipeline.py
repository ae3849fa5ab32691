"""The pipeline: a validated spec whose components are built on first use.

``Pipeline.from_spec`` validates the whole spec (types resolved in the registry, every component's
parameters checked) but loads nothing heavy; each component is built the first time a method needs
it. A method whose component the spec does not declare raises :class:`MissingComponentError`.
"""

from __future__ import annotations

import threading
from collections.abc import Generator as Generator_
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from . import stop_strings
from .context import BuildContext
from .errors import MissingComponentError, ParameterError, QuestionError, SpecError
from .kinds import ENCODER, GENERATOR, MARGINALIZER, RERANKER, RETRIEVER, C, Kind
from .protocols import (
    Answer,
    ChecksEncoder,
    Decoded,
    Encoder,
    FusesDocuments,
    Generator,
    Marginalizer,
    Passage,
    Questions,
    Reranker,
    RerankerParams,
    Retrieved,
    Retriever,
    RewritesQuestions,
    StreamsDecoding,
    candidates_problem,
    reader_problem,
)
from .registry import Registry
from .spec import ComponentSpec, GenerationSettings, Spec, load_spec
from .spec.model import MAX_K
from .spec.problems import describe
from .spec.threads import use_threads

if TYPE_CHECKING:
    import torch


class AnswerStream:
    """One answer as it is decoded (:meth:`Pipeline.stream`): iterating yields pieces of its
    text; ``passages`` are known from the start (the documents read, best first); ``answer``
    is the :class:`Answer` once iteration has ended."""

    def __init__(self, passages: list[Passage], pieces: Generator_[str, None, Answer]) -> None:
        self.passages = passages
        self._answer: Answer | None = None
        self._pieces = pieces

    def __iter__(self) -> Iterator[str]:
        self._answer = yield from self._pieces

    @property
    def answer(self) -> Answer:
        if self._answer is None:
            raise ParameterError("AnswerStream.answer: read the stream to its end first.")
        return self._answer


class Pipeline:
    """Encoder → retriever (→ reranker) → generator → marginalizer, as declared in a spec."""

    def __init__(self, spec: Spec, registry: Registry) -> None:
        self.spec = spec
        self._candidates = _candidates(spec)
        _check_reader(spec, registry)
        self.registry = registry
        types = {table: component.type for table, component in spec.components.items()}
        self.context = BuildContext(spec.base_dir, spec.pipeline, self.component, types)
        self._built: dict[str, Any] = {}
        self._shared: dict[str, Pipeline] = {}
        """Tables whose component is another pipeline's (:meth:`share`), taken on first use."""
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
        """Use ``other``'s components for ``tables`` (same objects, same weights): how an
        experiment swaps one part, e.g. the knowledge base, and keeps the models loaded. A
        component ``other`` has not built yet is built by it when either pipeline first needs
        it, so sharing loads nothing that is never used."""
        if not isinstance(other, Pipeline):
            raise ParameterError(
                f"share(other, ...): other must be a Pipeline, not {type(other).__name__} "
                f"{other!r:.60}; pass the pipeline whose components to use."
            )
        for table in tables:
            if not isinstance(table, str):
                raise ParameterError(
                    f'share(other, {table!r:.40}): tables are names such as "encoder" or '
                    f'"generator", not {type(table).__name__}.'
                )
            other._declared(table, "share()")
            self._shared[table] = other
            self._built.pop(table, None)
        return self

    def to_spec(self) -> str:
        """The pipeline's spec as TOML, every default explicit and every path absolute (resolved
        against the spec's directory, as the pipeline reads them), so that the text names the
        same files wherever it is written; ``from_spec`` reads it back."""
        import tomli_w

        return tomli_w.dumps(self.spec.with_absolute_paths())

    # --- components -------------------------------------------------------------------------

    def component(self, table: str, needed_by: str = "this call") -> Any:
        """The component declared in ``[table]``, built on first use (once, however many
        threads ask at the same time; by the pipeline it is shared from, if any)."""
        if table not in self._built:
            with self._building:
                if table not in self._built:
                    owner = self._shared.get(table)
                    self._built[table] = (
                        self._build(self._declared(table, needed_by))
                        if owner is None
                        else owner.component(table, needed_by)
                    )
        return self._built[table]

    def require(self, *tables: str, needed_by: str) -> None:
        """Refuse, before any work, a spec that lacks one of ``tables`` (nothing is built)."""
        for table in tables:
            self._declared(table, needed_by)

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
        """Build a component, never in inference mode (its weights may be trained later),
        after setting ``[pipeline] threads`` when the spec gives it."""
        import torch

        if self.spec.pipeline.threads is not None:
            use_threads(self.spec.pipeline.threads)
        with torch.inference_mode(False):
            return self._build_now(declared)

    def _build_now(self, declared: ComponentSpec) -> Any:
        factory = self.registry.load(declared.kind, declared.type)
        children = declared.declared_children(self.registry)
        return factory.from_spec(declared.params, self.context, **children)

    def built(self, kind: Kind[C], needed_by: str = "this call") -> C:
        """The component of the top-level table of ``kind``, typed as the kind's protocol."""
        component: C = self.component(kind.name, needed_by)
        return component

    @property
    def encoder(self) -> Encoder:
        """The question encoder of ``[encoder]``."""
        return self.built(ENCODER, "retrieval")

    @property
    def retriever(self) -> Retriever:
        """The retriever of ``[retriever]``."""
        return self.built(RETRIEVER, "retrieval")

    @property
    def reranker(self) -> Reranker:
        """The reranker of ``[reranker]``."""
        return self.built(RERANKER, "reranking")

    @property
    def generator(self) -> Generator:
        """The generator of ``[generator]``."""
        return self.built(GENERATOR, "generation")

    @property
    def marginalizer(self) -> Marginalizer:
        """The marginalizer of ``[marginalizer]``."""
        return self.built(MARGINALIZER, "generation")

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
            return self._retrieve(questions, k)

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
        self._require_reader()
        with torch.inference_mode():
            return self._answer(questions, self._retrieve(questions, None), settings)

    def generate_from(
        self, questions: Sequence[str], retrieved: Retrieved, **generation: Any
    ) -> list[Answer]:
        """Answers from passages retrieved before by ``retrieve(questions, k)``: the first
        ``n_docs`` of each row are read, as ``generate`` would have retrieved them. Evaluation
        retrieves once with ``k`` as large as its largest recall cut-off and answers from that."""
        import torch

        settings = self._generation_settings(generation)
        _check_questions(questions)
        if len(retrieved.passages) != len(questions):
            raise ParameterError(
                f"generate_from: {len(questions)} questions but passages for "
                f"{len(retrieved.passages)}; pass what retrieve(questions) returned."
            )
        if not questions:
            return []
        self._require_reader()
        with torch.inference_mode():
            return self._answer(questions, _columns(retrieved, self.spec.pipeline.n_docs), settings)

    def stream(self, question: str, **generation: Any) -> AnswerStream:
        """The answer to one question as it is decoded: iterate the returned
        :class:`AnswerStream` for pieces of text, which join to ``generate([question])[0].text``.

        Pieces come as greedy search picks tokens when the marginalizer
        :class:`StreamsDecoding` (rag-token, fusion) and ``num_beams`` is 1. rag-sequence and
        beam search know their answer only at the end (rag-sequence ranks whole answers, beam
        search may still reorder its beams): then the one piece is the whole answer. Text that
        may still become a ``[generation] stop`` string is held back until it is known not to.
        Retrieval runs before this returns; decoding runs as the stream is read, in the reading
        thread (read a stream from one thread).
        """
        import torch

        settings = self._generation_settings(generation)
        _check_questions([question])
        self._require_reader()
        with torch.inference_mode():
            retrieved = _found_documents([question], self._retrieve([question], None))
        found = [passage for passage in retrieved.passages[0] if passage.id >= 0]
        return AnswerStream(found, self._pieces(question, retrieved, settings))

    def _pieces(
        self, question: str, retrieved: Retrieved, settings: GenerationSettings
    ) -> Generator_[str, None, Answer]:
        """The text pieces of one answer, then (as the generator's return value) the answer."""
        import torch

        generator, marginalizer = self.generator, self.marginalizer
        shown = ""
        with torch.inference_mode():
            state = self._start([question], retrieved)
            prior = _doc_logprior(retrieved)
            if isinstance(marginalizer, StreamsDecoding) and settings.num_beams == 1:
                for decoded in marginalizer.stream(generator, state, prior, settings):
                    text = generator.decode(self._answer_tokens(decoded.sequences[0]))
                    settled = text[: stop_strings.settled(text, settings.stop)]
                    if settled.startswith(shown) and len(settled) > len(shown):
                        settled = settled.removesuffix("\ufffd")  # half a character so far
                        yield settled[len(shown) :]
                        shown = settled
            else:
                decoded = marginalizer.decode(generator, state, prior, settings)
        (answer,) = self._answers(decoded, retrieved, settings)
        if answer.text.startswith(shown) and len(answer.text) > len(shown):
            yield answer.text[len(shown) :]
        return answer

    def _require_reader(self) -> None:
        """Build generator and marginalizer before any retrieval: a spec without them fails
        before work is done."""
        self.component("generator", "generation")
        self.component("marginalizer", "generation")

    def _answer(
        self, questions: Sequence[str], retrieved: Retrieved, settings: GenerationSettings
    ) -> list[Answer]:
        marginalizer = self.marginalizer
        retrieved = _found_documents(questions, retrieved)
        state = self._start(questions, retrieved)
        decoded = marginalizer.decode(self.generator, state, _doc_logprior(retrieved), settings)
        return self._answers(decoded, retrieved, settings)

    def _answers(
        self, decoded: Decoded, retrieved: Retrieved, settings: GenerationSettings
    ) -> list[Answer]:
        generator = self.generator
        answers = []
        for sequence, score, passages in zip(
            decoded.sequences, decoded.scores.tolist(), retrieved.passages, strict=True
        ):
            tokens = self._answer_tokens(sequence)
            found = [passage for passage in passages if passage.id >= 0]
            text = stop_strings.cut_at_stop(generator.decode(tokens), settings.stop)
            answers.append(Answer(text, float(score), tokens, found))
        return answers

    def _answer_tokens(self, sequence: list[int]) -> list[int]:
        """A decoded sequence without the generator's start tokens and special tokens."""
        generator = self.generator
        special = generator.special_token_ids
        return [t for t in sequence[len(generator.start_token_ids) :] if t not in special]

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
        one value per question. ``targets`` are strings, one per question; no questions is
        refused (:class:`ParameterError`): there is nothing to differentiate.
        """
        _check_questions(questions)
        _check_targets(questions, targets)
        if not 0 <= label_smoothing < 1:
            raise ParameterError(
                f"loss(label_smoothing={label_smoothing!r:.40}): a number from 0 to below 1."
            )
        from .tensors import shift_left

        generator, marginalizer = self.generator, self.marginalizer
        retrieved = _found_documents(questions, self._retrieve(questions, None))
        doc_logprior = _doc_logprior(retrieved)
        batch, k = doc_logprior.shape
        labels = generator.encode_targets(targets).to(doc_logprior.device)
        state = self._start(questions, retrieved)
        rows = 1 if isinstance(marginalizer, FusesDocuments) else k
        logprobs = generator.score(state, labels.repeat_interleave(rows, dim=0))
        return marginalizer.loss(
            logprobs.view(batch, rows, *logprobs.shape[1:]),
            doc_logprior,
            shift_left(labels, generator.pad_token_id),
            generator.pad_token_id,
            reduce=reduce,
            label_smoothing=label_smoothing,
        )

    # --- internals ----------------------------------------------------------------------------

    def _start(self, questions: Sequence[str], retrieved: Retrieved) -> Any:
        """The generator's state for the questions and their passages: ``B * k`` contexts, or
        ``B`` through a marginalizer that :class:`FusesDocuments`."""
        texts = self._question_text(questions)
        marginalizer = self.marginalizer
        if isinstance(marginalizer, FusesDocuments):
            return marginalizer.start(self.generator, texts, retrieved.passages)
        return self.generator.start(texts, retrieved.passages)

    def _retrieve(self, questions: Sequence[str], k: int | None) -> Retrieved:
        """The retriever's ``k`` (default ``n_docs``) best passages, or with a ``[reranker]``
        the reranker's ``k`` best of the retriever's ``max(candidates, k)``; the questions are
        encoded only if the retriever asks for vectors."""
        _check_questions(questions)
        retriever = self.retriever
        if not self._checked_compatibility:
            if isinstance(retriever, ChecksEncoder):
                retriever.check_encoder(self.encoder)
            self._checked_compatibility = True
        k = k if k is not None else self.spec.pipeline.n_docs
        if self._candidates is None:
            return retriever.retrieve(Questions(questions, self._encode_queries), k)
        candidates = max(self._candidates, k)
        retrieved = retriever.retrieve(Questions(questions, self._encode_queries), candidates)
        return self._rerank(questions, retrieved, k)

    def _rerank(self, questions: Sequence[str], retrieved: Retrieved, k: int) -> Retrieved:
        """The reranker's ``k`` best of ``retrieved``, under no-grad: its scores are the prior
        and carry no gradient (``ragloom train`` refuses to train the question encoder)."""
        import torch

        with torch.no_grad():
            return self.reranker.rerank(questions, retrieved, k)

    def _encode_queries(self, questions: Sequence[str]) -> torch.Tensor:
        return self.encoder.encode_queries(questions)

    def _nothing_retrieved(self, k: int) -> Retrieved:
        """What ``retrieve([])`` returns: no rows, ``k`` columns."""
        import torch

        return Retrieved(
            ids=torch.zeros((0, k), dtype=torch.int64),
            scores=torch.zeros((0, k)),
            doc_scores=torch.zeros((0, k)),
            passages=[],
        )

    def _question_text(self, questions: Sequence[str]) -> list[str]:
        """The questions as the generator sees them: rewritten by an encoder that
        :class:`RewritesQuestions` (DPR reproduces transformers' lowercased, re-spaced question),
        else as given. Only a pipeline with an ``[encoder]`` table has one."""
        if "encoder" in self.spec.components and isinstance(self.encoder, RewritesQuestions):
            return list(self.encoder.question_text(questions))
        return list(questions)

    def _generation_settings(self, generation: Mapping[str, Any]) -> GenerationSettings:
        merged = {**self.spec.generation.model_dump(), **generation}
        try:
            return GenerationSettings.model_validate(merged)
        except ValidationError as error:
            raise SpecError(
                "generate()", describe(error, ("generation",), GenerationSettings)
            ) from None


def _candidates(spec: Spec) -> int | None:
    """The passages retrieved per question for the ``[reranker]`` (None without one); a spec
    whose reranker would keep more than it reads is refused."""
    reranker = spec.components.get("reranker")
    if reranker is None:
        return None
    params = reranker.params
    problem = candidates_problem(reranker.type, params, spec.pipeline.n_docs)
    if problem is not None or not isinstance(params, RerankerParams):
        raise SpecError(spec.source, [str(problem)])
    return params.candidates


def _check_reader(spec: Spec, registry: Registry) -> None:
    """Refuse a marginalizer that cannot drive the spec's generator (fusion over a generator
    without the FusedReading capability)."""
    marginalizer, generator = spec.components.get("marginalizer"), spec.components.get("generator")
    if marginalizer is None or generator is None:
        return
    problem = reader_problem(
        registry.load("marginalizer", marginalizer.type),
        registry.load("generator", generator.type),
        generator.type,
    )
    if problem is not None:
        raise SpecError(spec.source, [problem])


def _check_questions(questions: Sequence[str]) -> None:
    """Refuse anything but a list of strings that are valid Unicode text."""
    if isinstance(questions, str):
        raise QuestionError("questions must be a list of strings, not one string")
    if isinstance(questions, bytes | bytearray) or not isinstance(questions, Sequence):
        raise QuestionError(
            f"questions must be a list of strings, not {type(questions).__name__} "
            f'{questions!r:.60}; pass e.g. ["who wrote hamlet?"].'
        )
    for number, question in enumerate(questions, start=1):
        if not isinstance(question, str):
            raise QuestionError(
                f"question {number} is {type(question).__name__} {question!r}, not a string. "
                f"Pass questions as a list of str (decode bytes first)."
            )
        _check_text(number, question)


def _check_targets(questions: Sequence[str], targets: Sequence[str]) -> None:
    """Refuse ``loss`` targets that are not one string per question, and no questions."""
    if isinstance(targets, str | bytes | bytearray) or not isinstance(targets, Sequence):
        raise QuestionError(
            f"loss targets must be a list of strings, one per question, not "
            f"{type(targets).__name__} {targets!r:.60}."
        )
    if not questions:
        raise ParameterError(
            "loss needs at least one question and its target: got none, so there is no loss "
            "to differentiate."
        )
    if len(questions) != len(targets):
        raise ParameterError(
            f"loss needs one target per question: got {len(questions)} questions and "
            f"{len(targets)} targets."
        )
    for number, target in enumerate(targets, start=1):
        if not isinstance(target, str):
            raise QuestionError(
                f"loss target {number} is {type(target).__name__} {target!r:.60}, not a string. "
                f"Pass targets as a list of str, one answer per question."
            )


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
    """``k`` is None (``[pipeline] n_docs``) or a whole number from 1 to :data:`MAX_K`."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K):
        raise ParameterError(
            f"retrieve(k={k!r:.40}): k is the number of passages per question, a whole number "
            f"from 1 to {MAX_K:,}; leave it out to use [pipeline] n_docs."
        )


def _doc_logprior(retrieved: Retrieved) -> torch.Tensor:
    """``log_softmax`` over documents of the retriever's ``doc_scores``; ``-inf`` for missing
    documents."""
    import torch

    scores = retrieved.doc_scores
    missing = retrieved.ids.to(scores.device) < 0
    return torch.log_softmax(scores.masked_fill(missing, float("-inf")), dim=1)


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
    return _columns(retrieved, k, [[*row, *[gap] * (k - len(row))] for row in retrieved.passages])


def _columns(
    retrieved: Retrieved, k: int, passages: list[list[Passage]] | None = None
) -> Retrieved:
    """The first ``k`` documents of each row of ``retrieved`` (with ``passages`` instead of its
    own, cut to ``k``, when given)."""
    return Retrieved(
        ids=retrieved.ids[:, :k],
        scores=retrieved.scores[:, :k],
        doc_scores=retrieved.doc_scores[:, :k],
        passages=[row[:k] for row in retrieved.passages] if passages is None else passages,
        doc_vectors=None if retrieved.doc_vectors is None else retrieved.doc_vectors[:, :k],
    )
