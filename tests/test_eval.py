"""`ragloom eval`: metrics, files written as it goes, sweeps, and bad QA files."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import unicodedata
from pathlib import Path

import faiss
import pytest

from ragloom import Pipeline
from ragloom.cli import main
from ragloom.evaluation import QADataError, read_qa, warn_unscorable
from ragloom.kb.hf import import_hf
from ragloom.kb.wikipedia import wikipedia_documents
from ragloom.metrics import answer_tokens, exact_match, f1, has_answer, normalize_answer
from ragloom.testing.tiny_models import rag_checkpoint, rag_spec, recipe_knowledge_base


def test_squad_normalization_and_scores() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("the Eiffel tower", ["Eiffel Tower"]) == 1.0
    assert exact_match("Paris", ["Lyon"]) == 0.0
    assert f1("George Orwell wrote it", ["Orwell"]) == pytest.approx(2 * 0.25 * 1 / 1.25)
    assert f1("", ["x"]) == 0.0
    assert has_answer("Written by George Orwell in 1945.", ["george orwell"])
    assert not has_answer("Orwellian themes", ["Orwell"])


DPR_CASES = [
    # (passage, answer, found by DPR's has_answer): numbers next to punctuation are tokens of
    # their own; SQuAD normalization glued them to their neighbours ("maxsize128", "1e09").
    ("@lru_cache(maxsize=128, typed=False)", "128", True),
    ("@lru_cache(maxsize=128, typed=False)", "12", False),
    ("rtol=1e-09, atol=0.0", "1e-09", True),
    ("rtol=1e-09, atol=0.0", "1e-9", False),
    ("it was 1,000 km long", "1,000", True),
    ("it was 1,000 km long", "1000", False),
    ("x = 2 ** 10", "**", True),
    ("x = 2 * 10", "**", False),
    ("if a < b:", "<", True),
    ("if a <= b:", "<=", True),
    ("if a <= b:", "< =", True),  # whitespace never is a token
    ("Conan O'Brien hosted it.", "O'Brien", True),
    ("Conan O'Brien hosted it.", "Brien", True),  # the apostrophe splits the name
    ("Conan O'Brien hosted it.", "OBrien", False),
    ("André-Marie Ampère was French.", "Ampère", True),
    ("André-Marie Ampère was French.", "andré-marie", True),
    ("André-Marie Ampère was French.", "Ampere", False),  # accents are kept (NFD, not stripped)
    ("Ampe\u0300re, decomposed", "Ampère", True),  # NFD: composed and decomposed agree
    ("WRITTEN BY GEORGE ORWELL", "george orwell", True),  # uncased
    ("the Orwell estate", "the Orwell", True),
    ("Orwell estate", "the Orwell", False),  # articles are tokens too (no SQuAD stripping)
    ("snake_case names", "case", True),  # "_" is punctuation, not a letter
    ("naïve approach", "naive", False),
]


@pytest.mark.parametrize(("passage", "answer", "found"), DPR_CASES)
def test_has_answer_matches_as_dpr(passage: str, answer: str, found: bool) -> None:
    assert has_answer(passage, [answer]) is found


def category_tokens(text: str) -> list[str]:
    """DPR's tokens by Unicode categories, written without ``regex``: runs of letters, numbers
    and marks; every other character that is no separator (Z) or control (C) on its own."""
    tokens, run = [], ""
    for char in unicodedata.normalize("NFD", text):
        kind = unicodedata.category(char)[0]
        if kind in "LNM":
            run += char
            continue
        if run:
            tokens.append(run)
            run = ""
        if kind not in "ZC":
            tokens.append(char)
    return [token.lower() for token in [*tokens, run] if token]


def test_answer_tokens_agree_with_unicode_categories_on_wikipedia() -> None:
    """On the embedded corpus (text nobody here wrote: accents, dates, markup remnants)."""
    for document in wikipedia_documents():
        assert answer_tokens(document.text) == category_tokens(document.text), document.title


def test_every_bundled_answer_is_found_in_its_article() -> None:
    """data/wikipedia_qa.jsonl promises each answer occurs in its gold article."""
    articles = {document.title: document.text for document in wikipedia_documents()}
    items = read_qa(Path(__file__).parent.parent / "data" / "wikipedia_qa.jsonl")
    missed = [item.answers for item in items if not has_answer(articles[item.title], item.answers)]
    assert not missed


def test_an_answer_without_tokens_is_never_found_and_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ragloom.evaluation import QAItem

    assert not has_answer("any passage at all", [" ", "\u200b"])
    items = [QAItem("which operator?", ["**"]), QAItem("blank?", ["yes", " \t"])]
    with caplog.at_level(logging.WARNING, "ragloom.evaluation"):
        warn_unscorable(items, generated=False)
        warn_unscorable(items, generated=False)  # a second variant of a sweep
    assert [record.getMessage() for record in caplog.records] == [
        "question 2 ('blank?'): the answer ' \\t' has no tokens, so recall never finds it in a "
        "passage. Fix the answer in the QA file."
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, "ragloom.evaluation"):
        warn_unscorable(items, generated=True)
    assert "question 1 ('which operator?'): the answer '**' is empty after SQuAD" in caplog.text


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    checkpoint, _, context = rag_checkpoint(root)
    passages, index = recipe_knowledge_base(root, context, faiss.IndexFlatIP(32))
    path = root / "spec.toml"
    path.write_text(rag_spec(checkpoint, context, root / "kb", max_length=8))
    import_hf(passages, root / "kb", index, Pipeline.from_spec(path).encoder, "dpr")
    return path


def write_qa(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_eval_writes_results_and_compares_variants(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_qa(
        tmp_path / "qa.jsonl",
        [
            {"question": "paris capital france", "answers": ["paris"], "title": "x"},
            {"question": "moon apollo rocket", "answers": ["moon"]},
            {"question": "who wrote animal farm", "answers": ["orwell", "george orwell"]},
        ],
    )
    out = tmp_path / "run"
    status = main(
        [
            "eval",
            str(spec),
            "--data",
            str(data),
            "--out",
            str(out),
            "-k",
            "1,3",
            "--sweep",
            "retriever.index.type=faiss-exact,hnsw",
        ]
    )
    captured = capsys.readouterr().out
    assert status == 0
    header = next(line for line in captured.splitlines() if line.startswith("VARIANT"))
    assert header.split() == ["VARIANT", "EM", "F1", "R@1", "R@3", "p50", "s", "p90", "s", "q/s"]
    for variant in ("retriever.index.type=faiss-exact", "retriever.index.type=hnsw"):
        directory = out / variant
        rows = [
            json.loads(line) for line in (directory / "questions.jsonl").read_text().splitlines()
        ]
        assert len(rows) == 3 and set(rows[0]) >= {"prediction", "exact_match", "f1", "recall@1"}
        summary = json.loads((directory / "summary.json").read_text())
        assert summary["questions"] == 3 and 0.0 <= summary["recall"]["3"] <= 1.0
        assert summary["recall"]["1"] <= summary["recall"]["3"]
        assert (directory / "spec.toml").read_text().count('type = "') >= 4
        assert json.loads((directory / "kb-manifest.json").read_text())["count"] == 120
    hnsw_spec = (out / "retriever.index.type=hnsw" / "spec.toml").read_text()
    assert 'type = "hnsw"' in hnsw_spec


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "q"}\n', r'qa.jsonl:1: "answers" must be a non-empty list of strings'),
        (
            '{"question": "ok", "answers": ["a"]}\n{"question": "  ", "answers": ["a"]}\n',
            r'qa.jsonl:2: "question" must be a non-empty string',
        ),
        ("{oops\n", r"qa.jsonl:1: not valid JSON"),
        ("\n", r"qa.jsonl: no questions"),
    ],
)
def test_bad_qa_files_fail_before_anything_runs(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(QADataError, match=message):
        read_qa(path)


def test_an_unreadable_qa_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: Path
) -> None:
    status = main(
        ["eval", str(spec), "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]
    )
    assert status == 1 and "missing.jsonl: cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_bundled_qa_set_reads(tmp_path: Path) -> None:
    items = read_qa(Path(__file__).parent.parent / "data" / "wikipedia_qa.jsonl")
    assert len(items) >= 100
    assert all(item.title for item in items)


def test_retrieval_only_reports_recall_without_generating(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_qa(tmp_path / "qa.jsonl", [{"question": "paris capital", "answers": ["paris"]}])
    status = main(
        ["eval", str(spec), "--data", str(data), "--out", str(tmp_path / "r"), "--retrieval-only"]
    )
    assert status == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("spec"))
    assert row.split()[1:3] == ["-", "-"]
    summary = json.loads((tmp_path / "r" / "spec" / "summary.json").read_text())
    assert summary["exact_match"] is None and summary["recall"]["1"] in (0.0, 1.0)


def test_a_question_record_lists_every_retrieved_passage_in_full(
    spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ragloom.kb import KnowledgeBase

    data = write_qa(tmp_path / "qa.jsonl", [{"question": "paris capital", "answers": ["paris"]}])
    status = main(["eval", str(spec), "--data", str(data), "--out", str(tmp_path / "r"), "-k", "4"])
    assert status == 0, capsys.readouterr().err
    (row,) = [json.loads(line) for line in (tmp_path / "r/spec/questions.jsonl").open()]
    answer = Pipeline.from_spec(spec).generate(["paris capital"])[0]
    assert row["prediction"] == answer.text and row["score"] == round(answer.score, 4)
    assert [set(passage) for passage in row["passages"]] == [
        {"id", "score", "has_answer", "title", "text"}
    ] * 4  # max(n_docs 3, k 4): what recall was counted on
    kb = KnowledgeBase.open(spec.parent / "kb")
    retrieved = Pipeline.from_spec(spec).retrieve(["paris capital"], k=4)
    for passage, found in zip(row["passages"], retrieved.passages[0], strict=True):
        assert passage["id"] == found.id and passage["score"] == pytest.approx(found.score, 1e-4)
        assert passage["text"] == kb.passages.columns(found.id, found.id + 1)[1][0]
        assert passage["has_answer"] == has_answer(passage["text"], ["paris"])
    assert row["recall@4"] == float(any(p["has_answer"] for p in row["passages"]))


def test_retrieval_only_never_loads_the_generator(spec: Path, tmp_path: Path) -> None:
    """Not for the spec, nor for variants of a sweep (which share the spec's models)."""
    import subprocess

    from conftest import ragloom_command

    broken = tmp_path / "broken.toml"
    broken.write_text(spec.read_text().replace('"bart"', '"bart"\npath = "no-such-model"'))
    data = write_qa(tmp_path / "qa.jsonl", [{"question": "paris capital", "answers": ["paris"]}])
    sweep = ("--sweep", "retriever.index.type=faiss-exact,faiss-hnsw")
    command = ragloom_command("eval", broken, "--data", data, *sweep)
    result = subprocess.run(
        [*command, "--retrieval-only", "--out", tmp_path / "r"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    (row,) = [
        json.loads(line)
        for line in (tmp_path / "r/retriever.index.type=faiss-hnsw/questions.jsonl").open()
    ]
    assert row["prediction"] == "" and row["score"] is None and row["exact_match"] is None
    assert len(row["passages"]) == 10 and all(passage["text"] for passage in row["passages"])
    generating = subprocess.run([*command, "--out", tmp_path / "g"], capture_output=True)
    assert generating.returncode == 1 and b"no-such-model does not exist" in generating.stderr


def test_batched_eval_gives_the_answers_of_one_at_a_time(spec: Path, tmp_path: Path) -> None:
    questions = ["paris capital france", "moon apollo rocket", "who wrote animal farm", "paris"]
    data = write_qa(
        tmp_path / "qa.jsonl", [{"question": q, "answers": ["paris"]} for q in questions]
    )
    records = {}
    for batch in (1, 3):
        out = tmp_path / f"batch-{batch}"
        arguments = ["eval", str(spec), "--data", str(data), "--out", str(out)]
        assert main([*arguments, "--batch-size", str(batch)]) == 0
        records[batch] = [json.loads(line) for line in (out / "spec/questions.jsonl").open()]
        summary = json.loads((out / "spec/summary.json").read_text())
        assert summary["batch_size"] == batch and summary["questions_per_second"] > 0
    same = ("question", "prediction", "exact_match", "f1", "recall@1")
    for alone, batched in zip(records[1], records[3], strict=True):
        assert {key: alone[key] for key in same} == {key: batched[key] for key in same}
        assert batched["score"] == pytest.approx(alone["score"], abs=1e-3)  # rounded to 4 places
        for one, other in zip(alone["passages"], batched["passages"], strict=True):
            assert one["id"] == other["id"] and one["text"] == other["text"]
            assert one["score"] == pytest.approx(other["score"], abs=1e-3)
    first_batch = records[3][:3]
    assert len({row["batch_latency"] for row in first_batch}) == 1
    assert first_batch[0]["latency"] == pytest.approx(first_batch[0]["batch_latency"] / 3, abs=1e-3)
    assert records[3][3]["latency"] == records[3][3]["batch_latency"]  # the last batch: one


def test_a_batch_size_below_one_is_refused(spec: Path, tmp_path: Path) -> None:
    data = write_qa(tmp_path / "qa.jsonl", [{"question": "paris", "answers": ["paris"]}])
    result = subprocess.run(
        [sys.executable, "-m", "ragloom.cli", "eval", str(spec), "--data", str(data), "--out",
         str(tmp_path / "r"), "--batch-size", "0"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--batch-size" in result.stderr and "at least 1" in result.stderr
    assert not (tmp_path / "r").exists()
