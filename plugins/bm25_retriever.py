"""Retriever ``bm25``: Lucene-style BM25 over a knowledge base's passages, on ``bm25s``.

The questions' text (never their vectors) is tokenized like the passages (``bm25s.tokenize``:
words of two or more letters, optionally lowercased, stop words removed, stemmed by PyStemmer)
and scored against every passage's title and text. The document prior is the BM25 score divided
by ``temperature`` (RAG used BM25 scores as the logits of ``p(z|x)``); it is not differentiable
in anything, so fine-tuning trains the generator only. A passage with no positive evidence (none
of the question's terms, or only terms of IDF 0) is not retrieved: its place holds id ``-1``.

The index is a derived artifact of the KB, like a vector index: ``indexes/bm25-<params>/`` holds
``manifest.json`` (the KB's passages checksum, the build parameters, the bm25s version, every
file's size and checksum) and ``index/`` (``BM25.save``: the sparse score matrix as .npy files and
the vocabulary). It is built on first use under the directory's lock (concurrent first uses build
it once), written atomically, checked against its manifest and loaded memory-mapped. A KB for
BM25 alone needs no encoder (``ragloom kb build`` with a spec without ``[encoder]``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragloom import atomic, locks
from ragloom.assets import ASSET_PREFIX
from ragloom.context import BuildContext
from ragloom.errors import IndexFileError, MismatchError
from ragloom.kb import KBManifest, KnowledgeBase, packaged
from ragloom.kb.knowledge_base import INDEX_SUBDIR, INDEXES_DIR, index_directory_name
from ragloom.kb.manifest import (
    INDEX_KIND,
    MANIFEST_FILE,
    NO_ENCODER,
    IndexManifest,
    ragloom_version,
    record_files,
    verify_files,
)
from ragloom.protocols import Passage, Questions, Retrieved
from ragloom.spec import SpecPath
from ragloom.suggest import listing, suggestion

log = logging.getLogger(__name__)

TYPE = "bm25"
TOKENIZE_CHUNK = 8192
"""Passages tokenized per step of the build's progress bar."""
ESTIMATE_SAMPLE = 1000
"""Passages ``ragloom validate`` tokenizes to estimate the index size."""
BYTES_PER_PAIR = 8
"""Bytes of the sparse score matrix per (term, passage) pair: a float32 score, an int32 row."""
BYTES_PER_TERM = 170
"""Memory per vocabulary term of a loaded index: bm25s reads the vocabulary into a dict of term
to id and a set of the ids (about 170 bytes a term on CPython 3.11, measured)."""
BYTES_PER_PASSAGE_SCORED = 4 + 8
"""Memory per passage while one question is scored: bm25s's float32 score of every passage and
numpy's int64 ``argpartition`` of them (questions are scored one at a time)."""
INDPTR_FILE = "indptr.csc.index.npy"
"""bm25s's file of the score matrix's column pointers: one per vocabulary term, plus one."""
SEARCH_ONLY = frozenset({"kb", "temperature", "build_index"})
"""The keys of ``Params`` that do not change what is built (the rest name the index)."""

Method = Literal["lucene", "robertson", "atire", "bm25l", "bm25+"]
Stopwords = Literal[
    "en", "en_plus", "da", "de", "es", "fr", "it", "ko", "nl", "no", "pt", "ru", "sv", "tr", "zh",
    "none",
]  # fmt: skip


def stemmer_languages() -> list[str]:
    """The languages PyStemmer stems."""
    import Stemmer

    languages: list[str] = Stemmer.algorithms()
    return sorted(languages)


class Bm25Retriever:
    """BM25 over a knowledge base's passages (see the module docstring)."""

    doc_scores_differentiable: ClassVar[bool] = False

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        kb: SpecPath = Field(
            description="knowledge base directory (ragloom kb build, with or without an "
            '[encoder]), or "asset:wikipedia" for the embedded corpus'
        )
        k1: float = Field(default=1.5, ge=0, description="term-frequency saturation")
        b: float = Field(default=0.75, ge=0, le=1, description="length normalization")
        delta: float = Field(
            default=0.5, ge=0, description="the lower bound of bm25l and bm25+ (others ignore it)"
        )
        method: Method = Field(default="lucene", description="the BM25 variant (bm25s' method)")
        stemmer: str = Field(
            default="english", description='a PyStemmer language, or "none" for no stemming'
        )
        stopwords: Stopwords = Field(
            default="en", description='the stop words removed (bm25s\' lists), or "none"'
        )
        lowercase: bool = Field(default=True, description="lowercase before tokenizing")
        temperature: float = Field(
            default=1.0, gt=0, description="the document prior is softmax(BM25 score / temperature)"
        )
        build_index: bool = Field(default=True, description="build the index on first use")

        @field_validator("stemmer")
        @classmethod
        def _known_language(cls, value: str) -> str:
            languages = stemmer_languages()
            if value != "none" and value not in languages:
                known = listing(languages, limit=len(languages))
                raise ValueError(
                    f"PyStemmer has no stemmer for this language.{suggestion(value, languages)} "
                    f'Use "none" (no stemming) or one of: {known}'
                )
            return value

    def __init__(
        self, kb: KnowledgeBase, model: Any, params: Params, index_directory: Path
    ) -> None:
        self.kb = kb
        self.model = model
        self.params = params
        self.index_directory: Path | None = index_directory

    @classmethod
    def from_spec(cls, params: Any, context: BuildContext, **children: Any) -> Bm25Retriever:
        kb = KnowledgeBase.open(cls._kb_path(params, context))
        path = index_path(kb.directory, params)
        return cls(kb, load_index(kb, path, params), params, path)

    @staticmethod
    def _kb_path(params: Any, context: BuildContext) -> Path:
        """The KB directory; ``asset:NAME`` is a packaged corpus, whose passages alone are
        built into the cache on first use (no encoder needed)."""
        path: Path = (
            packaged.knowledge_base(params.kb, None, NO_ENCODER.type)
            if params.kb.startswith(ASSET_PREFIX)
            else context.resolve_path(params.kb)
        )
        return path

    @classmethod
    def preflight(
        cls,
        params: Any,
        context: BuildContext,
        encoder_fingerprint: str | None,
        **children: Any,
    ) -> tuple[list[str], list[str]]:
        """What ``ragloom validate`` reports: the KB's size and what scoring a question holds,
        the index's memory (from its files, or estimated), and an index built from other
        passages. BM25 holds no document vectors."""
        if params.kb.startswith(ASSET_PREFIX):
            return [
                f"[retriever] kb {params.kb}: its passages and BM25 index built on first use"
            ], []
        path = context.resolve_path(params.kb)
        if not (path / MANIFEST_FILE).exists():
            return [
                f"[retriever] kb {path}: not built yet (ragloom kb build; no [encoder] needed)"
            ], []
        manifest = KBManifest.read(path, "ragloom knowledge base")
        scoring = atomic.byte_size(manifest.count * BYTES_PER_PASSAGE_SCORED)
        notes = [
            f"[retriever] kb {path}: {manifest.count} passages; scoring a question holds about "
            f"{scoring} (a score and a rank for every passage)"
        ]
        index = index_path(path, params)
        if (index / MANIFEST_FILE).exists():
            built = IndexManifest.read(index, "ragloom index")
            notes.append(f"[retriever] bm25 index {index.name}: {built_memory(index, built)}")
            other = other_passages(index, built, manifest)
            return notes, [f"[retriever] {other}"] if other else []
        pairs, terms = estimate_index(KnowledgeBase.open(path), params)
        notes.append(
            f"[retriever] bm25 index {index.name}: about "
            f"{atomic.byte_size(pairs * BYTES_PER_PAIR)} memory-mapped ({pairs} term-passage "
            f"pairs) and {atomic.byte_size(terms * BYTES_PER_TERM)} in memory (a vocabulary of "
            f"{terms} terms by Heaps' law, fewer if it saturates), estimated from a sample; "
            + ("built on first use" if params.build_index else "not built")
        )
        if not params.build_index:
            return notes, [f"[retriever] {not_built(index, path)}"]
        return notes, []

    def retrieve(self, questions: Questions, k: int) -> Retrieved:
        import torch

        batch = len(questions)
        ids = np.full((batch, k), -1, dtype=np.int64)
        scores = np.full((batch, k), -np.inf, dtype=np.float32)
        if batch:
            tokens = tokenize(self.params, questions.texts)
            top = min(k, len(self.kb))
            found, found_scores = self.model.retrieve(
                tokens, k=top, sorted=True, show_progress=False, n_threads=0
            )
            found_scores = np.asarray(found_scores, dtype=np.float32)
            # sorted best first, so the passages with evidence are a prefix of each row
            evidence = found_scores > self._baselines(tokens)[:, None]
            ids[:, :top] = np.where(evidence, found, -1)
            scores[:, :top] = np.where(evidence, found_scores, -np.inf)
        unique = np.unique(ids[ids >= 0]).tolist()
        texts = {p.id: p for p in self.kb.passages.get(unique)} if unique else {}
        passages = [
            [
                Passage(int(i), texts[int(i)].title, texts[int(i)].text, float(score))
                for i, score in zip(row_ids, row_scores, strict=True)
                if i >= 0
            ]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]
        retrieval_scores = torch.from_numpy(scores)
        return Retrieved(
            ids=torch.from_numpy(ids),
            scores=retrieval_scores,
            doc_scores=retrieval_scores / self.params.temperature,
            passages=passages,
        )

    def _baselines(self, tokens: Sequence[Sequence[str]]) -> np.ndarray:
        """``float32 [B]``: the score of a passage that has none of each question's terms (bm25l
        and bm25+ give it a positive one; the other variants 0), computed as bm25s does."""
        nonoccurrence = self.model.nonoccurrence_array
        if nonoccurrence is None:
            return np.zeros(len(tokens), dtype=np.float32)
        return np.array(
            [
                nonoccurrence[np.asarray(self.model.get_tokens_ids(list(t)), dtype=np.int64)].sum()
                for t in tokens
            ],
            dtype=np.float32,
        )


class _ThreadStemmers(threading.local):
    """Each thread's PyStemmer stemmers, by language: a Stemmer is not thread-safe, and it
    caches the words it has stemmed, so a new one per call would stem every word again."""

    def __init__(self) -> None:
        self.by_language: dict[str, Any] = {}

    def get(self, language: str) -> Any:
        """This thread's stemmer of ``language``, made on its first use."""
        if language not in self.by_language:
            import Stemmer

            self.by_language[language] = Stemmer.Stemmer(language)
        return self.by_language[language]


_stemmers = _ThreadStemmers()


def tokenize(params: Any, texts: Sequence[str]) -> list[list[str]]:
    """``texts`` as BM25 terms under ``params`` (lowercase, stopwords, stemmer)."""
    import bm25s

    tokens: list[list[str]] = bm25s.tokenize(
        list(texts),
        lower=params.lowercase,
        stopwords=None if params.stopwords == "none" else params.stopwords,
        stemmer=None if params.stemmer == "none" else _stemmers.get(params.stemmer),
        return_ids=False,
        show_progress=False,
    )
    return tokens


def passage_texts(titles: Sequence[str], texts: Sequence[str]) -> list[str]:
    """What BM25 indexes of each passage: its title and its text."""
    return [f"{title} {text}" for title, text in zip(titles, texts, strict=True)]


def build_params(params: Any) -> dict[str, Any]:
    """The parameters that decide what is built (they name the index directory)."""
    values: dict[str, Any] = params.model_dump(mode="json", exclude=SEARCH_ONLY)
    return values


def index_path(kb_directory: Path, params: Any) -> Path:
    """``<kb>/indexes/bm25-<build params>``."""
    path: Path = kb_directory / INDEXES_DIR / index_directory_name(TYPE, build_params(params))
    return path


def not_built(path: Path, kb_directory: Path) -> str:
    return (
        f"the BM25 index {path} has not been built and [retriever] build_index = false. Set "
        f"build_index = true (the default) to build it from {kb_directory} on first use."
    )


def other_passages(path: Path, built: IndexManifest, kb: KBManifest) -> str | None:
    """Why the index at ``path`` does not belong to the KB of ``kb`` (None when it does)."""
    if built.type == TYPE and built.passages_sha256 == kb.passages_sha256:
        return None
    what = (
        f"passages {built.passages_sha256[:16]} (the KB's are {kb.passages_sha256[:16]})"
        if built.type == TYPE
        else f"type {built.type}"
    )
    return (
        f"index {path} is not the BM25 index of this knowledge base: it has {what}. Delete "
        f"{path}; the next use builds it again from the KB's passages."
    )


def load_index(kb: KnowledgeBase, path: Path, params: Any) -> Any:
    """The ``bm25s.BM25`` of ``params`` over ``kb``: loaded memory-mapped from ``path``, built
    there first if missing. Concurrent first uses (threads or processes) build it once."""
    atomic.recover_directory(path)
    if not path.exists():
        if not params.build_index:
            raise IndexFileError(not_built(path, kb.directory))
        with locks.exclusive(path):
            if not path.exists():
                log.info("building BM25 index %s (first use)", path.relative_to(kb.directory))
                build_index(kb, path, params)
    manifest = IndexManifest.read(path, "ragloom index")
    other = other_passages(path, manifest, kb.manifest)
    if other:
        raise MismatchError(other)
    verify_files(path, manifest.files, checksums=True, rebuild=f"delete {path} to rebuild it")
    import bm25s

    try:
        return bm25s.BM25.load(path / INDEX_SUBDIR, mmap=True, show_progress=False)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise IndexFileError(
            f"{path / INDEX_SUBDIR} cannot be loaded by bm25s {bm25s.__version__} ({error}); it "
            f"was written by bm25s {manifest.params.get('bm25s_version')}. Delete {path}; the "
            f"next use builds it again."
        ) from None


def build_index(kb: KnowledgeBase, path: Path, params: Any, progress: bool = True) -> None:
    """Tokenize every passage of ``kb``, score them with bm25s and save the index atomically."""
    import bm25s
    from tqdm import tqdm

    started = time.perf_counter()
    vocabulary: dict[str, int] = {}
    corpus: list[list[int]] = []
    with tqdm(total=len(kb), unit="passage", desc="bm25 tokenize", disable=not progress) as bar:
        for start in range(0, len(kb), TOKENIZE_CHUNK):
            stop = min(start + TOKENIZE_CHUNK, len(kb))
            for terms in tokenize(params, passage_texts(*kb.passages.columns(start, stop))):
                corpus.append([vocabulary.setdefault(term, len(vocabulary)) for term in terms])
            bar.update(stop - start)
    if not vocabulary:
        raise IndexFileError(
            f"no passage of {kb.directory} has a term left to index under [retriever] "
            f"stopwords = {params.stopwords!r}, lowercase = {params.lowercase}: every word is a "
            f'stop word or shorter than two letters. Set stopwords = "none" or check the KB.'
        )
    model = bm25s.BM25(k1=params.k1, b=params.b, delta=params.delta, method=params.method)
    model.index((corpus, vocabulary), create_empty_token=False, show_progress=progress)
    with atomic.directory(path, INDEX_KIND, root=kb.directory) as temporary:
        model.save(temporary / INDEX_SUBDIR, show_progress=False)
        IndexManifest(
            type=TYPE,
            params={**build_params(params), "bm25s_version": bm25s.__version__},
            dim=0,
            metric="bm25",
            count=len(kb),
            encoder_fingerprint=kb.manifest.encoder.fingerprint,
            passages_sha256=kb.manifest.passages_sha256,
            build_seconds=round(time.perf_counter() - started, 3),
            ragloom_version=ragloom_version(),
            files=record_files(temporary),
        ).write(temporary)


def built_memory(path: Path, built: IndexManifest) -> str:
    """The memory of the built index at ``path``: its files, memory-mapped, and its
    vocabulary (the terms the score matrix has columns for), read into memory."""
    size = sum(record.size for record in (built.files or {}).values())
    terms = len(np.load(path / INDEX_SUBDIR / INDPTR_FILE, mmap_mode="r")) - 1
    return (
        f"{atomic.byte_size(size)} on disk, memory-mapped, and "
        f"{atomic.byte_size(terms * BYTES_PER_TERM)} in memory (a vocabulary of {terms} terms)"
    )


def estimate_index(kb: KnowledgeBase, params: Any) -> tuple[int, int]:
    """The index's (term, passage) pairs and vocabulary terms, from the terms of a sample of
    passages: pairs scaled to the KB, terms by Heaps' law (:func:`estimate_terms`)."""
    count = len(kb)
    rows = np.unique(np.linspace(0, count - 1, num=min(count, ESTIMATE_SAMPLE)).astype(np.int64))
    sample = kb.passages.get(rows.tolist())
    terms = tokenize(params, passage_texts([p.title for p in sample], [p.text for p in sample]))
    distinct = sum(len(set(t)) for t in terms)
    return round(distinct / len(sample) * count), estimate_terms(terms, count / len(sample))


def estimate_terms(terms: Sequence[Sequence[str]], scale: float) -> int:
    """The vocabulary of a corpus ``scale`` times the sample ``terms`` (one list per passage),
    by Heaps' law ``V = K · n^β`` fit on the sample's first half and all of it."""
    full = {term for passage in terms for term in passage}
    half = {term for passage in terms[: len(terms) // 2] for term in passage}
    tokens, half_tokens = sum(map(len, terms)), sum(map(len, terms[: len(terms) // 2]))
    if scale <= 1 or not half or tokens == half_tokens:
        return len(full)
    beta = min(max(math.log(len(full) / len(half)) / math.log(tokens / half_tokens), 0.0), 1.0)
    return round(len(full) * math.pow(scale, beta))
