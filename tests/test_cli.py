"""The command line: exit codes, one-paragraph errors, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ragloom.cli import main

EXAMPLE = Path(__file__).parent.parent / "examples" / "rag_token.toml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_validate_the_bundled_example(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "validate", str(EXAMPLE))
    assert status == 0, err
    assert "rag_token.toml: valid" in out


def test_validate_reports_every_problem_and_exits_1(
    capsys: pytest.CaptureFixture[str], write_spec: Callable[..., Path]
) -> None:
    path = write_spec('schema = 1\n[pipeline]\nn_doc = 2\n[retriever]\ntype = "dense_"\n')
    status, out, err = run(capsys, "validate", str(path))
    assert status == 1 and out == ""
    assert err.startswith(f"error: {path}: 2 problems")
    assert "Traceback" not in err


def test_validate_with_set(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "validate", str(EXAMPLE), "--set", "pipeline.n_docs=9")
    assert status == 0 and "n_docs 9" in out
    status, _, err = run(capsys, "validate", str(EXAMPLE), "--set", "pipeline.n_docs=nine")
    assert status == 1 and '[pipeline] n_docs = "nine"' in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("schema = 1\n[pipeline\n", "is not valid TOML"),
        (
            'schema = 1\n[retriever]\ntype = "dense"\n[retriever.index]\ntype = "faiss_exact"\n',
            "retriever",
        ),
    ],
)
def test_bad_specs_exit_1_with_a_message(
    capsys: pytest.CaptureFixture[str], write_spec: Callable[..., Path], text: str, expected: str
) -> None:
    status, _, err = run(capsys, "validate", str(write_spec(text)))
    assert status == 1 and expected in err and "Traceback" not in err


def test_missing_spec_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run(capsys, "validate", str(tmp_path / "absent.toml"))
    assert status == 1 and "absent.toml: no such file" in err


def test_plugins_lists_builtins_with_their_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "plugins")
    assert status == 0
    assert out.splitlines()[0].split() == ["KIND", "NAME", "DISTRIBUTION", "VERSION", "DESCRIPTION"]
    assert any(line.split()[:3] == ["index", "faiss-exact", "ragloom"] for line in out.splitlines())
    status, out, _ = run(capsys, "plugins", "--json")
    rows = {(row["kind"], row["name"]): row for row in json.loads(out)}
    assert rows[("index", "faiss-exact")]["distribution"] == "ragloom"


def test_version_and_console_script() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ragloom.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith("ragloom ")


def test_ask_names_its_score_and_loads_models_quietly_unless_verbose(
    tiny_rag: Callable[..., Path],
) -> None:
    """The score is the answer's log-probability under the marginalizer; transformers' progress
    bars ("Loading weights") show only with --verbose, which every command takes."""
    import os

    from conftest import ragloom_command
    from ragloom import Pipeline

    spec = tiny_rag("ask")
    (answer,) = Pipeline.from_spec(spec).generate(["paris capital"])
    environment = {name: value for name, value in os.environ.items() if "PROGRESS_BARS" not in name}

    def ask(*argv: object) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ragloom_command(*argv), capture_output=True, text=True, env=environment
        )
        assert result.returncode == 0, result.stderr
        return result

    quiet = ask("ask", spec, "paris capital")
    label = f"[log-probability {answer.score:.2f} under rag-token]"
    assert quiet.stdout == f"{answer.text or '(empty answer)'}    {label}\n"
    assert "Loading weights" not in quiet.stderr and "%|" not in quiet.stderr
    assert "Loading weights" in ask("ask", spec, "paris capital", "--verbose").stderr
    assert "Loading weights" in ask("--verbose", "ask", spec, "paris capital").stderr


def test_a_spec_over_a_rag_checkpoint_needs_no_encoder_or_generator_type(
    tiny_rag: Callable[..., Path],
) -> None:
    """Their types come from the checkpoint's config, as RagTokenForGeneration.from_pretrained
    builds its parts; validate says so, and the pipeline is the explicit spec's."""
    from ragloom import Pipeline

    explicit = tiny_rag("explicit")
    implicit = explicit.with_name("implicit.toml")
    text = explicit.read_text().replace('[generator]\ntype = "bart"\n', "")
    implicit.write_text(text.replace('[encoder]\ntype = "dpr"\n', "[encoder]\n"))
    assert 'type = "bart"' not in implicit.read_text()
    assert 'type = "dpr"' not in implicit.read_text()
    result = subprocess.run(
        [sys.executable, "-m", "ragloom.cli", "validate", str(implicit)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert "[encoder] dpr from [pipeline] checkpoint: its question encoder is DPR".split() in lines
    generator = "[generator] bart from [pipeline] checkpoint: its generator is bart, an"
    assert [*generator.split(), "encoder-decoder"] in lines
    ours, theirs = Pipeline.from_spec(implicit), Pipeline.from_spec(explicit)
    assert ours.spec == theirs.spec
    questions = ["paris capital", "who wrote animal farm"]
    assert ours.generate(questions) == theirs.generate(questions)


def test_the_rag_checkpoint_example_of_the_spec_docs(
    tiny_rag: Callable[..., Path], tmp_path: Path
) -> None:
    """docs/spec.md's spec over a RAG checkpoint validates, and validate prints what it shows."""
    import re

    text = (Path(__file__).parent.parent / "docs" / "spec.md").read_text(encoding="utf-8")
    section = text[text.index("### Types from a RAG checkpoint") :]
    spec, shown = re.findall(r"```(?:toml|text)\n(.*?)```", section, re.S)[:2]
    root = tiny_rag("docs").parent
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "rag").symlink_to(root / "rag")
    (tmp_path / "models" / "context").symlink_to(root / "dpr" / "ctx_encoder")
    (tmp_path / "kb").symlink_to(root / "kb")
    (tmp_path / "rag_checkpoint.toml").write_text(spec, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "ragloom.cli", "validate", "rag_checkpoint.toml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    expected = shown.splitlines()
    assert expected[-1].strip() == "..."
    printed = result.stdout.splitlines()[: len(expected) - 1]
    assert [line.split() for line in printed] == [line.split() for line in expected[:-1]]
