"""The fault suite behind docs/reliability.md: what a careless user, a crash, a full disk or a
second writer can do to ragloom's artifacts, through the real CLI.

Every case ends in rc 0 or rc 1 with one paragraph (never a traceback), and nothing the user
owns is lost: user directories, files and inputs are refused as outputs, symbolic links are not
followed, two writers of one artifact take turns, damaged files are found before they are read,
and what a killed or starved writer left is reclaimed by the next run.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_ENCODER_SPEC, encoder_workspace, ragloom_command, write_documents
from ragloom import atomic, locks
from ragloom.kb import KnowledgeBase
from ragloom.testing.tiny_models import bert_dir

LEFTOVERS = (".tmp-", ".replaced-", ".building", ".incoming")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = encoder_workspace(tmp_path_factory.mktemp("faults"))
    write_documents(root / "docs.jsonl", 60)
    write_documents(root / "other.jsonl", 40, seed=9)
    return root


def ragloom(*args: object, cwd: Path | None = None, **options: object) -> tuple[int, str]:
    """Run the CLI in a subprocess; its status and stderr, which never holds a traceback."""
    result = subprocess.run(
        ragloom_command(*args), capture_output=True, text=True, cwd=cwd, **options
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stderr


def build_args(workspace: Path, out: Path, documents: str = "docs.jsonl") -> list[object]:
    return ["kb", "build", workspace / documents, "--spec", workspace / "spec.toml", "--out", out]


@pytest.fixture(scope="module")
def kb(workspace: Path) -> Path:
    out = workspace / "kb"
    status, err = ragloom(*build_args(workspace, out))
    assert status == 0, err
    return out


def leftovers(directory: Path) -> list[str]:
    names = [p.name for p in directory.iterdir()] if directory.is_dir() else []
    return sorted(name for name in names if any(mark in name for mark in LEFTOVERS))


def write_words(path: Path, count: int) -> Path:
    """Documents of one word each: their embeddings take more room than their text."""
    path.write_text("".join(json.dumps({"text": f"w{n}"}) + "\n" for n in range(count)))
    return path


def user_directory(path: Path) -> Path:
    path.mkdir()
    (path / "thesis.txt").write_text("three years of work")
    return path


# --- outputs that are not ragloom's -------------------------------------------------------


def test_out_over_a_user_directory_is_refused(workspace: Path, kb: Path, tmp_path: Path) -> None:
    user = user_directory(tmp_path / "p")
    exported = tmp_path / "exported"
    assert ragloom("kb", "export-hf", kb, "--out", exported)[0] == 0
    for command in (
        build_args(workspace, user),
        ["kb", "export-hf", kb, "--out", user],
        ["kb", "import-hf", exported / "passages", "--out", user],
    ):
        status, err = ragloom(*command)
        assert status == 1
        assert f"{user} exists and is not a ragloom" in err and "Choose a new or empty" in err
        assert (user / "thesis.txt").read_text() == "three years of work"
    assert sorted(p.name for p in user.iterdir()) == ["thesis.txt"]
    quoted = documented_message("error: /home/me/p exists").replace("/home/me/p", str(user))
    assert quoted in " ".join(err.split()), "docs/reliability.md quotes the message as it is"


def documented_message(start: str) -> str:
    """The message docs/reliability.md quotes that begins with ``start``, on one line."""
    text = (Path(__file__).parents[1] / "docs" / "reliability.md").read_text()
    block = text[text.index(start) :].split("```")[0]
    return " ".join(block.split())


def test_out_that_is_an_input_a_file_or_a_link_is_refused(workspace: Path, tmp_path: Path) -> None:
    documents = tmp_path / "docs.jsonl"
    shutil.copy(workspace / "docs.jsonl", documents)
    before = documents.read_bytes()
    spec = workspace / "spec.toml"
    status, err = ragloom("kb", "build", documents, "--spec", spec, "--out", documents)
    assert status == 1 and "is the input" in err
    status, err = ragloom("kb", "build", "docs.jsonl", "--spec", spec, "--out", ".", cwd=tmp_path)
    assert status == 1 and "contains the input docs.jsonl" in err
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    status, err = ragloom(*build_args(workspace, notes))
    assert status == 1 and "is a file, not a ragloom knowledge base" in err
    target = user_directory(tmp_path / "elsewhere")
    (tmp_path / "link").symlink_to(target)
    status, err = ragloom(*build_args(workspace, tmp_path / "link"))
    assert status == 1 and "is a symbolic link" in err
    assert documents.read_bytes() == before and notes.read_text() == "mine"
    assert sorted(p.name for p in target.iterdir()) == ["thesis.txt"]
    assert leftovers(tmp_path) == []


def test_a_plot_never_overwrites_a_file_that_is_not_a_png(kb: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    args = ("index", "compare", kb, "--types", "faiss-exact", "--num-queries", 5)
    status, err = ragloom(*args, "--plot", notes)
    assert status == 1 and "is not a PNG plot, so ragloom will not overwrite it" in err
    assert notes.read_text() == "mine"
    status, err = ragloom(*args, "--plot", kb / "manifest.json")
    assert status == 1 and "lies inside the knowledge base" in err
    plot = tmp_path / "compare.png"
    assert [ragloom(*args, "--plot", plot)[0] for _ in range(2)] == [0, 0], "a PNG is replaced"


def test_indexes_behind_a_symbolic_link_are_not_written(kb: Path, tmp_path: Path) -> None:
    copy = tmp_path / "kb"
    shutil.copytree(kb, copy)
    outside = tmp_path / "outside"
    outside.mkdir()
    user_directory(outside / "faiss-exact")
    shutil.rmtree(copy / "indexes", ignore_errors=True)
    (copy / "indexes").symlink_to(outside)
    status, err = ragloom("index", "build", copy, "--type", "faiss-exact")
    assert status == 1 and f"{copy / 'indexes'} is a symbolic link" in err
    assert sorted(p.name for p in (outside / "faiss-exact").iterdir()) == ["thesis.txt"]


def test_rebuilding_from_another_corpus_asks_for_force(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "kb"
    assert ragloom(*build_args(workspace, out))[0] == 0
    status, err = ragloom(*build_args(workspace, out, "other.jsonl"))
    assert status == 1 and "knowledge base of other passages" in err and "--force" in err
    assert len(KnowledgeBase.open(out)) == 60
    assert leftovers(tmp_path) == [], "the refused build's staging is removed"
    assert ragloom(*build_args(workspace, out, "other.jsonl"), "--force")[0] == 0
    assert len(KnowledgeBase.open(out)) == 40
    assert ragloom(*build_args(workspace, out, "other.jsonl"))[0] == 0, "same passages: no force"


def test_rebuilding_the_same_passages_keeps_the_indexes(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "kb"
    assert ragloom(*build_args(workspace, out))[0] == 0
    assert ragloom("index", "build", out, "--type", "hnsw")[0] == 0
    assert ragloom(*build_args(workspace, out))[0] == 0, "the same passages, the same encoder"
    assert [path.name for path, _ in KnowledgeBase.open(out).index_manifests()] == [
        "hnsw-M32-ef_construction200-seed100"
    ]
    assert ragloom(*build_args(workspace, out, "other.jsonl"), "--force")[0] == 0
    assert KnowledgeBase.open(out).index_manifests() == [], "other passages: indexes dropped"


def test_re_encoding_the_same_passages_asks_for_force(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "kb"
    assert ragloom(*build_args(workspace, out))[0] == 0
    other = tmp_path / "spec.toml"
    other.write_text(TINY_ENCODER_SPEC.format(model=bert_dir(tmp_path / "other", seed=5)))
    again = ["kb", "build", workspace / "docs.jsonl", "--spec", other, "--out", out]
    status, err = ragloom(*again)
    assert status == 1 and "a knowledge base of these passages encoded by dpr" in err
    assert "--force" in err and leftovers(tmp_path) == []
    assert ragloom(*again, "--force")[0] == 0


def test_importing_over_a_knowledge_base_of_other_contents_asks_for_force(
    kb: Path, tmp_path: Path
) -> None:
    exported, out = tmp_path / "exported", tmp_path / "kb"
    shutil.copytree(kb, out)
    assert ragloom("kb", "export-hf", kb, "--out", exported)[0] == 0
    status, err = ragloom("kb", "import-hf", exported / "passages", "--out", out)
    assert status == 1 and "is a knowledge base of other contents" in err and "--force" in err
    assert KnowledgeBase.open(out).manifest.encoder.type == "dpr", "left as it was"
    assert ragloom("kb", "import-hf", exported / "passages", "--out", out, "--force")[0] == 0
    assert ragloom("kb", "import-hf", exported / "passages", "--out", out)[0] == 0, "the same"


def test_a_relative_knowledge_base_path_works(kb: Path, tmp_path: Path) -> None:
    shutil.copytree(kb, tmp_path / "kb")
    assert ragloom("index", "build", "kb", "--type", "faiss-exact", cwd=tmp_path)[0] == 0
    assert ragloom("index", "build", "./kb/", "--type", "hnsw", cwd=tmp_path)[0] == 0


def test_eval_writes_only_into_its_own_run_directory(kb: Path, tmp_path: Path) -> None:
    spec = tmp_path / "retrieval.toml"
    spec.write_text(
        (kb.parent / "spec.toml").read_text()
        + f'[retriever]\ntype = "dense"\nkb = "{kb}"\n[retriever.index]\ntype = "faiss-exact"\n'
    )
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "what?", "answers": ["x"]}) + "\n")
    user = user_directory(tmp_path / "mine")
    args = ("eval", spec, "--data", data, "--retrieval-only", "--out")
    status, err = ragloom(*args, user)
    assert status == 1 and "is not a ragloom evaluation run" in err
    assert sorted(p.name for p in user.iterdir()) == ["thesis.txt"]
    assert ragloom(*args, tmp_path / "run")[0] == 0
    assert ragloom(*args, tmp_path / "run")[0] == 0, "an evaluation run is rerun in place"
    status, err = ragloom("eval", spec, "--data", data, "--out", tmp_path / "no-generator")
    assert status == 1 and "needs a generator" in err
    assert not (tmp_path / "no-generator").exists(), "refused before anything is written"


def test_an_interrupted_build_says_so_and_resumes(workspace: Path, tmp_path: Path) -> None:
    documents = tmp_path / "many.jsonl"
    write_documents(documents, 600)
    out = tmp_path / "kb"
    command = ragloom_command(
        "kb", "build", documents, "--spec", workspace / "spec.toml", "--out", out,
        "--batch-size", 8, "--flush-seconds", 0,
    )  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    progress = out.parent / f".{out.name}.building" / "progress.json"
    while not progress.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err and "interrupted" in err
    assert ragloom(*command[3:])[0] == 0
    assert len(KnowledgeBase.open(out)) == 600


# --- two writers ----------------------------------------------------------------------------


def test_two_builds_at_once_take_turns(workspace: Path, tmp_path: Path) -> None:
    """The first build is stopped (SIGSTOP) while it holds the lock, so the second one surely
    meets it: it waits, naming the holder, and runs once the first has finished."""
    out = tmp_path / "kb"
    command = ragloom_command(*build_args(workspace, out), "--batch-size", 4)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = locks.lock_file(out)
    deadline = time.monotonic() + 120
    while f'"pid": {first.pid}' not in (lock.read_text() if lock.exists() else ""):
        assert first.poll() is None and time.monotonic() < deadline, "the first build never locked"
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGSTOP)
    second = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert second.stderr is not None
    waited = ""
    while "waiting for" not in waited:
        line = second.stderr.readline()
        assert line, f"the second build ended without waiting: {waited}"
        waited += line
    os.kill(first.pid, signal.SIGCONT)
    errors = [first.communicate(timeout=300)[1], waited + second.communicate(timeout=300)[1]]
    assert [first.returncode, second.returncode] == [0, 0], errors
    assert "Traceback" not in "".join(errors)
    pattern = (
        r"WARNING: waiting for \S+: it is being written by another process \(pid \d+ on \S+, "
        r"`ragloom kb build [^`]+`, since [\d-]+ [\d:]+\)"
    )
    assert re.search(pattern, " ".join(waited.split())), waited
    assert f"(pid {first.pid} on" in waited
    assert re.fullmatch(pattern, documented_message("WARNING: waiting for")), "as documented"
    reopened = KnowledgeBase.open(out)
    assert len(reopened) == 60 and np.isfinite(np.asarray(reopened.embeddings)).all()
    assert leftovers(tmp_path) == []


def test_no_wait_fails_at_once_naming_the_holder(workspace: Path, tmp_path: Path) -> None:
    out = tmp_path / "kb"
    with locks.exclusive(out):
        started = time.monotonic()
        status, err = ragloom(*build_args(workspace, out), "--no-wait")
    assert status == 1 and f"pid {os.getpid()}" in err and "without --no-wait" in err
    assert time.monotonic() - started < 60
    assert not out.exists()


def test_eight_threads_on_a_cold_pipeline_build_everything_once(
    kb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragloom import Pipeline
    from ragloom.plugins.hf_encoder import HFEncoder

    copy = tmp_path / "kb"
    shutil.copytree(kb, copy, ignore=shutil.ignore_patterns("indexes"))
    spec = (kb.parent / "spec.toml").read_text()
    spec += f'[retriever]\ntype = "dense"\nkb = "{copy}"\n[retriever.index]\ntype = "hnsw"\n'
    calls = {"encoder": 0, "index": 0}
    encoder_from_spec, build_index = HFEncoder.from_spec, KnowledgeBase.build_index

    def counted_encoder(cls: type, *args: object, **kwargs: object) -> object:
        calls["encoder"] += 1
        return encoder_from_spec(*args, **kwargs)

    def counted_index(self: KnowledgeBase, *args: object, **kwargs: object) -> object:
        calls["index"] += 1
        time.sleep(0.2)  # widen the window in which the other threads arrive
        return build_index(self, *args, **kwargs)

    monkeypatch.setattr(HFEncoder, "from_spec", classmethod(counted_encoder))
    monkeypatch.setattr(KnowledgeBase, "build_index", counted_index)
    (tmp_path / "spec.toml").write_text(spec)
    pipeline = Pipeline.from_spec(tmp_path / "spec.toml")
    barrier, results, failures = threading.Barrier(8), [], []

    def first_call(number: int) -> None:
        barrier.wait()
        try:
            results.append(pipeline.retrieve([f"question {number % 2}"], k=3).ids.tolist())
        except Exception as error:  # collected, so that every thread's failure is reported
            failures.append(error)

    threads = [threading.Thread(target=first_call, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == [] and len(results) == 8
    assert calls == {"encoder": 1, "index": 1}
    expected = [pipeline.retrieve([f"question {n}"], k=3).ids.tolist() for n in (0, 1)]
    assert sorted(results) == sorted(expected * 4), "the same question, the same passages"


# --- damaged files --------------------------------------------------------------------------


def flip_byte(path: Path, seed: int = 0) -> None:
    data = bytearray(path.read_bytes())
    position = random.Random(seed).randrange(len(data) // 4, len(data))
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["passages.arrow", "embeddings.npy"])
def test_a_flipped_byte_in_the_kb_is_found_by_verify(kb: Path, tmp_path: Path, name: str) -> None:
    copy = tmp_path / "kb"
    shutil.copytree(kb, copy)
    assert ragloom("kb", "info", copy, "--verify")[0] == 0
    flip_byte(copy / name)
    status, err = ragloom("kb", "info", copy, "--verify")
    assert status == 1 and f"{copy / name} has checksum" in err and "ragloom kb build" in err


LOAD_INDEX = """
import sys
from pathlib import Path
from ragloom.commands.index import declared_index
from ragloom.errors import RagloomError
from ragloom.kb import KnowledgeBase
kb = KnowledgeBase.open(Path(sys.argv[1]))
try:
    kb.load_index(declared_index(sys.argv[2], []), build=False)
except RagloomError as error:
    print(error, file=sys.stderr)
    sys.exit(1)
"""


@pytest.mark.parametrize(
    ("index_type", "name"),
    [("hnsw", "index.bin"), ("faiss-hnsw", "index.faiss"), ("faiss-exact", "ids.npy")],
)
def test_a_flipped_byte_in_an_index_is_found_before_it_is_loaded(
    kb: Path, tmp_path: Path, index_type: str, name: str
) -> None:
    copy = tmp_path / "kb"
    shutil.copytree(kb, copy)
    assert ragloom("index", "build", copy, "--type", index_type)[0] == 0
    (built,) = (copy / "indexes").glob(f"{index_type}*/index/{name}")
    flip_byte(built, seed=3)
    load = subprocess.run(
        [*ragloom_command()[:1], "-c", LOAD_INDEX, str(copy), index_type],
        capture_output=True,
        text=True,
    )
    assert load.returncode == 1, f"a crash is rc {load.returncode}: {load.stderr}"
    assert f"{built} has checksum" in load.stderr and "ragloom index build" in load.stderr


def test_a_hand_edited_manifest_is_refused(kb: Path, tmp_path: Path) -> None:
    copy = tmp_path / "kb"
    shutil.copytree(kb, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "dim": str(manifest["dim"])}))
    status, err = ragloom("kb", "info", copy)
    assert status == 1 and "not a valid ragloom knowledge base manifest (dim:" in err


def test_nan_vectors_are_refused_at_build(workspace: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModel

    model = tmp_path / "nan-bert"
    shutil.copytree(workspace / "bert", model)
    broken = AutoModel.from_pretrained(model)
    with torch.no_grad():
        broken.embeddings.word_embeddings.weight.fill_(float("nan"))
    broken.save_pretrained(model)
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY_ENCODER_SPEC.format(model=model))
    out = tmp_path / "kb"
    status, err = ragloom("kb", "build", workspace / "docs.jsonl", "--spec", spec, "--out", out)
    assert status == 1 and "NaN or infinite vectors for 60 passages" in err
    assert not out.exists()


# --- full disks and size limits -----------------------------------------------------------


def limit_file_size(size: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


@pytest.mark.parametrize("limit", [2_000, 40_000], ids=["passages", "embeddings"])
def test_a_file_size_limit_is_a_clear_error_and_the_next_run_finishes(
    workspace: Path, tmp_path: Path, limit: int
) -> None:
    """600 one-word passages take about 20 kB, their embeddings 77 kB: the limit stops the
    passages' write or the reservation of the embeddings."""
    out = tmp_path / "kb"
    words = write_words(tmp_path / "words.jsonl", 600)
    args = ["kb", "build", words, "--spec", workspace / "spec.toml", "--out", out]
    status, err = ragloom(*args, preexec_fn=limit_file_size(limit))
    assert status == 1 and "size limit" in err, err
    assert not out.exists()
    assert ragloom(*args)[0] == 0
    assert len(KnowledgeBase.open(out)) == 600 and leftovers(tmp_path) == []


@pytest.mark.parametrize("index_type", ["hnsw", "faiss-exact"])
def test_an_index_cut_by_a_size_limit_is_never_sealed(
    kb: Path, tmp_path: Path, index_type: str
) -> None:
    """hnswlib reports no failed write: the saved size is checked against the index's own."""
    copy = tmp_path / "kb"
    shutil.copytree(kb, copy, ignore=shutil.ignore_patterns("indexes"))
    args = ("index", "build", copy, "--type", index_type)
    status, err = ragloom(*args, preexec_fn=limit_file_size(2_000))
    assert status == 1 and "size limit" in err, err
    assert KnowledgeBase.open(copy).index_manifests() == []
    assert ragloom(*args)[0] == 0 and ragloom("kb", "info", copy, "--verify")[0] == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)])
    if made.returncode != 0:
        pytest.skip("this machine cannot mount a small tmpfs (needs root or CAP_SYS_ADMIN)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize(
    ("write", "message"),
    [(write_documents, "No space left on device"), (write_words, "but it has")],
    ids=["passages", "embeddings"],
)
def test_a_full_disk_is_a_clear_error_and_the_next_run_finishes(
    workspace: Path, small_disk: Path, write: Callable[[Path, int], object], message: str
) -> None:
    """On a 256 kB disk, 3,000 documents' passages do not fit; 3,000 one-word passages do, but
    not their 384 kB of embeddings, which are refused before encoding starts."""
    documents = small_disk.parent / "documents.jsonl"
    write(documents, 3000)
    out = small_disk / "kb"
    args = ["kb", "build", documents, "--spec", workspace / "spec.toml", "--out", out]
    status, err = ragloom(*args)
    assert status == 1 and message in err, err
    assert not out.exists()
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    assert ragloom(*args)[0] == 0
    assert len(KnowledgeBase.open(out)) == 3000 and leftovers(small_disk) == []


# --- killed writers -------------------------------------------------------------------------


def kill_after(command: list[str], seconds: float) -> None:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_writers_killed_at_random_points_leave_nothing_behind(
    workspace: Path, kb: Path, tmp_path: Path
) -> None:
    """Each writer is killed at random moments of its run; then the same command, run to the
    end, gives a whole artifact and leaves no staging, temporary or aside directory."""
    documents = tmp_path / "many.jsonl"
    write_documents(documents, 600)
    out = tmp_path / "kb"
    writers = {
        "kb build": ragloom_command(
            "kb", "build", documents, "--spec", workspace / "spec.toml", "--out", out,
            "--batch-size", 8, "--flush-seconds", 0,
        ),
        "index build": ragloom_command("index", "build", out, "--type", "hnsw"),
        "export-hf": ragloom_command("kb", "export-hf", out, "--out", tmp_path / "export"),
    }  # fmt: skip
    moments = random.Random(11)
    for name, command in writers.items():
        for _ in range(3):
            kill_after(command, moments.uniform(1.0, 6.0))
        finished = subprocess.run(command, capture_output=True, text=True)
        assert finished.returncode == 0, f"{name}: {finished.stderr}"
        assert leftovers(tmp_path) == [] and leftovers(out / "indexes") == [], name
    assert len(KnowledgeBase.open(out)) == 600
    status, err = ragloom("kb", "info", out, "--verify")
    assert status == 0, err


def test_recovery_restores_the_newest_aside(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    for edition in ("old", "new"):
        aside = target.with_name(f".artifact{atomic._ASIDE}{time.time_ns():020d}")
        aside.mkdir()
        (aside / "edition").write_text(edition)
        time.sleep(0.001)
    atomic.recover_directory(target)
    assert (target / "edition").read_text() == "new"


# --- permissions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_artifacts_respect_the_umask(
    workspace: Path, tmp_path: Path, umask: int, file_mode: int, dir_mode: int
) -> None:
    out = tmp_path / "kb"
    status, err = ragloom(*build_args(workspace, out), preexec_fn=lambda: os.umask(umask))
    assert status == 0, err
    assert (
        ragloom("index", "build", out, "--type", "faiss-exact", preexec_fn=lambda: os.umask(umask))[
            0
        ]
        == 0
    )
    for path in [out, *out.rglob("*")]:
        expected = dir_mode if path.is_dir() else file_mode
        assert path.stat().st_mode & 0o777 == expected, path
