"""No input crashes ragloom: each bad input below is refused with one paragraph (rc 1, no
traceback) saying what, where and what to do, or works."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch

from conftest import ragloom_command
from ragloom import Pipeline, RagloomError
from ragloom.errors import ParameterError, QuestionError, SpecError
from ragloom.kb.hf import import_hf
from ragloom.testing.tiny_models import (
    causal_lm_dir,
    rag_checkpoint,
    rag_spec,
    recipe_knowledge_base,
)
from ragloom.torch_files import DamagedFileError, UnsafePickleError, load_tensors

PASSAGES = 2
"""The knowledge base is smaller than n_docs."""


class Setup:
    """A tiny RAG checkpoint, its DPR towers and a knowledge base of two passages."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.checkpoint, _, self.context_dir = rag_checkpoint(root)
        passages, index = recipe_knowledge_base(
            root, self.context_dir, faiss.IndexFlatIP(32), count=PASSAGES
        )
        self.kb = root / "kb"
        self.spec = self.write(
            "spec.toml",
            rag_spec(self.checkpoint, self.context_dir, self.kb, n_docs=5, max_length=6),
        )
        import_hf(passages, self.kb, index, Pipeline.from_spec(self.spec).encoder, "dpr")

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text, encoding="utf-8")
        return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return Setup(tmp_path_factory.mktemp("bad-inputs"))


def ragloom(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ragloom_command(*args), capture_output=True, text=True)


def refused(*args: object) -> str:
    """The error a ragloom command that must fail as a user error prints (rc 1, no traceback)."""
    result = ragloom(*args)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr[result.stderr.index("error: ") :]


# --- decoding with fewer documents than n_docs, and short answers ---------------------------


@pytest.mark.parametrize("marginalizer", ["rag-token", "rag-sequence"])
@pytest.mark.parametrize("beams", [1, 2])
def test_fewer_documents_than_n_docs_generate_from_those_found(
    setup: Setup, marginalizer: str, beams: int
) -> None:
    overrides = {"marginalizer.type": marginalizer, "generation.num_beams": beams}
    pipeline = Pipeline.from_spec(setup.spec, overrides)
    (answer,) = pipeline.generate(["who wrote animal farm"])
    assert len(answer.passages) == PASSAGES
    assert all(passage.id >= 0 for passage in answer.passages)
    assert np.isfinite(answer.score)
    loss = pipeline.loss(["who wrote animal farm"], ["orwell"])
    assert torch.isfinite(loss)


def test_fewer_documents_give_the_answer_of_those_documents(setup: Setup) -> None:
    asked_for_more = Pipeline.from_spec(setup.spec).generate(["paris capital"])
    exactly = Pipeline.from_spec(setup.spec, {"pipeline.n_docs": PASSAGES}).generate(
        ["paris capital"]
    )
    assert asked_for_more[0].token_ids == exactly[0].token_ids
    assert asked_for_more[0].score == pytest.approx(exactly[0].score, abs=1e-5)


@pytest.mark.parametrize("marginalizer", ["rag-token", "rag-sequence"])
@pytest.mark.parametrize("beams", [1, 3])
def test_max_length_without_room_for_an_answer_gives_an_empty_one(
    setup: Setup, marginalizer: str, beams: int
) -> None:
    pipeline = Pipeline.from_spec(
        setup.spec,
        {"marginalizer.type": marginalizer, "generation.num_beams": beams},
    )
    (answer,) = pipeline.generate(["paris capital"], max_length=1)
    assert answer.token_ids == [] and answer.text == ""


def test_ask_with_n_docs_over_the_kb_and_beams_works_from_the_cli(setup: Setup) -> None:
    result = ragloom(
        "ask", setup.spec, "who wrote animal farm", "--show-passages",
        "--set", "generation.num_beams=2", "--set", "marginalizer.type=rag-sequence",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2. " in result.stdout and "3. " not in result.stdout


# --- validate: impossible settings and the memory estimate -----------------------------------


def test_validate_prints_the_memory_a_question_needs(setup: Setup) -> None:
    result = ragloom("validate", setup.spec)
    assert result.returncode == 0, result.stderr
    assert "per question (retrieval" in result.stdout and "decoding" in result.stdout


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("pipeline.n_docs=1e8", "[pipeline] n_docs = 100000000.0: must be a whole number"),
        ("pipeline.n_docs=true", "[pipeline] n_docs = true: must be a whole number"),
        (
            "generator.path=asset:smolm2",
            '[generator] path = "asset:smolm2": no packaged model or corpus "smolm2". Did you',
        ),
    ],
)
def test_validate_refuses_bad_values_naming_the_set_argument(
    setup: Setup, assignment: str, message: str
) -> None:
    error = refused("validate", setup.spec, "--set", assignment)
    assert error.startswith(f"error: {setup.spec}: {message}")
    assert f"(from --set {assignment})." in error
    assert "<dict>" not in error


def test_flash_attention_on_the_cpu_is_one_sentence(setup: Setup) -> None:
    error = refused("validate", setup.spec, "--set", "generator.attention=flash")
    assert error == (
        f'error: {setup.spec}: [generator] attention = "flash" runs only on a CUDA GPU, and '
        f'device = "cpu"; use attention = "sdpa" on the CPU.\n'
    )


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("pipeline.n_docs=1000000000", "of memory available. At most n_docs = "),
        ("generation.max_length=20000", "positions for at most 512 answer tokens"),
    ],
)
def test_validate_refuses_settings_that_cannot_run(
    setup: Setup, assignment: str, message: str
) -> None:
    assert message in refused("validate", setup.spec, "--set", assignment)


def test_validate_refuses_unknown_prompt_placeholders(setup: Setup) -> None:
    model = causal_lm_dir(setup.root / "causal")
    spec = setup.write(
        "causal.toml",
        setup.spec.read_text().replace('type = "bart"', f'type = "causal-lm"\npath = "{model}"'),
    )
    assert ragloom("validate", spec).returncode == 0
    line = refused("validate", spec, "--set", "generator.prompt=Q: {question} {nope}")
    assert "[generator] prompt" in line and "{nope}" in line and "{question}" in line


# --- the Python API ----------------------------------------------------------------------------


def test_retrieve_nothing_returns_an_empty_result(setup: Setup) -> None:
    retrieved = Pipeline.from_spec(setup.spec).retrieve([], k=3)
    assert retrieved.ids.shape == (0, 3) and retrieved.doc_scores.shape == (0, 3)
    assert retrieved.passages == []


@pytest.mark.parametrize("k", [0, -1, True, 2.5, 10**9, 10**30])
def test_retrieve_refuses_k_below_one(setup: Setup, k: object) -> None:
    with pytest.raises(ParameterError, match="k is the number of passages per question"):
        Pipeline.from_spec(setup.spec).retrieve(["paris"], k=k)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("question", "message"),
    [
        ("paris \ud800", "character 7 is the lone surrogate U+D800"),
        (b"paris", "question 1 is bytes b'paris', not a string"),
    ],
)
def test_questions_that_are_not_text_are_refused(
    setup: Setup, question: object, message: str
) -> None:
    pipeline = Pipeline.from_spec(setup.spec)
    for call in (pipeline.retrieve, pipeline.generate):
        with pytest.raises(QuestionError, match=re.escape(message)):
            call([question])  # type: ignore[list-item]


def test_ask_refuses_a_question_that_is_not_utf8(setup: Setup) -> None:
    command = [os.fsencode(arg) for arg in ragloom_command("ask", setup.spec)]
    result = subprocess.run([*command, b"caf\xff"], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "question 1 is not valid text: character 4 is the byte 0xff" in result.stderr


# --- model directories and pickles -------------------------------------------------------------


def test_a_model_directory_without_tokenizer_is_refused(setup: Setup) -> None:
    bare = setup.root / "no-tokenizer"
    bare.mkdir(exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(setup.context_dir / name, bare / name)
    spec = setup.write(
        "bare.toml", setup.spec.read_text().replace(str(setup.context_dir), str(bare))
    )
    line = refused("ask", spec, "paris")
    assert f"{bare} has no tokenizer: expected tokenizer.json" in line
    assert "save_pretrained" in line


def test_the_encoder_fingerprint_covers_the_tokenizer(setup: Setup) -> None:
    changed = setup.root / "other-tokenizer"
    shutil.copytree(setup.context_dir, changed, dirs_exist_ok=True)
    config = json.loads((changed / "tokenizer_config.json").read_text())
    config["do_lower_case"] = not config.get("do_lower_case", True)
    (changed / "tokenizer_config.json").write_text(json.dumps(config))
    spec = setup.write(
        "changed.toml", setup.spec.read_text().replace(str(setup.context_dir), str(changed))
    )
    line = refused("validate", spec)
    assert f"[retriever] kb {setup.kb} was encoded by dpr" in line


def pickled_weights(directory: Path, source: Path) -> Path:
    """A copy of the model at ``source`` whose weights are a pickle holding a Python object."""
    from safetensors.torch import load_file

    shutil.copytree(source, directory, dirs_exist_ok=True)
    state: dict[str, object] = dict(load_file(directory / "model.safetensors"))
    state["extra"] = argparse.Namespace(note="not a tensor")
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    return directory / "pytorch_model.bin"


def test_a_pickle_needing_more_than_tensors_is_refused_in_one_paragraph(setup: Setup) -> None:
    weights = pickled_weights(setup.root / "pickled", setup.context_dir)
    spec = setup.write(
        "pickled.toml", setup.spec.read_text().replace(str(setup.context_dir), str(weights.parent))
    )
    line = refused("ask", spec, "paris")
    assert f"{weights} is a pickle that holds more than tensors" in line
    assert "argparse.Namespace" in line and "ragloom refuses it" in line
    assert "save_pretrained(directory, safe_serialization=True)" in line
    assert "weights_only set to False" not in line


def test_a_rag_checkpoint_pickle_is_refused(setup: Setup) -> None:
    weights = pickled_weights(setup.root / "pickled-rag", setup.checkpoint)
    with pytest.raises(UnsafePickleError, match="ragloom refuses it"):
        _ = Pipeline.from_spec(setup.spec, {"pipeline.checkpoint": str(weights.parent)}).generator


def test_a_truncated_torch_file_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    torch.save({"weights": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DamagedFileError, match=r"is truncated or corrupt .* Start over\."):
        load_tensors(path, "Start over.")


# --- command-line arguments ------------------------------------------------------------------


@pytest.fixture(scope="module")
def qa(setup: Setup) -> Path:
    return setup.write("qa.jsonl", json.dumps({"question": "paris", "answers": ["paris"]}) + "\n")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-k", "abc"], '-k: "abc" is not a list of cut-offs'),
        (["-k", "1,0"], '"0" is not a whole number from 1 to 10,000'),
        (["-k", "1," + "9" * 31], "is not a whole number from 1 to 10,000"),
        (["--limit", "0"], "--limit: 0 is not allowed"),
        (["--sweep", "pipeline.n_docs=2,x"], "(from --sweep pipeline.n_docs=x)"),
    ],
)
def test_eval_refuses_bad_options(setup: Setup, qa: Path, options: list[str], message: str) -> None:
    assert message in refused("eval", setup.spec, "--data", qa, "--out", setup.root / "e", *options)


def test_index_commands_refuse_bad_options(setup: Setup) -> None:
    pickled, wrong_dim = setup.root / "pickled.npy", setup.root / "wrong.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(wrong_dim, np.zeros((3, 5), np.float32))
    compare = (
        "index",
        "compare",
        setup.kb,
        "--types",
        "faiss-exact",
        "--plot",
        setup.root / "p.png",
        "-k",
        "1",
    )
    assert "-k: 0 is not allowed" in refused(*compare, "-k", "0")
    assert f"more than the {PASSAGES} vectors" in refused(*compare, "-k", str(PASSAGES + 1))
    assert "cannot be read as a numpy .npy array" in refused(*compare, "--queries", pickled)
    empty, text = setup.root / "empty.npy", setup.write("text.npy", "0.1 0.2\n")
    empty.write_bytes(b"")
    assert "is empty (0 bytes), not a .npy array" in refused(*compare, "--queries", empty)
    line = refused(*compare, "--queries", text)
    assert "is not a .npy array file" in line and "unsafely" not in line
    assert "more than the 10,000 passages" in refused(*compare, "-k", str(10**30))
    assert "shape [3, 5]" in refused(*compare, "--queries", wrong_dim)
    build = ("index", "build", setup.kb, "--type", "faiss-exact")
    assert "--shards: 0 is not allowed" in refused(*build, "--shards", "0")
    assert "--shards: -2 is not allowed" in refused(*build, "--shards", "-2")
    line = refused(*build, "--shards", str(PASSAGES + 1))
    assert f"must be between 1 and {PASSAGES}" in line
    line = refused(*build, "--param", "noequals")
    assert line.startswith('error: --param: "noequals" is not an override: write KEY=VALUE')
    line = refused("index", "build", setup.kb, "--type", "faiss-hnsw", "--param", "M=x")
    assert line.startswith("error: --type faiss-hnsw: [retriever.index] M")
    assert "(from --param M=x)" in line


@pytest.mark.parametrize("damage", ["truncate", "progress"])
def test_a_damaged_training_state_says_how_to_go_on(tmp_path: Path, damage: str) -> None:
    from ragloom.training.state import Progress, load_state, save_state

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer)
    save_state(tmp_path, {"model": model}, optimizer, scheduler, Progress("run-1", step=3))
    state = tmp_path / "state"
    if damage == "truncate":
        (state / "state.pt").write_bytes((state / "state.pt").read_bytes()[:200])
    else:
        (state / "progress.json").write_text('{"run": "run-1", "step": ')
    with pytest.raises(RagloomError) as excinfo:
        load_state(tmp_path, {"model": model}, optimizer, scheduler, "run-1")
    message = str(excinfo.value)
    assert "The run's training state is damaged" in message
    assert f"Delete {state} and rerun the same command" in message


def test_eval_refuses_a_huge_k_before_writing(setup: Setup, qa: Path) -> None:
    out = setup.root / "eval-huge-k"
    line = refused(
        "eval", setup.spec, "--data", qa, "--out", out, "--retrieval-only", "-k", "1" + "0" * 30
    )
    assert "is not a whole number from 1 to 10,000" in line
    assert not out.exists()


# --- wrong types and values through the Python API -------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({1: 2}, "the key 1 is int: a spec's keys are strings"),
        ({"pipeline": {3: 1}}, "the key 3 in [pipeline] is int"),
        (None, "spec: must be a path to a .toml file (str or Path), a mapping"),
        (42, "not int 42"),
        (b"schema = 1", "not bytes b'schema = 1'. Parse TOML text first"),
    ],
)
def test_from_spec_refuses_what_is_not_a_spec(spec: object, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        Pipeline.from_spec(spec)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({5: 1}, "overrides: the key 5 is int, not a str"),
        ([("pipeline.n_docs", 1)], "overrides must be a mapping of dotted key paths to values"),
        ("pipeline.n_docs=1", "not str 'pipeline.n_docs=1'"),
    ],
)
def test_from_spec_refuses_overrides_that_are_not_a_mapping(
    setup: Setup, overrides: object, message: str
) -> None:
    for spec in (setup.spec, Pipeline.from_spec(setup.spec).spec):
        with pytest.raises(ParameterError, match=re.escape(message)):
            Pipeline.from_spec(spec, overrides=overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize("questions", [None, 5, b"paris"])
def test_questions_that_are_not_a_list_are_refused(setup: Setup, questions: object) -> None:
    pipeline = Pipeline.from_spec(setup.spec)
    for call in (pipeline.retrieve, pipeline.generate):
        with pytest.raises(QuestionError, match="questions must be a list of strings, not "):
            call(questions)  # type: ignore[arg-type]


def test_generate_refuses_a_huge_max_length(setup: Setup) -> None:
    with pytest.raises(SpecError, match=r"\[generation\] max_length = 1000000000000: .*32768"):
        Pipeline.from_spec(setup.spec).generate(["paris"], max_length=10**12)
    with pytest.raises(SpecError, match=r"\[generation\] max_length = 40000"):
        Pipeline.from_spec(setup.spec, {"generation.max_length": 40_000})


@pytest.mark.parametrize(
    ("questions", "targets", "error", "message"),
    [
        (["paris"], [], ParameterError, "one target per question: got 1 questions and 0"),
        ([], [], ParameterError, "loss needs at least one question and its target"),
        (["paris"], [None], QuestionError, "loss target 1 is NoneType None, not a string"),
        (["paris"], "paris", QuestionError, "targets must be a list of strings"),
        (None, ["paris"], QuestionError, "questions must be a list of strings"),
    ],
)
def test_loss_refuses_bad_targets(
    setup: Setup, questions: object, targets: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        Pipeline.from_spec(setup.spec).loss(questions, targets)  # type: ignore[arg-type]


def test_share_refuses_what_is_not_a_pipeline(setup: Setup) -> None:
    with pytest.raises(ParameterError, match="other must be a Pipeline, not NoneType"):
        Pipeline.from_spec(setup.spec).share(None, "encoder")  # type: ignore[arg-type]


# --- devices -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["generator.device", "encoder.device", "train.device"])
def test_validate_refuses_a_device_that_is_not_one(setup: Setup, key: str) -> None:
    line = refused("validate", setup.spec, "--set", f"{key}=tpu")
    assert 'device = "tpu": is not a device: use "cpu", "cuda", "cuda:N"' in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    ("overrides", "call", "key"),
    [
        ({"generator.device": "cuda"}, "generate", "[generator] device"),
        ({"encoder.device": "cuda:7"}, "retrieve", "[encoder] device"),
    ],
)
def test_a_cuda_device_on_a_machine_without_one_is_refused(
    setup: Setup, overrides: dict[str, str], call: str, key: str
) -> None:
    pipeline = Pipeline.from_spec(setup.spec, overrides)
    with pytest.raises(ParameterError) as excinfo:
        getattr(pipeline, call)(["paris"])
    message = str(excinfo.value)
    assert message.startswith(f'{key} = "{overrides[next(iter(overrides))]}", but this machine')
    assert 'Use device = "cpu", or "auto"' in message


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from ragloom.spec import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto", "[train] device") == "cuda"
    assert resolve_device("cuda:1", "[train] device") == "cuda:1"
    with pytest.raises(ParameterError, match=r"has 2 CUDA GPUs \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2", "[train] device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", "[train] device") == "cpu"
    with pytest.raises(ParameterError, match=r"\[train\] device = \"cuda\", but this machine"):
        resolve_device("cuda", "[train] device")


# --- spec files that cannot be read ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("schema = 1\nx = " + "[" * 100_000 + "]" * 100_000 + "\n", "more than 32 levels deep"),
        ("schema = 1\n[" + ".".join(["a"] * 50_000) + "]\n", "more than 32 levels deep"),
        (b"schema = 1\n# caf\xe9\n", "is not UTF-8 text: the byte 0xe9 at byte 16 (line 2)"),
    ],
)
def test_validate_refuses_spec_files_it_cannot_read(
    tmp_path: Path, content: str | bytes, message: str
) -> None:
    path = tmp_path / "spec.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert message in refused("validate", path)


def test_validate_refuses_a_directory_as_spec(tmp_path: Path) -> None:
    line = refused("validate", tmp_path)
    expected = "is a directory; a spec is a .toml file. Give the path of the file."
    assert line == f"error: {tmp_path}: {expected}\n"


def test_a_nul_in_a_path_is_refused(setup: Setup) -> None:
    with pytest.raises(SpecError, match=r'\[retriever\] kb = "\\u0000kb": holds a NUL'):
        Pipeline.from_spec(setup.spec, {"retriever.kb": "\x00kb"})
