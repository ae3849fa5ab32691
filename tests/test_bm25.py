"""Retriever ``bm25``: its scores are BM25's (checked against the formulas written out here, on
the same terms), its index is a cached, checked derived artifact of a KB that needs no encoder,
and the questions are never encoded."""

from __future__ import annotations

import json
import math
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ragloom import Pipeline, atomic
from ragloom.cli import main
from ragloom.context import BuildContext
from ragloom.errors import IndexFileError, MismatchError
from ragloom.kb import KnowledgeBase, build_knowledge_base, read_documents
from ragloom.kb.documents import passages
from ragloom.plugins import bm25_retriever
from ragloom.plugins.bm25_retriever import passage_texts, tokenize
from ragloom.protocols import Questions
from ragloom.testing import RetrieverContract
from ragloom.testing.retriever_contract import refuse_encoding

DOCUMENTS = [
    ("Paris", "Paris is the capital of France and its largest city, a fact."),
    ("Animal Farm", "Animal Farm is a novella by George Orwell; a fact about farm animals."),
    ("Running", "A runner runs. Runners were running and running on the track, in fact."),
    ("Cats", "The cat sat on the mat; cats sit on mats as a matter of fact."),
    ("Moon", "Apollo 11 landed on the Moon; the moon landing is a historical fact."),
    ("Orwell", "George Orwell wrote Nineteen Eighty-Four and Animal Farm, in fact."),
    ("France", "France borders Spain, Italy, Germany and Belgium. Fact: Paris is in France."),
    ("Track", "The running track of the stadium is four hundred metres long; a fact."),
]
OTHER_DOCUMENTS = [("Mars", "Mars is the fourth planet."), ("Venus", "Venus is hot.")]
QUESTIONS = [
    "who wrote Animal Farm, in fact?",
    "fact: the capital of France",
    "running cats on the Moon",
    "Paris Paris France",
]

SPEC = """
schema = 1
[retriever]
type = "bm25"
kb = "{kb}"
"""


def write_documents(path: Path, documents: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for number, (title, text) in enumerate(documents):
            handle.write(json.dumps({"id": f"d{number}", "title": title, "text": text}) + "\n")
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``kb/``: a KB of DOCUMENTS built without an encoder; ``other/``: one of OTHER_DOCUMENTS."""
    root = tmp_path_factory.mktemp("bm25")
    for name, documents in (("kb", DOCUMENTS), ("other", OTHER_DOCUMENTS)):
        source = write_documents(root / f"{name}.jsonl", documents)
        build_knowledge_base(
            passages(read_documents(source), None),
            None,
            root / name,
            encoder_type="none",
            progress=False,
        )
    return root


def spec(root: Path, kb: str = "kb", name: str = "spec.toml", **keys: Any) -> Path:
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items())
    path = root / name
    path.write_text(SPEC.format(kb=root / kb) + lines, encoding="utf-8")
    return path


def retriever(root: Path, kb: str = "kb", **keys: Any) -> Any:
    return Pipeline.from_spec(spec(root, kb, **keys)).retriever


# --- the scores: BM25 written out --------------------------------------------------------------


def reference_scores(
    corpus: list[list[str]],
    query: list[str],
    method: str,
    k1: float,
    b: float,
    delta: float,
    scored: list[list[str]] | None = None,
) -> list[float]:
    """Each passage's BM25 score for ``query`` by the variant's formulas (Kamphuis et al.,
    "Which BM25 do you mean?", ECIR 2020), as plain arithmetic; of the passages ``scored``
    instead, if given (with the statistics of ``corpus``)."""
    n = len(corpus)
    average = sum(len(terms) for terms in corpus) / n
    df = Counter(term for terms in corpus for term in set(terms))

    def idf(term: str) -> float:
        d = df[term]
        return {
            "robertson": math.log(max(1.0, (n - d + 0.5) / (d + 0.5))),
            "lucene": math.log(1 + (n - d + 0.5) / (d + 0.5)),
            "atire": math.log(n / d),
            "bm25l": math.log((n + 1) / (d + 0.5)),
            "bm25+": math.log((n + 1) / d),
        }[method]

    def tfc(tf: int, length: int) -> float:
        norm = 1 - b + b * length / average
        if method in ("robertson", "lucene"):
            return tf / (k1 * norm + tf)
        if method == "atire":
            return tf * (k1 + 1) / (tf + k1 * norm)
        if method == "bm25l":
            c = tf / norm
            return (k1 + 1) * (c + delta) / (k1 + c + delta)
        return (k1 + 1) * tf / (k1 * norm + tf) + delta  # bm25+

    scores = []
    for terms in corpus if scored is None else scored:
        counts = Counter(terms)
        scores.append(
            sum(idf(q) * tfc(counts[q], len(terms)) for q in query if q in df)  # repeats count
        )
    return scores


VARIANTS = [
    ("lucene", "english", 1.5, 0.75),
    ("robertson", "none", 1.2, 0.75),
    ("atire", "english", 0.9, 0.4),
    ("bm25l", "none", 1.5, 0.75),
    ("bm25+", "english", 1.2, 0.5),
]


@pytest.mark.parametrize(("method", "stemmer", "k1", "b"), VARIANTS)
def test_scores_are_bm25_of_the_same_terms(
    root: Path, method: str, stemmer: str, k1: float, b: float
) -> None:
    found = retriever(root, method=method, stemmer=stemmer, k1=k1, b=b, temperature=2.0)
    params = found.params
    corpus = tokenize(params, passage_texts(*map(list, zip(*DOCUMENTS, strict=True))))
    queries = tokenize(params, QUESTIONS)
    retrieved = found.retrieve(Questions(QUESTIONS, refuse_encoding), len(DOCUMENTS) + 1)
    for row, query in enumerate(queries):
        expected = reference_scores(corpus, query, method, k1, b, params.delta)
        # what a passage without the question's terms scores (bm25l and bm25+: not 0)
        baseline = reference_scores(corpus, query, method, k1, b, params.delta, [[]])[0]
        ranked = sorted((s for s in expected if s > baseline + 1e-6), reverse=True)
        ids = [i for i in retrieved.ids[row].tolist() if i >= 0]
        assert retrieved.scores[row, : len(ranked)].tolist() == pytest.approx(ranked, rel=1e-5)
        assert len(ids) == len(ranked), "passages without the question's terms are missing"
        for place, passage in enumerate(ids):
            assert float(retrieved.scores[row, place]) == pytest.approx(expected[passage], 1e-5)
        assert (retrieved.ids[row, len(ranked) :] == -1).all()
        doc_scores = retrieved.doc_scores[row, : len(ranked)]
        assert doc_scores.tolist() == pytest.approx([s / 2.0 for s in ranked], rel=1e-5)


def test_the_tokenization_follows_the_settings(root: Path) -> None:
    """Stemming, stop words and lowercasing each change the terms, so no setting is ignored."""
    stemmed = retriever(root).params
    assert tokenize(stemmed, ["The runner runs, running"]) == [["runner", "run", "run"]]
    plain = stemmed.model_copy(update={"stemmer": "none", "stopwords": "none", "lowercase": False})
    assert tokenize(plain, ["The runner runs, running"]) == [["The", "runner", "runs", "running"]]
    # stemming finds the passage about running for "runs"; without it only the exact word
    found = retriever(root).retrieve(Questions(["runs"], refuse_encoding), 3)
    exact = retriever(root, stemmer="none").retrieve(Questions(["runs"], refuse_encoding), 3)
    assert set(found.ids[0].tolist()) == {2, 7, -1}
    assert exact.ids[0].tolist() == [2, -1, -1]


def test_each_thread_keeps_its_stemmer() -> None:
    """A Stemmer is not thread-safe but caches what it stemmed: one per thread, reused."""
    stemmers = bm25_retriever._stemmers
    mine = stemmers.get("english")
    assert stemmers.get("english") is mine
    theirs: list[Any] = []
    thread = threading.Thread(target=lambda: theirs.append(stemmers.get("english")))
    thread.start()
    thread.join()
    assert theirs[0] is not mine and type(theirs[0]) is type(mine)


# --- the index: a derived artifact of the KB ---------------------------------------------------


def test_the_index_is_built_once_and_reused(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb = tmp_path / "kb"
    shutil.copytree(root / "kb", kb, ignore=shutil.ignore_patterns("indexes"))
    builds = []
    build = bm25_retriever.build_index

    def counting(*args: Any, **kwargs: Any) -> None:
        builds.append(args[2].k1)
        build(*args, **kwargs)

    monkeypatch.setattr(bm25_retriever, "build_index", counting)
    path, loaded = spec(tmp_path), []

    def first_use() -> None:
        loaded.append(Pipeline.from_spec(path).retriever.index_directory)

    threads = [threading.Thread(target=first_use) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds == [1.5] and len(set(loaded)) == 1 and len(loaded) == 3, "built once"
    first = retriever(tmp_path)
    assert first.index_directory is not None
    assert first.index_directory.parent == kb / "indexes"
    assert first.index_directory.name.startswith("bm25-b0.75-delta0.5-k11.5-")
    assert type(first.model.scores["data"]).__name__ == "memmap"
    assert retriever(tmp_path, temperature=3.0).index_directory == first.index_directory
    assert builds == [1.5], "temperature does not change the index"
    other = retriever(tmp_path, k1=1.2)
    assert builds == [1.5, 1.2] and other.index_directory != first.index_directory
    status = main(["kb", "info", str(kb), "--verify"])
    assert status == 0


def test_a_missing_index_is_not_built_when_build_index_is_false(tmp_path: Path, root: Path) -> None:
    shutil.copytree(root / "kb", tmp_path / "kb", ignore=shutil.ignore_patterns("indexes"))
    with pytest.raises(IndexFileError, match=r"has not been built.*build_index = true"):
        retriever(tmp_path, build_index=False)


def test_a_failed_build_leaves_nothing(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bm25s

    shutil.copytree(root / "kb", tmp_path / "kb", ignore=shutil.ignore_patterns("indexes"))

    def half_save(self: Any, directory: Path, **kwargs: Any) -> None:
        Path(directory).mkdir(parents=True)
        (Path(directory) / "data.csc.index.npy").write_bytes(b"half")
        raise OSError("killed")

    monkeypatch.setattr(bm25s.BM25, "save", half_save)
    with pytest.raises(OSError, match="killed"):
        retriever(tmp_path)
    assert [
        p.name for p in (tmp_path / "kb" / "indexes").iterdir() if not p.name.endswith(".lock")
    ] == []


def test_a_damaged_index_is_refused(tmp_path: Path, root: Path) -> None:
    shutil.copytree(root / "kb", tmp_path / "kb", ignore=shutil.ignore_patterns("indexes"))
    path = retriever(tmp_path).index_directory
    data = path / "index" / "data.csc.index.npy"
    damaged = bytearray(data.read_bytes())
    damaged[-1] ^= 0xFF
    data.write_bytes(bytes(damaged))
    with pytest.raises(IndexFileError, match=r"checksum.*delete .* to rebuild it"):
        retriever(tmp_path)


def test_an_index_of_other_passages_is_refused(
    tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("kb", "other"):
        shutil.copytree(root / name, tmp_path / name, ignore=shutil.ignore_patterns("indexes"))
    index = retriever(tmp_path).index_directory
    shutil.copytree(index, tmp_path / "other" / "indexes" / index.name)
    with pytest.raises(MismatchError, match=r"not the BM25 index of this knowledge base.*Delete"):
        retriever(tmp_path, kb="other")
    assert main(["validate", str(spec(tmp_path, "other"))]) == 1
    assert "passages" in capsys.readouterr().err


# --- ragloom validate: the index's memory, no document vectors -------------------------------


def validate_notes(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["validate", str(path)]) == 0
    return capsys.readouterr().out


def test_validate_estimates_the_index_then_reads_it(
    tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A KB smaller than the sample is estimated exactly: its (term, passage) pairs and terms
    are those of the index built afterwards, whose files validate then reads."""
    shutil.copytree(root / "kb", tmp_path / "kb", ignore=shutil.ignore_patterns("indexes"))
    scoring = f"{len(DOCUMENTS)} passages; scoring a question holds about {12 * len(DOCUMENTS)} B"
    estimated = validate_notes(spec(tmp_path), capsys)
    model = retriever(tmp_path).model
    pairs, terms = len(model.scores["data"]), len(model.vocab_dict)
    assert scoring in estimated
    assert (
        f"about {pairs * 8} B memory-mapped ({pairs} term-passage pairs) and "
        f"{atomic.byte_size(terms * 170)} in memory (a vocabulary of {terms} terms by Heaps' "
        f"law, fewer if it saturates), estimated from a sample; built on first use"
    ) in estimated
    built = validate_notes(spec(tmp_path), capsys)
    size = sum(f.stat().st_size for f in (tmp_path / "kb" / "indexes").glob("bm25-*/index/*"))
    assert scoring in built
    assert (
        f": {atomic.byte_size(size)} on disk, memory-mapped, and "
        f"{atomic.byte_size(terms * 170)} in memory (a vocabulary of {terms} terms)"
    ) in built


def test_heaps_law_extrapolates_the_vocabulary() -> None:
    new_words = [[f"w{p}-{i}" for i in range(5)] for p in range(10)]  # every term new: V ~ n
    same_words = [["a", "b", "c"] for _ in range(10)]  # no new term after the first: V ~ 1
    assert bm25_retriever.estimate_terms(new_words, 1.0) == 50, "the sample is the corpus"
    assert bm25_retriever.estimate_terms(new_words, 20.0) == 1000
    assert bm25_retriever.estimate_terms(same_words, 20.0) == 3


def test_validate_counts_no_document_vectors_for_bm25(
    tmp_path: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With an [encoder] whose vector size validate reads, a dense retriever's question holds
    doc vectors and bm25's none: no retrieval memory is estimated for it."""
    from ragloom.testing.tiny_models import bert_dir

    model = bert_dir(tmp_path / "bert")
    encoder = f'[encoder]\ntype = "dpr"\npath = "{model}"\n'
    bm25 = tmp_path / "bm25.toml"
    bm25.write_text(SPEC.format(kb=root / "kb") + encoder, encoding="utf-8")
    out = validate_notes(bm25, capsys)
    assert "[encoder] fingerprint" in out and "[retriever] kb" in out
    assert "per question" not in out
    dense = tmp_path / "dense.toml"
    dense.write_text(
        f'schema = 1\n{encoder}[retriever]\ntype = "dense"\nkb = "{tmp_path / "none"}"\n'
        f'[retriever.index]\ntype = "faiss-exact"\n',
        encoding="utf-8",
    )
    assert "per question (retrieval" in validate_notes(dense, capsys)


# --- knowledge bases without an encoder ----------------------------------------------------------


def test_kb_build_without_an_encoder_writes_passages_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    documents = write_documents(tmp_path / "docs.jsonl", DOCUMENTS)
    out = tmp_path / "kb"
    status = main(["kb", "build", str(documents), "--spec", str(spec(tmp_path)), "--out", str(out)])
    assert status == 0 and "no vectors" in capsys.readouterr().out
    kb = KnowledgeBase.open(out)
    assert (len(kb), kb.dim, kb.embeddings.shape) == (len(DOCUMENTS), 0, (len(DOCUMENTS), 0))
    assert (kb.manifest.encoder.type, kb.manifest.encoder.fingerprint) == ("none", "none")
    retrieved = Pipeline.from_spec(spec(tmp_path)).retrieve(["George Orwell"], k=2)
    assert {p.title for p in retrieved.passages[0]} == {"Animal Farm", "Orwell"}
    # a dense retriever over it is refused, by validate and when built
    dense = tmp_path / "dense.toml"
    dense.write_text(
        f'schema = 1\n[retriever]\ntype = "dense"\nkb = "{out}"\n'
        f'[retriever.index]\ntype = "faiss-exact"\n'
    )
    assert main(["validate", str(dense)]) == 1
    assert "holds passages only" in capsys.readouterr().err
    with pytest.raises(MismatchError, match=r"holds passages only.*bm25"):
        Pipeline.from_spec(dense).retriever  # noqa: B018


def test_a_dense_spec_retrieves_with_bm25_by_override(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--set retriever.type=bm25`` keeps ``kb`` and drops ``[retriever.index]``; the encoder
    (whose model does not exist) is never built."""
    dense = tmp_path / "dense.toml"
    dense.write_text(
        f'schema = 1\n[encoder]\ntype = "dpr"\npath = "{tmp_path / "no-model"}"\n'
        f'[retriever]\ntype = "dense"\nkb = "{root / "kb"}"\n'
        f'[retriever.index]\ntype = "hnsw"\nM = 32\n'
    )
    assert main(["validate", str(dense), "--set", "retriever.type=bm25"]) == 0
    pipeline = Pipeline.from_spec(dense, overrides={"retriever.type": "bm25"})
    retrieved = pipeline.retrieve(["the moon landing"], k=1)
    assert retrieved.passages[0][0].title == "Moon"
    wikipedia = Path(__file__).parents[1] / "examples" / "wikipedia_fewshot.toml"
    assert main(["validate", str(wikipedia), "--set", "retriever.type=bm25"]) == 0
    assert "asset:wikipedia: its passages and BM25 index built on first use" in (
        capsys.readouterr().out
    )


def test_an_unknown_stemmer_is_refused_by_validate(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = spec(tmp_path, stemmer="englsh", stopwords="klingon")
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert '[retriever] stemmer = "englsh": PyStemmer has no stemmer' in err
    assert 'Did you mean "english"?' in err and '"none"' in err and "porter" in err
    assert '[retriever] stopwords = "klingon" is not allowed' in err


def test_training_the_question_encoder_through_bm25_is_refused(root: Path) -> None:
    from ragloom.training.trainer import TrainingError, _check_gradients_reach_the_encoder

    pipeline = Pipeline.from_spec(spec(root))
    with pytest.raises(TrainingError, match='type = "bm25" gives document scores that are not'):
        _check_gradients_reach_the_encoder(pipeline)


# --- the Retriever contract ---------------------------------------------------------------------


class TestBm25Contract(RetrieverContract):
    uses_vectors = False
    fills_k = False  # passages without any of the question's terms are missing
    questions = ("a fact about Animal Farm", "fact: the capital of France", "the moon landing")

    @pytest.fixture
    def built(self, root: Path) -> Pipeline:
        return Pipeline.from_spec(spec(root, name="contract.toml"))

    @pytest.fixture
    def retriever(self, built: Pipeline) -> Any:
        return built.retriever

    @pytest.fixture
    def corpus_size(self) -> int:
        return len(DOCUMENTS)

    @pytest.fixture
    def spec_table(self, built: Pipeline) -> tuple[Any, Any, dict[str, Any]]:
        context = BuildContext(built.spec.base_dir, built.spec.pipeline)
        return built.spec.components["retriever"].params, context, {}
