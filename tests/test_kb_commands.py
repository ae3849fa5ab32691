"""`ragloom kb ...` and `ragloom index ...`, including builds killed midway and resumed."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_ENCODER_SPEC as SPEC
from conftest import encoder_workspace, kill_midway, ragloom_command, write_documents
from ragloom.cli import main
from ragloom.kb import KnowledgeBase
from ragloom.testing.tiny_models import bert_dir, corpus


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = encoder_workspace(tmp_path_factory.mktemp("commands"))
    write_documents(root / "docs.jsonl", 200)
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def built(workspace: Path) -> Path:
    kb = workspace / "kb"
    status = main(
        [
            "kb",
            "build",
            str(workspace / "docs.jsonl"),
            "--spec",
            str(workspace / "spec.toml"),
            "--out",
            str(kb),
            "--split-words",
            "10",
        ]
    )
    assert status == 0
    return kb


def test_kb_build_splits_and_encodes(built: Path, workspace: Path) -> None:
    kb = KnowledgeBase.open(built)
    assert len(kb) == 200 * 3  # 24 words per document, cut every 10
    assert kb.manifest.source["split_words"] == 10
    first = json.loads((workspace / "docs.jsonl").read_text().splitlines()[0])
    words = first["text"].split()
    chunks = [p.text.split() for p in kb.passages.get([0, 1, 2])]
    assert chunks == [words[:10], words[10:20], words[20:]]
    assert {p.title for p in kb.passages.get([0, 1, 2])} == {first["title"]}


def test_kb_info_lists_manifest_and_indexes(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, _ = run(
        capsys,
        "index",
        "build",
        str(built),
        "--type",
        "faiss-compressed",
        "--param",
        "factory=IVF4,PQ8x4",
        "--param",
        "nprobe=2",
    )
    assert status == 0
    status, out, _ = run(capsys, "kb", "info", str(built), "--verify")
    assert status == 0
    assert "passages         600" in out and "verify knowledge base: 2 files, ok" in out
    assert "verify index faiss-compressed" in out
    assert "faiss-compressed-factoryIVF4.PQ8x4-seed0-train_size262144" in out


def test_index_build_with_a_bad_parameter(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(
        capsys, "index", "build", str(built), "--type", "hnsw", "--param", "ef_construct=10"
    )
    assert status == 1
    assert '[retriever.index] unknown key "ef_construct". Did you mean "ef_construction"?' in err


def test_index_compare_prints_a_table_and_a_plot(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "compare.png"
    status, out, err = run(
        capsys,
        "index",
        "compare",
        str(built),
        "--types",
        "faiss-exact,faiss-hnsw,hnsw",
        "--num-queries",
        "50",
        "--plot",
        str(plot),
        "--param",
        "M=8",
    )
    assert status == 0, err
    lines = out.splitlines()
    assert (
        "600 vectors of dim 32; 50 queries (50 midpoints of random pairs of stored vectors); k = 10"
        in lines
    ), out
    rows = {line.split()[0]: line.split() for line in lines if line.split()}
    assert rows["faiss-exact"][1] == "1.0000", out
    assert float(rows["hnsw-M8-ef_construction200-seed100"][1]) > 0.5, out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kb_build_errors_exit_1(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = workspace / "bad.jsonl"
    bad.write_text('{"title": "no text"}\n')
    status, _, err = run(
        capsys,
        "kb",
        "build",
        str(bad),
        "--spec",
        str(workspace / "spec.toml"),
        "--out",
        str(workspace / "never"),
    )
    assert status == 1 and 'bad.jsonl:1: no "text" string' in err
    assert not (workspace / "never").exists()


def test_kb_build_refuses_a_negative_split(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    documents, spec = workspace / "docs.jsonl", workspace / "spec.toml"
    status, _, err = run(
        capsys,
        *("kb", "build", str(documents), "--spec", str(spec), "--out", str(workspace / "never")),
        *("--split-words", "-1"),
    )
    assert status == 1 and err.count("\n") == 1, err
    assert err == (
        "error: --split-words: -1 is not allowed: give the words per passage (100, as DPR and RAG "
        "cut them), or 0 to keep each document whole.\n"
    )
    assert not (workspace / "never").exists()


LONG_WORDS = 250  # of the tiny corpus: about 1.4 word pieces each, 128 read by the tiny BERT


@pytest.fixture(scope="module")
def mixed_documents(workspace: Path) -> tuple[Path, str]:
    """A JSONL of one long document, two blank records (one without an id) and two short
    documents; and the long document's text."""
    long = " ".join(" ".join(corpus(LONG_WORDS // 12 + 1, seed=5)).split()[:LONG_WORDS])
    rows = [
        {"id": "long", "title": "long", "text": long},
        {"id": "blank", "title": "nothing", "text": " \n "},
        {"title": "no id", "text": ""},
        *({"id": f"short{n}", "text": text} for n, text in enumerate(corpus(2, seed=6))),
    ]
    path = workspace / "mixed.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path, long


def warnings(stderr: str) -> list[str]:
    """The warning lines of a command's stderr (progress bars redraw with carriage returns)."""
    return re.findall(r"^WARNING: [^\r\n]*", stderr, re.M)


BLANK_WARNING = (
    "WARNING: 2 of 5 records have no text (empty or only whitespace) and are left out: ids "
    "blank, 3 (line numbers for records without an id). Give them text, or remove them."
)


def cut_warning(cut: int, count: int, tokens: int, most: int) -> str:
    verb = "is" if cut == 1 else "are"
    return (
        f"WARNING: {cut} of {count} passages {verb} longer than the encoder reads (128 tokens): "
        f"{tokens:,} tokens past the limit were cut off unread (at most {most} from one "
        f"passage), and no question can retrieve them. Cut the documents into shorter passages: "
        f"kb build --split-words N (100 by default; fewer words for text dense in tokens, such "
        f"as tables, code or numbers)."
    )


def test_kb_build_warns_once_of_blank_records_and_of_what_the_encoder_cuts(
    workspace: Path, tmp_path: Path, mixed_documents: tuple[Path, str]
) -> None:
    """Whole documents (``--split-words 0``): one warning per kind, with the counts and the fix;
    the tokens cut are those past the tiny BERT's 128 of (title, text)."""
    from transformers import AutoTokenizer

    documents, long = mixed_documents
    out = tmp_path / "whole"
    result = subprocess.run(
        build_command(workspace, documents, out, "--split-words", 0), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    tokenizer = AutoTokenizer.from_pretrained(workspace / "bert")
    lost = len(tokenizer("long", long, verbose=False)["input_ids"]) - 128
    assert lost > 100
    assert warnings(result.stderr) == [BLANK_WARNING, cut_warning(1, 3, lost, lost)]
    kb = KnowledgeBase.open(out)
    assert [p.text for p in kb.passages.get([0])] == [long]
    assert kb.manifest.source["split_words"] is None


def test_kb_build_cuts_100_word_passages_by_default(
    workspace: Path, tmp_path: Path, mixed_documents: tuple[Path, str]
) -> None:
    """250 words become passages of 100, 100 and 50 words; the tiny BERT still cuts the two of
    100 words (about 140 word pieces each), and passages of 50 fit."""
    documents, long = mixed_documents
    out = tmp_path / "default"
    result = subprocess.run(
        build_command(workspace, documents, out), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    kb = KnowledgeBase.open(out)
    assert kb.manifest.source["split_words"] == 100
    long_passages = [p for p in kb.passages.get(list(range(len(kb)))) if p.title == "long"]
    assert [len(p.text.split()) for p in long_passages] == [100, 100, 50]
    assert " ".join(p.text for p in long_passages) == long
    found = warnings(result.stderr)
    assert found[0] == BLANK_WARNING and len(found) == 2
    assert found[1].startswith("WARNING: 2 of 5 passages are longer than the encoder reads")
    fifty = subprocess.run(
        build_command(workspace, documents, tmp_path / "fifty", "--split-words", 50),
        capture_output=True,
        text=True,
    )
    assert fifty.returncode == 0 and warnings(fifty.stderr) == [BLANK_WARNING], fifty.stderr


def staging_progress(out: Path) -> int:
    progress = out.parent / f".{out.name}.building" / "progress.json"
    try:
        return int(json.loads(progress.read_text())["batches_done"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def build_command(workspace: Path, documents: Path, out: Path, *extra: str) -> list[str]:
    spec = workspace / "spec.toml"
    options = ("--batch-size", 4, "--flush-seconds", 0, *extra)
    return ragloom_command("kb", "build", documents, "--spec", spec, "--out", out, *options)


def test_a_killed_build_keeps_the_old_kb_and_resumes(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "kb"
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    write_documents(small, 20)
    write_documents(large, 4000, seed=8)
    subprocess.run(build_command(workspace, small, out), check=True, capture_output=True)
    rebuild = build_command(workspace, large, out, "--force")
    killed_at = kill_midway(rebuild, lambda: staging_progress(out), 20)
    assert len(KnowledgeBase.open(out)) == 20, "the previous KB still loads"

    resumed = subprocess.run(rebuild, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{killed_at} batches already encoded" in resumed.stderr
    fresh = tmp_path / "fresh"
    subprocess.run(build_command(workspace, large, fresh), check=True, capture_output=True)
    np.testing.assert_allclose(
        np.asarray(KnowledgeBase.open(out).embeddings),
        np.asarray(KnowledgeBase.open(fresh).embeddings),
        atol=1e-6,
    )


KILL_MID_SAVE = """
import os, signal, sys
from pathlib import Path
import numpy as np
from ragloom import atomic
from ragloom.plugins.faiss_index import FaissExactIndex
from ragloom.artifacts import SAVED_INDEX
target = Path(sys.argv[1])
index = FaissExactIndex.create(8, FaissExactIndex.Params())
index.add(np.ones((5, 8), np.float32), np.arange(5))
with atomic.directory(target, SAVED_INDEX) as temporary:
    (temporary / "index.faiss").write_bytes(b"half an index")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_save_killed_midway_leaves_the_previous_index(tmp_path: Path) -> None:
    from ragloom.plugins.faiss_index import FaissExactIndex
    from ragloom.testing import unit_vectors

    target = tmp_path / "index"
    index = FaissExactIndex.create(8, FaissExactIndex.Params())
    index.add(unit_vectors(3, 8), np.arange(3))
    index.save(target)
    result = subprocess.run([sys.executable, "-c", KILL_MID_SAVE, str(target)])
    assert result.returncode == -signal.SIGKILL
    assert FaissExactIndex.load(target).ntotal == 3


def test_a_crash_between_the_renames_is_recovered(tmp_path: Path) -> None:
    from ragloom import atomic
    from ragloom.plugins.faiss_index import FaissExactIndex
    from ragloom.testing import unit_vectors

    target = tmp_path / "index"
    index = FaissExactIndex.create(8, FaissExactIndex.Params())
    index.add(unit_vectors(3, 8), np.arange(3))
    index.save(target)
    target.rename(tmp_path / f".index{atomic._ASIDE}0123")  # moved aside, new one not yet in
    assert FaissExactIndex.load(target).ntotal == 3


def test_validate_estimates_memory_and_checks_the_encoder(
    built: Path, workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.toml"
    model = workspace / "bert"
    spec.write_text(
        SPEC.format(model=model)
        + f'[retriever]\ntype = "dense"\nkb = "{built}"\n[retriever.index]\ntype = "hnsw"\n'
    )
    status, out, err = run(capsys, "validate", str(spec))
    assert status == 0, err
    assert "[retriever] kb" in out and "600 passages of dim 32" in out
    assert "[retriever.index] hnsw: about 0.2 MiB in memory" in out
    other = bert_dir(tmp_path / "other", seed=3)
    spec.write_text(spec.read_text().replace(str(model), str(other)))
    status, _, err = run(capsys, "validate", str(spec))
    assert status == 1 and "was encoded by dpr" in err and "allow_mismatch = true" in err
