"""The ``bm25`` retriever against the raw ``bm25s`` call and against ``rank_bm25``, side by side in
one run, plus build time, size on disk and peak memory, and a linear model of them per passage
extrapolated to 21M passages (docs/scale.md).

The corpus is generated, seeded and reproducible (no download): passages of 50-150 words (mean
100, like DPR's psgs_w100) drawn from a Zipf-Mandelbrot distribution (``p(r) ~ 1/(r + 2.7)``)
over 200,000 invented words (consonant-vowel syllables); the 40 most frequent ranks are English
stop words, so tokenizing has stop words to drop, as in real text. A title is two words. Queries
are 3-8 words drawn from a random passage's non-stop words.

What runs:

1. A passages-only knowledge base (``build_knowledge_base(documents, None, out)``) at n/4, n/2
   and n passages, and the ragloom BM25 index of each (``build_index``: tokenize, score, save,
   checksum), each build in a forked process so its peak memory is its own (``VmHWM`` above the
   process's size when it starts). The n/4 and n/2 builds fit ``a + b n``; n is predicted, then
   measured. The same for the raw bm25s build (tokenize, index, save) and rank_bm25's
   ``BM25Okapi`` (tokenize with the same tokenizer, then build; pickled for its size on disk).
2. On the loaded index of n passages, in this process, every batch run by each search back to
   back (two rounds; the machine's load falls on all alike): ``Bm25Retriever.retrieve``
   (question text in, passages out) against bm25s's own ``bm25s.tokenize`` + ``BM25.retrieve``
   on the same loaded model (the wrapper's overhead, target under 10%), and ``BM25.retrieve`` on
   pre-tokenized queries; batch 1 (200 queries) and batch 64 (1,024 queries), k = 10, one
   thread. Each search is called once untimed first (the first ragloom call imports torch,
   whose tensors it returns). Throughput and overhead are given both ways: by the median
   batch, and over all batches (the mean, which one slow call moves).
3. rank_bm25 ``get_scores`` + top 10 on the first ``--rank-queries`` queries (it is pure Python:
   every query term is a Python loop over all passages), in the forked process that built it;
   its top 10 against ragloom's (rank_bm25's Okapi IDF differs from Lucene's, so the overlap is
   high, not 1).

    python benchmarks/bm25.py [--passages 100000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ragloom.commands.common import table_lines
from ragloom.kb import KnowledgeBase
from ragloom.kb.build import build_knowledge_base
from ragloom.kb.documents import Document
from ragloom.kb.knowledge_base import INDEX_SUBDIR
from ragloom.kb.manifest import NO_ENCODER
from ragloom.plugins.bm25_retriever import (
    BYTES_PER_PAIR,
    INDPTR_FILE,
    Bm25Retriever,
    build_index,
    estimate_index,
    index_path,
    load_index,
    passage_texts,
    tokenize,
)
from ragloom.protocols import Questions

TARGET = 21_015_324  # passages of DPR's Wikipedia (psgs_w100)
VOCABULARY = 200_000
STOP_WORDS = (
    "the of and in to was is for on as by with he at from that his it an were are which this "
    "be or has had its also their first not but they one been after have who she her"
).split()
K = 10

# --- the corpus ---------------------------------------------------------------------------------


def invented_words(count: int) -> np.ndarray:
    """``count`` distinct letter-only words of 2-3 consonant-vowel syllables."""
    syllables = [c + v for c in "bdfghklmnprstvz" for v in "aeiou"]  # 75; no y, no s endings
    base = len(syllables)
    words = []
    for rank in range(count):
        digits, value = [], rank + base  # at least two syllables
        while value:
            value, digit = divmod(value, base)
            digits.append(syllables[digit])
        words.append("".join(reversed(digits)))
    return np.array(words, dtype=object)


def corpus(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """Titles, texts and queries (seeded)."""
    rng = np.random.default_rng(seed)
    words = invented_words(VOCABULARY)
    words[: len(STOP_WORDS)] = STOP_WORDS
    weights = 1.0 / (np.arange(VOCABULARY) + 2.7)
    cdf = np.cumsum(weights / weights.sum())
    lengths = rng.integers(50, 151, n)
    drawn = np.minimum(np.searchsorted(cdf, rng.random(int(lengths.sum()))), VOCABULARY - 1)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    texts = [" ".join(words[drawn[bounds[i] : bounds[i + 1]]]) for i in range(n)]
    titled = np.minimum(np.searchsorted(cdf, rng.random(2 * n)), VOCABULARY - 1)
    titles = [f"{words[a].capitalize()} {words[b]}" for a, b in titled.reshape(n, 2)]
    queries = []
    for _ in range(1024):
        row = drawn[bounds[(i := rng.integers(n))] : bounds[i + 1]]
        content = row[row >= len(STOP_WORDS)]
        picked = rng.choice(content, size=min(len(content), int(rng.integers(3, 9))), replace=False)
        queries.append(" ".join(words[picked]))
    return titles, texts, queries


# --- measuring ----------------------------------------------------------------------------------


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``work()`` in a forked process; its result plus ``peak_mib``, the process's high-water
    resident memory above its size when it started."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        try:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # reset VmHWM
        except OSError:
            pass
        start = _status_mib("VmRSS")
        try:
            result = work()
            result["peak_mib"] = _status_mib("VmHWM") - start
        except BaseException as error:
            result = {"error": repr(error)}
        with os.fdopen(write, "wb") as out:
            pickle.dump(result, out)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as source:
        result = pickle.load(source)
    os.waitpid(pid, 0)
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def build_kb(titles: list[str], texts: list[str], n: int, out: Path) -> tuple[KnowledgeBase, float]:
    started = time.perf_counter()
    documents = (Document(titles[i], texts[i], str(i)) for i in range(n))
    kb = build_knowledge_base(documents, None, out, encoder_type=NO_ENCODER.type, progress=False)
    return kb, time.perf_counter() - started


def ragloom_build(kb: KnowledgeBase, params: Any) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        path = index_path(kb.directory, params)
        started = time.perf_counter()
        build_index(kb, path, params, progress=False)
        return {"seconds": time.perf_counter() - started, "bytes": directory_bytes(path)}

    return in_child(work)


def bm25s_build(titles: list[str], texts: list[str], n: int, params: Any) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        import bm25s
        import Stemmer

        started = time.perf_counter()
        tokens = bm25s.tokenize(
            passage_texts(titles[:n], texts[:n]),
            stopwords="en",
            stemmer=Stemmer.Stemmer("english"),
            show_progress=False,
        )
        tokenized = time.perf_counter()
        model = bm25s.BM25(k1=params.k1, b=params.b, method=params.method)
        model.index(tokens, show_progress=False)
        indexed = time.perf_counter()
        with tempfile.TemporaryDirectory() as directory:
            model.save(directory, show_progress=False)
            size = directory_bytes(Path(directory))
        return {
            "tokenize": tokenized - started,
            "seconds": time.perf_counter() - started,
            "index": indexed - tokenized,
            "bytes": size,
        }

    return in_child(work)


def rank_bm25_build(
    titles: list[str], texts: list[str], n: int, params: Any, queries: list[str] | None
) -> dict[str, Any]:
    """Build (and with ``queries``, query) rank_bm25's BM25Okapi over the same terms."""

    def work() -> dict[str, Any]:
        from rank_bm25 import BM25Okapi

        started = time.perf_counter()
        terms: list[list[str]] = []
        for start in range(0, n, 8192):
            stop = min(n, start + 8192)
            terms.extend(tokenize(params, passage_texts(titles[start:stop], texts[start:stop])))
        tokenized = time.perf_counter()
        model = BM25Okapi(terms, k1=params.k1, b=params.b)
        built = time.perf_counter()
        result: dict[str, Any] = {"tokenize": tokenized - started, "seconds": built - started}
        result["bytes"] = len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        if queries:
            query_terms = tokenize(params, queries)
            started = time.perf_counter()
            top = [np.argsort(-model.get_scores(q), kind="stable")[:K] for q in query_terms]
            result["qps"] = len(queries) / (time.perf_counter() - started)
            result["top"] = top
        return result

    return in_child(work)


def paired_times(
    searches: dict[str, Callable[[list[str]], object]], queries: list[str], batch: int, rounds: int
) -> dict[str, list[float]]:
    """Seconds of each search on each batch, the searches run back to back on the same batch
    (in an order rotated from batch to batch), so that load from other work on the machine
    falls on all of them alike."""
    count = 200 if batch == 1 else len(queries)
    names = list(searches)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        for step, start in enumerate(range(0, count, batch)):
            chunk = queries[start : start + batch]
            shift = (step + round_) % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                searches[name](chunk)
                times[name].append(time.perf_counter() - started)
    return times


def warm_up(
    searches: dict[str, Callable[[list[str]], object]], queries: list[str]
) -> dict[str, float]:
    """Seconds of one untimed call of each search: one-time costs (the first ragloom call
    imports torch, whose tensors it returns) are no batch's."""
    seconds = {}
    for name, search in searches.items():
        started = time.perf_counter()
        search(queries[:1])
        seconds[name] = time.perf_counter() - started
    return seconds


def query_rows(timed: dict[int, dict[str, list[float]]], rank: dict[str, Any]) -> list[list[str]]:
    """The query table: per search and batch size, q/s of the median batch and over all
    batches, and ragloom's overhead over the search by the median batch and by total time."""
    rows = [["retrieve", "batch", "q/s median", "q/s mean", "overhead median", "overhead mean"]]
    for label in timed[1]:
        for batch, times in timed.items():
            ours, theirs = np.array(times["ragloom"]), np.array(times[label])
            overheads = ["-", "-"]
            if label != "ragloom":
                overheads = [
                    f"{np.median(ours / theirs) - 1:+.1%}",
                    f"{ours.sum() / theirs.sum() - 1:+.1%}",
                ]
            rows.append(
                [
                    label,
                    str(batch),
                    f"{batch / np.median(theirs):.1f}",
                    f"{len(theirs) * batch / theirs.sum():.1f}",
                    *overheads,
                ]
            )
    ours_qps = len(timed[1]["ragloom"]) / sum(timed[1]["ragloom"])
    rows.append(
        [
            f"rank_bm25 BM25Okapi ({len(rank['top'])} queries)",
            "1",
            "-",
            f"{rank['qps']:.1f}",
            f"ragloom {ours_qps / rank['qps']:.0f}x faster",
            "-",
        ]
    )
    return rows


def no_vectors(texts: object) -> Any:
    raise AssertionError("bm25 never encodes questions")


# --- the run ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--rank-queries", type=int, default=100, help="queries for rank_bm25")
    parser.add_argument("--quick", action="store_true", help="10x fewer passages (smoke run)")
    parser.add_argument("--work", help="directory for the KBs (default: a temporary one)")
    args = parser.parse_args()
    n = args.passages // 10 if args.quick else args.passages
    sizes = (n // 4, n // 2, n)
    import bm25s
    import rank_bm25
    import Stemmer

    started = time.perf_counter()
    titles, texts, queries = corpus(n)
    print(
        f"corpus: {n:,} generated passages ({sum(len(t.split()) for t in texts) / n:.0f} words "
        f"each on average), {len(queries)} queries; generated in "
        f"{time.perf_counter() - started:.1f} s; bm25s {bm25s.__version__}, rank_bm25 "
        f"{getattr(rank_bm25, '__version__', '0.2.2')}, {os.cpu_count()} CPUs",
        flush=True,
    )
    work = Path(args.work or tempfile.mkdtemp(prefix="ragloom-bm25-"))
    try:
        run(work, titles, texts, queries, sizes, args.rank_queries, bm25s, Stemmer)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def run(
    work: Path,
    titles: list[str],
    texts: list[str],
    queries: list[str],
    sizes: tuple[int, int, int],
    rank_queries: int,
    bm25s: Any,
    Stemmer: Any,
) -> None:
    n = sizes[-1]
    builds: dict[str, dict[int, dict[str, Any]]] = {"ragloom": {}, "bm25s": {}, "rank_bm25": {}}
    kbs: dict[int, KnowledgeBase] = {}
    params: Any = None
    rank_queries_list = queries[:rank_queries]
    for size in sizes:
        kb, kb_seconds = build_kb(titles, texts, size, work / f"kb-{size}")
        kbs[size] = kb
        params = Bm25Retriever.Params(kb=str(kb.directory))
        builds["ragloom"][size] = {**ragloom_build(kb, params), "kb_seconds": kb_seconds}
        builds["bm25s"][size] = bm25s_build(titles, texts, size, params)
        builds["rank_bm25"][size] = rank_bm25_build(
            titles, texts, size, params, rank_queries_list if size == n else None
        )
        print(
            f"built {size:,}: "
            + ", ".join(f"{name} {b[size]['seconds']:.1f} s" for name, b in builds.items())
            + f" (passages-only KB {kb_seconds:.1f} s)",
            flush=True,
        )

    # --- queries: plugin against raw bm25s on the same loaded model, alternately ---
    kb = kbs[n]
    params = Bm25Retriever.Params(kb=str(kb.directory))
    before = _status_mib("VmRSS")
    path = index_path(kb.directory, params)
    started = time.perf_counter()
    retriever = Bm25Retriever(kb, load_index(kb, path, params), params, path)
    load_seconds = time.perf_counter() - started
    model = retriever.model
    stemmer = Stemmer.Stemmer("english")
    pretokenized = {q: tokenize(params, [q])[0] for q in queries}

    def plugin(batch: list[str]) -> object:
        return retriever.retrieve(Questions(batch, no_vectors), K)

    def raw_text(batch: list[str]) -> object:
        tokens = bm25s.tokenize(
            batch, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False
        )
        return model.retrieve(tokens, k=K, sorted=True, show_progress=False, n_threads=0)

    def raw_tokens(batch: list[str]) -> object:
        tokens = [pretokenized[q] for q in batch]
        return model.retrieve(tokens, k=K, sorted=True, show_progress=False, n_threads=0)

    searches = {"ragloom": plugin, "bm25s": raw_text, "bm25s (pre-tokenized)": raw_tokens}
    first_calls = warm_up(searches, queries)
    rounds = 2
    timed = {batch: paired_times(searches, queries, batch, rounds) for batch in (1, 64)}
    resident = _status_mib("VmRSS") - before

    # same results?
    found = retriever.retrieve(Questions(queries, no_vectors), K).ids.numpy()
    raw_ids, raw_scores = raw_text(queries)
    same = float(  # bm25s fills a row with score-0 passages; ragloom leaves -1 there
        np.mean(
            [
                set(a[a >= 0].tolist()) == set(b[s > 0].tolist())
                for a, b, s in zip(found, raw_ids, raw_scores, strict=True)
            ]
        )
    )
    rank = builds["rank_bm25"][n]
    overlap = float(
        np.mean(
            [
                len(set(a.tolist()) & set(b.tolist())) / K
                for a, b in zip(found[: len(rank["top"])], rank["top"], strict=True)
            ]
        )
    )
    pairs, terms = estimate_index(kb, params)
    built_terms = len(np.load(path / INDEX_SUBDIR / INDPTR_FILE, mmap_mode="r")) - 1

    # --- tables ---
    ours, raw = builds["ragloom"][n], builds["bm25s"][n]
    print(
        f"\n## Queries: {n:,} passages, k={K}, one thread; each batch run by every search back "
        f"to back, {rounds} rounds, after one untimed call of each; q/s: of the median batch "
        f"and over all batches (mean); ragloom's overhead: the median over batches of its time "
        f"over the other's, and its total time over the other's (mean)\n"
    )
    print("\n".join(table_lines(query_rows(timed, rank))))
    print(
        "\nfirst (untimed) calls: "
        + ", ".join(f"{name} {seconds * 1e3:.0f} ms" for name, seconds in first_calls.items())
    )
    print(
        f"\nragloom = bm25s on {same:.1%} of the queries (the same top-{K} set; ties at the "
        f"cut-off may differ); rank_bm25's top "
        f"{K} overlaps ragloom's by {overlap:.1%} (Okapi IDF, not Lucene's). Loading the index "
        f"(checksums, memory-mapped): {load_seconds:.2f} s; resident after all queries: "
        f"+{resident:.0f} MiB."
    )

    print(f"\n## Builds: {n:,} passages\n")
    rows = [["build", "seconds", "of which tokenize", "size on disk MB", "peak memory MiB"]]
    rows.append(
        [
            "ragloom (tokenize, index, save, checksums)",
            f"{ours['seconds']:.1f}",
            "-",
            f"{ours['bytes'] / 1e6:.0f}",
            f"{ours['peak_mib']:.0f}",
        ]
    )
    rows.append(
        [
            "bm25s (tokenize, index, save)",
            f"{raw['seconds']:.1f}",
            f"{raw['tokenize']:.1f}",
            f"{raw['bytes'] / 1e6:.0f}",
            f"{raw['peak_mib']:.0f}",
        ]
    )
    rows.append(
        [
            "rank_bm25 (tokenize, BM25Okapi; pickled)",
            f"{rank['seconds']:.1f}",
            f"{rank['tokenize']:.1f}",
            f"{rank['bytes'] / 1e6:.0f}",
            f"{rank['peak_mib']:.0f}",
        ]
    )
    print("\n".join(table_lines(rows)))
    print(
        f"\nragloom build / bm25s build: {ours['seconds'] / raw['seconds']:.2f}x; rank_bm25 / "
        f"ragloom build: {rank['seconds'] / ours['seconds']:.2f}x, memory "
        f"{rank['peak_mib'] / ours['peak_mib']:.1f}x, size {rank['bytes'] / ours['bytes']:.1f}x. "
        f"ragloom validate's estimate of the index: {pairs * BYTES_PER_PAIR / 1e6:.0f} MB of "
        f"score matrix (measured {ours['bytes'] / 1e6:.0f} MB on disk, vocabulary included), "
        f"{terms:,} vocabulary terms (measured {built_terms:,})."
    )

    # --- the linear model, checked on n, extrapolated to 21M ---
    print(f"\n## Linear model (fit on {sizes[0]:,} and {sizes[1]:,}, checked on {n:,})\n")
    rows = [["ragloom", *[f"{s:,}" for s in sizes], f"predicted {n:,}", "per 1M", "21M"]]
    for key, label, scale, unit in (
        ("seconds", "build s", 1.0, "{:.0f} s"),
        ("bytes", "size on disk MB", 1e-6, "{:.0f} MB"),
        ("peak_mib", "peak memory MiB", 1.0, "{:.0f} MiB"),
    ):
        (n1, y1), (n2, y2) = [(s, builds["ragloom"][s][key] * scale) for s in sizes[:2]]
        slope = (y2 - y1) / (n2 - n1)
        predicted = y1 + slope * (n - n1)
        target = y1 + slope * (TARGET - n1)
        rows.append(
            [
                label,
                *[f"{builds['ragloom'][s][key] * scale:.1f}" for s in sizes],
                f"{predicted:.1f}",
                unit.format(slope * 1e6),
                {"seconds": f"{target / 3600:.1f} h", "bytes": f"{target / 1e3:.0f} GB"}.get(
                    key, f"{target / 1024:.0f} GiB"
                ),
            ]
        )
    print("\n".join(table_lines(rows)))


if __name__ == "__main__":
    main()
