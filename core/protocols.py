"""The contracts between ragloom's components.

Each protocol below is what the pipeline calls and what a plugin implements. The docstrings are the
contract: shapes, dtypes and what a score means. Letters used throughout:

- ``B``: questions in a batch;  ``k``: documents retrieved per question (``n_docs``);
- ``N``: passages or vectors;  ``d``: embedding dimension;
- ``R``: decoding rows (``B * k``: one hypothesis per document; ``B * beams * k`` in beam
  search);
- ``T``: target length in tokens;  ``V``: the generator's vocabulary size.

Row order is always question-major: row ``b * k + j`` holds document ``j`` of question ``b``.
Torch appears only in annotations, so importing this module stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import torch
    from pydantic import BaseModel

    from .context import BuildContext
    from .spec.model import GenerationSettings


@dataclass(frozen=True)
class PassageText:
    """One stored passage: its row id in the passage store, its title and its text."""

    id: int
    title: str
    text: str


@dataclass(frozen=True)
class Passage(PassageText):
    """A retrieved passage with its retrieval score (inner product of query and passage vectors)."""

    score: float = 0.0


@dataclass(frozen=True)
class Retrieved:
    """What a retriever returns for ``B`` questions and ``k`` documents each.

    - ``ids``: ``int64 [B, k]``, passage row ids, best first; ``-1`` where fewer than ``k`` exist.
    - ``scores``: ``float32 [B, k]``, the scores the retriever ranked by (an index's inner
      products, approximate for compressed indexes; BM25 scores); higher is better.
    - ``doc_scores``: ``float32 [B, k]``, the scores whose softmax over the ``k`` documents is
      the document prior ``p(z|x)`` of the generator; ignored where ids are ``-1``. Dense
      retrieval gives the exact ``q · d`` of the stored passage vectors, differentiable in the
      query vectors ``q`` (fine-tuning trains the question encoder through it).
    - ``passages``: ``B`` lists of ``k`` :class:`Passage` (fewer where ids are ``-1``).
    - ``doc_vectors``: ``float32 [B, k, d]``, the exact stored passage embeddings (zeros for
      ``-1``), from retrievers that have them (dense ones); None otherwise.
    """

    ids: torch.Tensor
    scores: torch.Tensor
    doc_scores: torch.Tensor
    passages: list[list[Passage]]
    doc_vectors: torch.Tensor | None = None


class Questions:
    """The questions of one retrieval, as text and, on demand, as query vectors.

    ``texts`` are the ``B`` questions. ``vectors()`` → ``float32 [B, d]``, the pipeline encoder's
    ``encode_queries(texts)``, computed on the first call and kept (a retriever that reads text
    alone never pays for encoding); differentiable when gradients are on, as in fine-tuning.
    ``encoded`` says whether they were computed.
    """

    def __init__(
        self, texts: Sequence[str], encode: Callable[[Sequence[str]], torch.Tensor]
    ) -> None:
        self.texts = list(texts)
        self._encode = encode
        self._vectors: torch.Tensor | None = None

    def vectors(self) -> torch.Tensor:
        if self._vectors is None:
            self._vectors = self._encode(self.texts)
        return self._vectors

    @property
    def encoded(self) -> bool:
        return self._vectors is not None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Answer:
    """One generated answer.

    ``score`` is the score decoding ranked the answer by (see :class:`Decoded`): a
    log-probability (rag-token: the sum of the doc-marginalized token log-probabilities;
    rag-sequence: log Σ_z p(z|x) p(y|x,z)), divided by ``length ** length_penalty`` in beam search.
    ``token_ids`` are the generated ids after the generator's start tokens, special tokens left
    out (with the tokens of a ``[generation] stop`` string that ended it, whose text ``text``
    leaves out); ``passages`` are the documents the answer was generated from, best first.
    """

    text: str
    score: float
    token_ids: list[int]
    passages: list[Passage] = field(default_factory=list)


@dataclass(frozen=True)
class Decoded:
    """What a marginalizer's decoding returns: the best hypothesis per question.

    ``sequences``: ``B`` lists of token ids, starting with the generator's ``start_token_ids`` and
    ending with EOS unless ``max_length`` cut them; ``scores``: ``float32 [B]``, the log-probability
    of each as in :class:`Answer`.
    """

    sequences: list[list[int]]
    scores: torch.Tensor


@runtime_checkable
class Component(Protocol):
    """What a component declared in a top-level table of a spec is: a factory with a schema.

    ``Params`` is a pydantic model of the keys the component accepts in its spec table (besides
    ``type``); it must forbid extra keys, so typos are caught. Every registered component has it,
    nested ones too. A component with nested tables declares them with ``slots`` (the
    :class:`Nested` capability). ``from_spec`` is called only when the pipeline first needs the
    component: it is where weights and files load.
    """

    Params: ClassVar[type[BaseModel]]

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> Any: ...


@runtime_checkable
class Encoder(Protocol):
    """Maps questions and passages to vectors whose inner product is the retrieval score.

    - ``encode_queries(texts)`` → ``float32 [B, d]``. Differentiable when called with gradients
      enabled (fine-tuning trains the question encoder through the doc scores).
    - ``encode_passages(titles, texts)`` → ``float32 [N, d]``, under no-grad.
    - ``dim``: ``d``. ``fingerprint``: a stable hash of the passage-side weights and settings;
      knowledge bases and indexes record it and refuse to load under another.
    """

    dim: int
    fingerprint: str

    def encode_queries(self, texts: Sequence[str]) -> torch.Tensor: ...

    def encode_passages(self, titles: Sequence[str], texts: Sequence[str]) -> torch.Tensor: ...


@runtime_checkable
class Index(Protocol):
    """Nearest-neighbour search over vectors by inner product (``metric == "ip"``).

    Indexes speak numpy so that index plugins need no torch.

    - ``create(dim, params)`` makes an empty index from the validated ``Params`` of its spec table.
      ``search_params`` names the keys of ``Params`` that only affect searching (``nprobe``,
      ``ef``); the others decide what is built, and a saved index is reused only under them.
    - ``train(sample)``: ``float32 [n, d]`` vectors to learn from (quantizers, coarse centroids);
      a no-op for indexes that learn nothing. ``add`` before a needed ``train`` raises.
    - ``add(vectors, ids)``: ``float32 [N, d]`` and ``int64 [N]`` (the passage row ids).
    - ``search(queries, k)`` → ``(scores float32 [B, k], ids int64 [B, k])``, best first. When
      fewer than ``k`` vectors exist, the missing places hold id ``-1`` and score ``-inf``. Safe
      to call from several threads at once, also while another thread adds.
    - ``tune(params)`` applies the search-time keys of ``params`` to a built or loaded index.
    - ``reconstruct(ids)`` → ``float32 [len(ids), d]``, the vectors as stored (lossy for
      compressed indexes); an unknown id raises ``KeyError``.
    - ``save(directory)`` writes atomically: a crash never leaves a directory that loads half an
      index. ``load(directory)`` is its inverse; a truncated or corrupt directory raises a
      :class:`ragloom.errors.RagloomError` saying so, never crashes the process.
    - ``ntotal``: vectors held; ``memory_bytes()``: resident size of the index structures;
      ``estimate(n, dim, params)``: the bytes ``n`` vectors will take, known before building
      (within 20% of ``memory_bytes()``).
    """

    metric: str
    dim: int
    search_params: ClassVar[frozenset[str]]

    @classmethod
    def create(cls, dim: int, params: Any) -> Index: ...

    @classmethod
    def estimate(cls, n: int, dim: int, params: Any) -> int: ...

    @property
    def ntotal(self) -> int: ...

    def train(self, sample: np.ndarray) -> None: ...

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def tune(self, params: Any) -> None: ...

    def reconstruct(self, ids: np.ndarray) -> np.ndarray: ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path) -> Index: ...

    def memory_bytes(self) -> int: ...


@runtime_checkable
class Retriever(Protocol):
    """Finds the ``k`` best passages for each question.

    ``retrieve(questions, k)`` takes :class:`Questions` (their text, and their vectors from the
    pipeline's encoder for the retrievers that ask) and returns :class:`Retrieved` with ``B``
    rows of ``k``, best first. A dense retriever searches by ``questions.vectors()`` and scores
    documents by the exact stored vectors, so its document prior does not depend on index
    compression; a keyword retriever reads ``questions.texts`` and never encodes them.
    """

    def retrieve(self, questions: Questions, k: int) -> Retrieved: ...


@runtime_checkable
class VectorSearch(Protocol):
    """What a dense retriever needs of an index: ``search(queries, k)`` → ``(scores float32
    [B, k], ids int64 [B, k])`` by inner product, best first (``-1`` / ``-inf`` where fewer than
    ``k`` exist), and ``ntotal``, the vectors searched. An :class:`Index` is one; so is the
    fan-out over index shards of ``ray-sharded``."""

    @property
    def ntotal(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


@runtime_checkable
class Reranker(Protocol):
    """Re-scores a retriever's best ``C`` candidates for each question and keeps the best ``k``.

    With a ``[reranker]`` table the pipeline retrieves ``C = max(candidates, k)`` passages per
    question (``candidates``: a key every reranker's ``Params`` has, :class:`RerankerParams`)
    and calls ``rerank(questions, retrieved, k)`` under no-grad:

    - ``questions``: the ``B`` questions as given; ``retrieved``: the retriever's
      :class:`Retrieved` with ``C`` columns (ids ``-1`` where it found fewer).
    - Returns :class:`Retrieved` with ``k`` columns: per question the ``k`` candidates of highest
      reranker score, best first, ``-1`` ids last (score ``-inf``, rows of ``passages`` shorter)
      where fewer than ``k`` were found. ``scores``: ``float32 [B, k]``, the reranker's scores;
      ``doc_scores``: ``float32 [B, k]``, the scores whose softmax is the document prior (the
      built-ins: ``scores / temperature``); ``passages``: the kept candidates, their ``score``
      the reranker's; ``doc_vectors``: the kept candidates' rows of ``retrieved.doc_vectors``
      (None when it has none).

    A candidate's score depends on its question and passage alone: not on the other candidates,
    their order or the other questions. The scores are not differentiable in the question
    vectors, so ``ragloom train`` does not train the question encoder under a reranker.
    """

    def rerank(self, questions: Sequence[str], retrieved: Retrieved, k: int) -> Retrieved: ...


@runtime_checkable
class RerankerParams(Protocol):
    """What the pipeline reads from a reranker's validated ``Params``: ``candidates``, the
    passages retrieved per question for it to rerank; at least ``[pipeline] n_docs``."""

    candidates: int


def candidates_problem(kind: str, params: Any, n_docs: int) -> str | None:
    """Why a ``[reranker]`` of type ``kind`` with ``params`` cannot rerank to ``n_docs``; None
    when it can. ``ragloom validate`` and ``Pipeline.from_spec`` refuse the spec with it."""
    if not isinstance(params, RerankerParams):
        return (
            f'[reranker] type = "{kind}" has no candidates key: a reranker\'s Params must '
            f"declare candidates, the passages it reranks per question (docs/plugins.md)."
        )
    if params.candidates < n_docs:
        return (
            f"[reranker] candidates = {params.candidates} is below [pipeline] n_docs = {n_docs}: "
            f"the reranker keeps n_docs of the candidates it reads. Set candidates to at least "
            f"{n_docs} (20 or more lets reranking matter), or lower n_docs."
        )
    return None


# --- capabilities ---------------------------------------------------------------------------
# Optional members a component may have. Core checks them with isinstance, never by probing
# attribute names; docs/plugins.md documents each, and a contract kit exercises each.


@runtime_checkable
class Nested(Protocol):
    """A component class with nested component tables: ``slots`` maps a key of its table to the
    kind of the component declared there (the dense retriever's ``{"index": "index"}``). Each
    is validated with the spec and reaches ``from_spec`` by keyword as a
    :class:`ragloom.context.Declared`, not yet built."""

    slots: ClassVar[Mapping[str, str]]


@runtime_checkable
class NamedSlots(Protocol):
    """A component class with tables of named nested components: ``named_slots`` maps a key of
    its table to the kind of every component declared under it by name (the hybrid retriever's
    ``{"members": "retriever"}``: ``[retriever.members.NAME]``, one table per member). At least
    one is required; each is validated with the spec, and they reach ``from_spec`` by keyword as
    a ``{NAME: Declared}`` mapping in the order declared."""

    named_slots: ClassVar[Mapping[str, str]]


@runtime_checkable
class ChecksTable(Protocol):
    """A component class whose table has rules across its keys, its nested components and
    ``[pipeline]``: ``check_table(params, pipeline, **children)`` → ``[(key, problem)]``, where
    ``children`` are what ``from_spec`` receives and ``pipeline`` is the validated
    :class:`ragloom.spec.PipelineSettings` (None when a table is validated alone). The loader
    reports each problem at the table's key path (``[retriever] depth ...``), so
    ``ragloom validate`` and ``Pipeline.from_spec`` refuse it like a schema error; ``key`` is
    None for the table as a whole."""

    def check_table(
        self, params: Any, pipeline: Any, **children: Any
    ) -> list[tuple[str | None, str]]: ...


@runtime_checkable
class ChecksEncoder(Protocol):
    """A retriever that knows which encoder made its data: ``check_encoder(encoder)`` raises
    :class:`ragloom.errors.MismatchError` for a question encoder whose vectors would not compare
    with it. The pipeline calls it once, before the first retrieval."""

    def check_encoder(self, encoder: Encoder) -> None: ...


@runtime_checkable
class RewritesQuestions(Protocol):
    """An encoder that shows the generator each question as it read it:
    ``question_text(questions)`` → ``B`` strings (DPR lowercases and re-spaces them, as
    transformers' RAG does). Without it the generator reads the questions as given."""

    def question_text(self, questions: Sequence[str]) -> list[str]: ...


@runtime_checkable
class CountsTruncation(Protocol):
    """An encoder that reads at most ``passage_token_limit`` tokens of a passage and tells what
    it leaves out: ``passage_overflow(titles, texts)`` → ``N`` counts, the tokens of each passage
    past the limit that ``encode_passages`` cuts off unread (0 for a passage that fits). A
    knowledge base build warns with their totals."""

    passage_token_limit: int

    def passage_overflow(self, titles: Sequence[str], texts: Sequence[str]) -> list[int]: ...


@runtime_checkable
class DifferentiableScores(Protocol):
    """A retriever that says whether its ``Retrieved.doc_scores`` are differentiable in the
    query vectors (``doc_scores_differentiable``): dense retrieval's ``q · d`` is, BM25's is
    not. ``ragloom train`` trains the question encoder only through a retriever that says True."""

    doc_scores_differentiable: bool


@runtime_checkable
class KnowledgeBaseRetriever(Protocol):
    """A retriever over a ragloom knowledge base: ``kb`` is its
    :class:`ragloom.kb.KnowledgeBase` and ``index_directory`` the directory of the cached index
    it searches (None when it searches shards). Evaluation records their manifests beside the
    results; the demo edits a copy of the knowledge base."""

    kb: Any
    index_directory: Path | None


@runtime_checkable
class ForcesEos(Protocol):
    """A generator whose model must end every answer that reaches ``max_length`` with a given
    token (BART's ``forced_eos_token_id``; None: no such token). Decoding forces it at the last
    position, as transformers' generate does."""

    forced_eos_token_id: int | None


@runtime_checkable
class EncoderFromFiles(Protocol):
    """An encoder class that tells, from its spec table and files alone (no weights loaded),
    its ``fingerprint_from_spec(params, context)`` (what a KB records) and
    ``dim_from_spec(params, context)`` (its vector size): ``ragloom validate`` checks a KB's
    encoder and estimates memory with them. Either raises a RagloomError when the files cannot
    tell."""

    def fingerprint_from_spec(self, params: Any, context: BuildContext) -> str: ...

    def dim_from_spec(self, params: Any, context: BuildContext) -> int: ...


@runtime_checkable
class DecoderFromFiles(Protocol):
    """A generator class that tells its ``decoder_shape_from_spec(params, context)`` (a
    :class:`ragloom.preflight.DecoderShape`: vocabulary, layers, cache width, context length)
    from its config files, so that ``ragloom validate`` estimates decoding memory."""

    def decoder_shape_from_spec(self, params: Any, context: BuildContext) -> Any: ...


@runtime_checkable
class RetrieverPreflight(Protocol):
    """A retriever class that checks its files for ``ragloom validate``:
    ``preflight(params, context, encoder_fingerprint, **children)`` → ``(notes, problems)``,
    two lists of one-line strings naming the spec table (sizes and memory estimates; an encoder
    that does not match the knowledge base). ``encoder_fingerprint`` is None when unknown."""

    def preflight(
        self, params: Any, context: BuildContext, encoder_fingerprint: str | None, **children: Any
    ) -> tuple[list[str], list[str]]: ...


@runtime_checkable
class SampledTraining(Protocol):
    """Index parameters that say how a knowledge base trains the index: on ``train_size``
    vectors drawn with ``seed`` (otherwise 65,536 vectors, seed 0)."""

    train_size: int
    seed: int


@runtime_checkable
class FusedReading(Protocol):
    """A generator that reads all passages of a question as one context:
    ``start_fused(questions, passages)`` → a state with ``R = B`` rows, one per question, that
    ``step``, ``select`` and ``score`` drive like a state of ``start``. ``passages`` is ``B``
    lists of passages in reading order; a passage with id ``-1`` (no document) is left out. A
    seq2seq model encodes each (passage, question) context on its own and its decoder attends
    to all of them at once (Fusion-in-Decoder); a causal LM reads one prompt of all passages."""

    def start_fused(
        self, questions: Sequence[str], passages: Sequence[Sequence[PassageText]]
    ) -> Any: ...


@runtime_checkable
class FusesDocuments(Protocol):
    """A marginalizer that reads all ``k`` documents of a question in one context instead of
    mixing per-document predictions: ``start(generator, questions, passages)`` → the state its
    ``decode`` reads, ``B`` rows (it calls the generator's :class:`FusedReading` start in its
    own passage order). The pipeline starts the generator through it, and its ``loss`` receives
    ``logprobs`` of shape ``[B, 1, T, V]``, the target under the fused context."""

    def start(
        self,
        generator: Generator,
        questions: Sequence[str],
        passages: Sequence[Sequence[PassageText]],
    ) -> Any: ...


@runtime_checkable
class StreamsDecoding(Protocol):
    """A marginalizer whose greedy decoding can be watched as it goes (``Pipeline.stream``):
    ``stream(generator, state, doc_logprior, settings)`` → an iterator of :class:`Decoded`, the
    best hypothesis of each question after every step of greedy search (``settings.num_beams``
    is 1), each extending the one before; the last equals what ``decode`` returns."""

    def stream(
        self, generator: Generator, state: Any, doc_logprior: torch.Tensor, settings: Any
    ) -> Iterator[Decoded]: ...


def reader_problem(marginalizer: object, generator: object, generator_type: str) -> str | None:
    """Why the registered ``marginalizer`` class cannot drive the ``generator`` class (of
    ``[generator] type = generator_type``); None when it can. ``ragloom validate`` and
    ``Pipeline.from_spec`` refuse the spec with it."""
    if isinstance(marginalizer, FusesDocuments) and not isinstance(generator, FusedReading):
        return (
            f"[marginalizer] reads all passages of a question at once, and [generator] type = "
            f'"{generator_type}" cannot (it has no start_fused, the FusedReading capability of '
            f"docs/plugins.md). Use a generator that has it (bart, causal-lm), or type = "
            f'"rag-token" / "rag-sequence" in [marginalizer].'
        )
    return None


CAPABILITIES: tuple[type, ...] = (
    Nested,
    NamedSlots,
    ChecksTable,
    ChecksEncoder,
    RewritesQuestions,
    CountsTruncation,
    DifferentiableScores,
    KnowledgeBaseRetriever,
    ForcesEos,
    EncoderFromFiles,
    DecoderFromFiles,
    RetrieverPreflight,
    SampledTraining,
    FusedReading,
    FusesDocuments,
    StreamsDecoding,
)
"""Every optional capability a component may declare (docs/plugins.md, "Capabilities")."""


@runtime_checkable
class Generator(Protocol):
    """Reads each (passage, question) context and predicts tokens, one row per context.

    The marginalizers drive any generator through these members alone; they never know whether a
    seq2seq or a causal model sits behind them.

    - ``start(questions, passages)`` → an opaque state with ``R = B * k`` rows (question-major;
      ``passages`` is ``B`` lists of ``k``) holding what is computed once per context: encoder
      states for seq2seq, the prefilled prompt cache for a causal model. Nothing is decoded yet.
    - ``start_token_ids``: the prefix every hypothesis begins with (BART: the decoder start token,
      then the forced BOS if the model has one; a causal model: the fixed tokens that open its
      answer, such as a chat template's assistant header).
    - ``step(state, tokens)`` → ``(logprobs float32 [R, V], state)``: feed ``int64 [R, t]`` tokens
      (the whole prefix on the first call, then one per call) and get the log-softmax over the
      next token. The state passed in may be consumed (caches grow in place): use the returned one.
    - ``select(state, rows)`` → the state with rows ``rows`` (``int64 [R']`` indices into the
      current rows, repeats allowed): beam expansion and beam reordering are both this.
    - ``score(state, labels)`` → ``float32 [R, T, V]``: teacher forcing from a state fresh from
      ``start``; position ``t`` is the distribution after ``labels[:, : t + 1]``, so it predicts
      ``labels[:, t + 1]`` (transformers' RAG layout: labels are fed unshifted). ``labels`` is
      ``int64 [R, T]`` padded with ``pad_token_id``. Leaves ``state`` usable; differentiable.
    - ``encode_targets(texts)`` → ``int64 [B, T]``: answers as training labels for ``score``
      (BART: ``<s> answer </s>``), padded with ``pad_token_id``.
    - ``decode(token_ids)`` → text without special tokens; ``special_token_ids``, ``eos_token_id``,
      ``pad_token_id`` and ``vocab_size`` are what their names say.
    """

    eos_token_id: int
    pad_token_id: int
    vocab_size: int
    start_token_ids: list[int]
    special_token_ids: frozenset[int]

    def start(self, questions: Sequence[str], passages: Sequence[Sequence[PassageText]]) -> Any: ...

    def step(self, state: Any, tokens: torch.Tensor) -> tuple[torch.Tensor, Any]: ...

    def select(self, state: Any, rows: torch.Tensor) -> Any: ...

    def score(self, state: Any, labels: torch.Tensor) -> torch.Tensor: ...

    def encode_targets(self, texts: Sequence[str]) -> torch.Tensor: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class TrainableModel:
    """The weights a component lets ``ragloom train`` update: ``model``, a transformers
    ``PreTrainedModel`` (every parameter of it trains), and ``tokenizer``, saved beside it. The
    trainer writes both into the RAG checkpoint layout: the encoder's as ``rag.question_encoder.*``
    and ``question_encoder_tokenizer/``, the generator's as ``rag.generator.*`` and
    ``generator_tokenizer/``."""

    model: Any
    tokenizer: Any


@runtime_checkable
class Trainable(Protocol):
    """An encoder or generator that can be fine-tuned.

    - ``trainable_model()`` → the :class:`TrainableModel` whose parameters the trainer optimizes.
      The component keeps using that same module, so a trained component answers with the
      trained weights; ``model.train()`` / ``model.eval()`` switch it between training (dropout
      on, no decoding caches) and inference. An encoder's passage side must stay as it was: the
      knowledge base was encoded with it.
    - ``checkpoint_table(table)`` → the component's spec table (given with absolute paths) changed
      to load the trained weights from ``[pipeline] checkpoint`` instead of where they came from;
      an encoder pins its passage tower to the one that encoded the knowledge base.
    """

    def trainable_model(self) -> TrainableModel: ...

    def checkpoint_table(self, table: dict[str, Any]) -> dict[str, Any]: ...


@runtime_checkable
class Marginalizer(Protocol):
    """Combines per-document predictions into one answer distribution; owns loss and decoding.

    - ``loss(logprobs, doc_logprior, targets, pad_token_id, reduce, label_smoothing)``:
      ``logprobs`` is ``float32 [B, k, T, V]`` (``[B, 1, T, V]`` for a marginalizer that
      :class:`FusesDocuments`) and position ``t`` predicts ``targets[:, t]``;
      ``doc_logprior`` is ``float32 [B, k]`` (``log_softmax`` of the doc scores, ``-inf`` for a
      missing document); ``targets`` is ``int64 [B, T]``, the labels shifted left by one with
      ``pad_token_id`` appended, pad meaning no token. Returns the negative marginal
      log-likelihood: ``[]`` summed over the batch when ``reduce``, else ``[B]``.
      ``label_smoothing`` ε gives ``(1 - ε) · nll + ε / V · smooth`` as transformers' RAG does.
      Differentiable in ``logprobs`` and ``doc_logprior``.
    - ``decode(generator, state, doc_logprior, settings)`` → :class:`Decoded`: the best answer
      per question, driving ``generator`` from a ``start`` state (``B * k`` rows; ``B`` rows
      from its own ``start`` for a marginalizer that :class:`FusesDocuments`), batched over all
      questions at once. Sequences begin with ``generator.start_token_ids``.
    """

    def loss(
        self,
        logprobs: torch.Tensor,
        doc_logprior: torch.Tensor,
        targets: torch.Tensor,
        pad_token_id: int,
        reduce: bool = True,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor: ...

    def decode(
        self,
        generator: Generator,
        state: Any,
        doc_logprior: torch.Tensor,
        settings: GenerationSettings,
    ) -> Decoded: ...
