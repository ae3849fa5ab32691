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

from collections.abc import Sequence
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
    - ``scores``: ``float32 [B, k]``, the index's scores (inner products; higher is better;
      approximate for compressed indexes).
    - ``doc_vectors``: ``float32 [B, k, d]``, the exact stored passage embeddings (zeros for
      ``-1``), so that ``doc_scores = q · doc_vectors`` is exact and differentiable in ``q``.
    - ``passages``: ``B`` lists of ``k`` :class:`Passage` (fewer where ids are ``-1``).
    """

    ids: torch.Tensor
    scores: torch.Tensor
    doc_vectors: torch.Tensor
    passages: list[list[Passage]]


@dataclass(frozen=True)
class Answer:
    """One generated answer.

    ``score`` is the score decoding ranked the answer by (see :class:`Decoded`): a
    log-probability (rag-token: the sum of the doc-marginalized token log-probabilities;
    rag-sequence: log Σ_z p(z|x) p(y|x,z)), divided by ``length ** length_penalty`` in beam search.
    ``token_ids`` are the generated ids after the generator's start tokens, special tokens left
    out; ``passages`` are the documents the answer was generated from, best first.
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
    nested ones too. ``slots`` (optional) maps a key of the table to the kind of a nested component
    table (the dense retriever's ``[retriever.index]``); those reach ``from_spec`` by keyword as
    :class:`ragloom.context.Declared`, validated but not built. ``from_spec`` is called only when
    the pipeline first needs the component: it is where weights and files load.
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
class PassageStore(Protocol):
    """The passages of a knowledge base, addressed by row id (row ``i`` has id ``i``).

    ``get(ids)`` returns the passages in the order asked; an id outside ``range(len(store))``
    raises ``IndexError`` naming it.
    """

    def __len__(self) -> int: ...

    def get(self, ids: Sequence[int]) -> list[PassageText]: ...


@runtime_checkable
class Retriever(Protocol):
    """Finds the ``k`` best passages for each query vector.

    ``retrieve(queries, k)`` takes ``float32 [B, d]`` query vectors (already encoded; the pipeline
    owns the encoder) and returns :class:`Retrieved`. ``doc_vectors`` come from the stored exact
    embeddings whatever the index, so doc scores do not depend on index compression.
    """

    def retrieve(self, queries: torch.Tensor, k: int) -> Retrieved: ...


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
      ``logprobs`` is ``float32 [B, k, T, V]`` and position ``t`` predicts ``targets[:, t]``;
      ``doc_logprior`` is ``float32 [B, k]`` (``log_softmax`` of the doc scores, ``-inf`` for a
      missing document); ``targets`` is ``int64 [B, T]``, the labels shifted left by one with
      ``pad_token_id`` appended, pad meaning no token. Returns the negative marginal
      log-likelihood: ``[]`` summed over the batch when ``reduce``, else ``[B]``.
      ``label_smoothing`` ε gives ``(1 - ε) · nll + ε / V · smooth`` as transformers' RAG does.
      Differentiable in ``logprobs`` and ``doc_logprior``.
    - ``decode(generator, state, doc_logprior, settings)`` → :class:`Decoded`: the best answer
      per question, driving ``generator`` from a ``start`` state (``B * k`` rows), batched over
      all questions at once. Sequences begin with ``generator.start_token_ids``.
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


@runtime_checkable
class Metric(Protocol):
    """Scores predictions against references: ``compute(predictions, references) -> float``.

    ``references`` holds, per prediction, the list of acceptable answers; higher is better.
    """

    name: str

    def compute(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float: ...


KIND_PROTOCOLS: dict[str, type] = {
    "encoder": Encoder,
    "index": Index,
    "retriever": Retriever,
    "passages": PassageStore,
    "generator": Generator,
    "marginalizer": Marginalizer,
    "metric": Metric,
}
"""The protocol a built component of each registry kind satisfies."""
