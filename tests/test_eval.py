"""`ragloom eval`: metrics, files written as it goes, sweeps, and bad QA files."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import pytest

from ragloom import Pipeline
from ragloom.cli import main
from ragloom.evaluation import QADataError, read_qa
from ragloom.kb.hf import import_hf
from ragloom.metrics import exact_match, f1, has_answer, normalize_answer
from ragloom.testing.tiny_models import rag_checkpoint, rag_spec, recipe_knowledge_base


def test_squad_normalization_and_scores() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("the Eiffel tower", ["Eiffel Tower"]) == 1.0
    assert exact_match("Paris", ["Lyon"]) == 0.0
    assert f1("George Orwell wrote it", ["Orwell"]) == pytest.approx(2 * 0.25 * 1 / 1.25)
    assert f1("", ["x"]) == 0.0
    assert has_answer("Written by George Orwell in 1945.", ["george orwell"])
    assert not has_answer("Orwellian themes", ["Orwell"])


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
    assert header.split() == ["VARIANT", "EM", "F1", "R@1", "R@3", "p50", "s", "p90", "s"]
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
