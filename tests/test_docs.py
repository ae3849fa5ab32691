"""Docs are code: every fenced block in README.md and docs/*.md is run or checked, by its kind.

- ```python: executed in a fresh copy of a workspace holding what the examples name (a tiny RAG
  checkpoint under ``models/``, a knowledge base in ``kb/``, ``rag_token.toml``, ``spec.toml``,
  ``my_spec.toml``, ``examples/``), with ``tests/plugin_pkg/src`` importable. A block that
  defines ``Test*`` classes or ``test_*`` functions is written to a test file and run by pytest in
  a subprocess, as a plugin author would.
- ```toml: parsed; a complete spec (``schema = ...``) is validated by ``ragloom validate`` in an
  empty directory, as a reader without the models would; a fragment of spec tables replaces
  those tables of a complete spec, which is validated.
- ```bash / ```sh / ```console (or an untagged block of command lines): every ``ragloom``
  command line is parsed by ``ragloom.cli.build_parser()`` with its options checked exactly,
  and the cheap ones (``plugins``, ``validate``, ``kb info``) run in the workspace; a ``python
  SCRIPT`` line names an existing script and options it defines; ``./run`` a command it has.
- ```text (or an untagged block that is not command lines): program output, not executed.
- ```json: parsed; ```jsonl: every non-blank line parsed as JSON.

A page's worked example (:data:`WALKTHROUGHS`) also runs from its first block to its last in
one directory, as a reader would follow it: a block whose info string names a file after its
kind (```toml stdlib.toml) is that file's content, Python blocks run, and every ``ragloom``
command runs and must succeed.

A block that cannot run here is marked in the Markdown right before it with
``<!-- not run: REASON -->``; a marker without a reason, or with no block after it, fails, and so
does any block the test cannot classify.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w

REPO = Path(__file__).resolve().parent.parent
PLUGIN_SRC = REPO / "tests" / "plugin_pkg" / "src"
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

KINDS = {
    "python": "python",
    "py": "python",
    "python3": "python",
    "toml": "toml",
    "bash": "shell",
    "sh": "shell",
    "shell": "shell",
    "console": "shell",
    "text": "text",
    "txt": "text",
    "output": "text",
    "json": "json",
    "jsonl": "jsonl",
}
COMMAND_WORDS = {"ragloom", "python", "python3", "pip", "pytest", "ray"}
KNOWN_TOOLS = {"pip", "pytest", "ray"}
CHEAP_COMMANDS = {("plugins",), ("validate",), ("kb", "info")}

MARKER = re.compile(r"^\s*<!--\s*not run\b:?(.*?)-->\s*$")
FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")


@dataclass(frozen=True)
class Block:
    document: str
    line: int  # of the opening fence, 1-based
    info: str
    text: str
    not_run: str | None  # the marker's reason; None when unmarked
    file: str | None = None  # the file the block is, named after its kind (```toml spec.toml)

    @property
    def id(self) -> str:
        return f"{self.document}:{self.line}:{self.info or 'untagged'}"


def parse_blocks(markdown: str, document: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of ``markdown`` and the problems with its not-run markers."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    pending: tuple[int, str] | None = None  # a marker waiting for its block
    number = 0
    while number < len(lines):
        line = lines[number]
        marker = MARKER.match(line)
        fence = FENCE.match(line)
        if marker:
            if pending:
                problems.append(f"{document}:{pending[0]}: a not-run marker with no block after it")
            reason = marker.group(1).strip()
            if not reason:
                problems.append(f"{document}:{number + 1}: a not-run marker needs a reason")
            pending = (number + 1, reason)
        elif fence:
            ticks, info = fence.group(2), fence.group(3).strip()
            body: list[str] = []
            end = number + 1
            while end < len(lines) and not re.match(
                rf"^ {{0,3}}{ticks[0]}{{{len(ticks)},}}\s*$", lines[end]
            ):
                body.append(lines[end])
                end += 1
            words = info.split()
            blocks.append(
                Block(
                    document,
                    number + 1,
                    words[0].lower() if words else "",
                    "\n".join(body) + "\n",
                    pending[1] if pending else None,
                    words[1] if len(words) > 1 else None,
                )
            )
            pending = None
            number = end
        elif line.strip() and pending:
            problems.append(f"{document}:{pending[0]}: a not-run marker with no block after it")
            pending = None
        number += 1
    if pending:
        problems.append(f"{document}:{pending[0]}: a not-run marker with no block after it")
    return blocks, problems


def read_documents() -> tuple[list[Block], list[str]]:
    blocks: list[Block] = []
    problems: list[str] = []
    for path in DOCUMENTS:
        found, wrong = parse_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
        blocks += found
        problems += wrong
    return blocks, problems


BLOCKS, MARKER_PROBLEMS = read_documents()


def command_lines(text: str) -> list[list[str]]:
    """Shell command lines as argument lists: comments dropped, ``\\`` continuations joined,
    and only the ``$ `` lines (with their continuations) where the block shows a prompt."""
    lines = text.splitlines()
    prompted = any(line.startswith("$ ") for line in lines)
    commands: list[list[str]] = []
    current = ""
    continuing = False
    for line in lines:
        if not continuing:
            if prompted and not line.startswith("$ "):
                continue
            line = line[2:] if prompted else line
        continuing = line.rstrip().endswith("\\")
        current += line.rstrip().removesuffix("\\") + " "
        if not continuing:
            words = shlex.split(current, comments=True)
            if words:
                commands.append(words)
            current = ""
    return commands


def kind_of(block: Block) -> str:
    """``python``, ``toml``, ``shell``, ``text``, ``json`` or ``jsonl``; an unknown info string,
    or an untagged block that reads as Python, fails."""
    if block.info:
        if block.info not in KINDS:
            pytest.fail(
                f"{block.id}: unknown info string {block.info!r}; use one of {sorted(KINDS)}"
            )
        return KINDS[block.info]
    first = next((line.split()[0] for line in block.text.splitlines() if line.strip()), "")
    if first in COMMAND_WORDS or first.startswith("./") or first == "$":
        return "shell"
    try:
        tree = ast.parse(block.text)
    except SyntaxError:
        return "text"
    if any(
        isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.ClassDef | ast.Assign)
        for node in tree.body
    ):
        pytest.fail(f"{block.id}: an untagged block that reads as Python: tag it ```python")
    return "text"


# ---------------------------------------------------------------------------------------------
# The workspace the examples run in


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny stand-ins for every file the examples name, at the paths they name."""
    import faiss

    from ragloom import Pipeline
    from ragloom.kb.hf import import_hf
    from ragloom.testing.tiny_models import rag_checkpoint, rag_spec, recipe_knowledge_base

    root = tmp_path_factory.mktemp("docs-workspace")
    scratch = tmp_path_factory.mktemp("docs-models")
    checkpoint, _, context = rag_checkpoint(scratch)
    shutil.copytree(checkpoint, root / "models" / "rag")
    shutil.copytree(context, root / "models" / "context")
    passages, index = recipe_knowledge_base(scratch, context, faiss.IndexFlatIP(32))
    spec = rag_spec(Path("models/rag"), Path("models/context"), Path("kb"), max_length=8)
    for name in ("rag_token.toml", "spec.toml", "my_spec.toml"):
        (root / name).write_text(spec, encoding="utf-8")
    import_hf(passages, root / "kb", index, Pipeline.from_spec(root / "spec.toml").encoder, "dpr")
    shutil.copytree(REPO / "examples", root / "examples")
    return root


@pytest.fixture
def here(workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the workspace, as the working directory."""
    directory = tmp_path / "work"
    shutil.copytree(workspace, directory, symlinks=True)
    monkeypatch.chdir(directory)
    monkeypatch.syspath_prepend(str(PLUGIN_SRC))
    return directory


# ---------------------------------------------------------------------------------------------
# Each kind of block


def defines_tests(tree: ast.Module) -> bool:
    return any(
        (isinstance(node, ast.ClassDef) and node.name.startswith("Test"))
        or (isinstance(node, ast.FunctionDef) and node.name.startswith("test_"))
        for node in tree.body
    )


def run_pytest_file(code: str, directory: Path, name: str = "test_example.py") -> str:
    """Run ``code`` as a test module with pytest in a subprocess; returns its output, which must
    report passed tests and nothing failed, errored or skipped."""
    (directory / name).write_text(code, encoding="utf-8")
    environment = {**os.environ, "PYTHONPATH": str(PLUGIN_SRC)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = output.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary), output
    assert not re.search(r"failed|error|skipped", summary), output
    return output


def check_python(block: Block, here: Path) -> None:
    tree = ast.parse(block.text, filename=block.id)
    if defines_tests(tree):
        run_pytest_file(block.text, here)
        return
    namespace: dict[str, Any] = {"__name__": "__doc_example__"}
    exec(compile(tree, block.id, "exec"), namespace)
    hook = namespace.get("register_components")
    if callable(hook):  # a plugin's hook: what it registers must import
        from ragloom.registry import import_target

        registered: list[tuple[str, str, Any]] = []
        hook(lambda kind, name, component, **_: registered.append((kind, name, component)))
        assert registered, f"{block.id}: register_components registered nothing"
        for _, _, component in registered:
            if isinstance(component, str):
                import_target(component)


def validate(spec: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> None:
    from ragloom.cli import main

    capsys.readouterr()
    status = main(["validate", str(spec), *extra])
    captured = capsys.readouterr()
    assert status == 0, captured.err + captured.out


def check_toml(block: Block, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ragloom.spec.loader import TOP_LEVEL_KEYS
    from ragloom.testing.tiny_models import rag_spec

    data = tomllib.loads(block.text)
    empty = tmp_path / "fresh"
    empty.mkdir()
    if "schema" in data:
        (empty / "spec.toml").write_text(block.text, encoding="utf-8")
    elif data and set(data) <= set(TOP_LEVEL_KEYS):  # tables that change in a complete spec
        base = tomllib.loads(rag_spec(Path("models/rag"), Path("models/context"), Path("kb")))
        (empty / "spec.toml").write_text(tomli_w.dumps({**base, **data}), encoding="utf-8")
    else:
        return  # not a spec (pyproject.toml ...): parsing it is the check
    validate(empty / "spec.toml", capsys)


def leaf_options(argv: list[str]) -> tuple[set[str], list[str]]:
    """The option strings that ``ragloom ARGV`` may use, and the command path (``kb info``)."""
    import argparse

    from ragloom.cli import build_parser

    parser = build_parser()
    allowed = {option for action in parser._actions for option in action.option_strings}
    path: list[str] = []
    for word in argv:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subparsers and word in subparsers[0].choices:
            parser = subparsers[0].choices[word]
            path.append(word)
    allowed |= {option for action in parser._actions for option in action.option_strings}
    return allowed, path


def check_ragloom(
    argv: list[str], block: Block, capsys: pytest.CaptureFixture[str]
) -> tuple[str, ...] | None:
    """Parse ``ragloom ARGV`` as the CLI would, with every option spelled exactly; returns the
    command path when it is cheap enough to run."""
    from ragloom.cli import build_parser

    capsys.readouterr()
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit:
        if exit.code:
            pytest.fail(f"{block.id}: `ragloom {shlex.join(argv)}`: {capsys.readouterr().err}")
        return None  # --help, --version
    allowed, path = leaf_options(argv)
    for word in argv:
        if word.startswith("-") and word.split("=")[0] not in allowed:
            pytest.fail(f"{block.id}: `ragloom {shlex.join(argv)}`: no option {word.split('=')[0]}")
    return tuple(path) if tuple(path) in CHEAP_COMMANDS else None


def check_other_command(argv: list[str], block: Block) -> None:
    """A ``python SCRIPT`` line names a script that defines its options; ``./PROGRAM ACTION`` a
    program that handles the action; pip, pytest and ray are taken as they are."""
    program = argv[0]
    if program in ("python", "python3"):
        if argv[1:2] == ["-m"]:
            import importlib.util

            assert importlib.util.find_spec(argv[2]), f"{block.id}: no module {argv[2]}"
            return
        script = REPO / argv[1]
        assert script.is_file(), f"{block.id}: no script {argv[1]}"
        source = script.read_text(encoding="utf-8")
        for word in argv[2:]:
            if word.startswith("--"):
                option = word.split("=")[0]
                assert f'"{option}"' in source, f"{block.id}: {argv[1]} has no option {option}"
    elif program.startswith("./"):
        path = REPO / program
        assert path.is_file() and os.access(path, os.X_OK), f"{block.id}: no program {program}"
        source = path.read_text(encoding="utf-8")
        actions = [word for word in argv[1:] if not word.startswith("-")][:1]
        for action in actions:
            assert re.search(rf"^\s*{re.escape(action)}\)", source, re.M), (
                f"{block.id}: {program} has no command {action}"
            )
    elif program not in KNOWN_TOOLS and block.not_run is None:
        pytest.fail(f"{block.id}: cannot check `{shlex.join(argv)}`: mark the block not run")


def check_shell(block: Block, here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ragloom.cli import main

    commands = command_lines(block.text)
    assert commands, f"{block.id}: a shell block without a command"
    for argv in commands:
        if argv[0] != "ragloom":
            check_other_command(argv, block)
            continue
        cheap = check_ragloom(argv[1:], block, capsys)
        if cheap and block.not_run is None:
            status = main(argv[1:])
            captured = capsys.readouterr()
            assert status == 0, f"{block.id}: `{shlex.join(argv)}`:\n{captured.err}{captured.out}"


# ---------------------------------------------------------------------------------------------
# The tests


def test_markers_have_reasons_and_blocks() -> None:
    assert not MARKER_PROBLEMS, "\n".join(MARKER_PROBLEMS)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_block(
    block: Block, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    kind = kind_of(block)
    if kind == "text":
        return
    if kind == "json":
        json.loads(block.text)
        return
    if kind == "jsonl":
        for line in block.text.splitlines():
            if line.strip():
                json.loads(line)
        return
    if kind == "toml":
        tomllib.loads(block.text)  # even a block not run must parse
        if block.not_run is None:
            check_toml(block, request.getfixturevalue("tmp_path"), capsys)
        return
    if kind == "python":
        ast.parse(block.text, filename=block.id)
        if block.not_run is None:
            check_python(block, request.getfixturevalue("here"))
        return
    here = request.getfixturevalue("here") if block.not_run is None else Path.cwd()
    check_shell(block, here, capsys)  # ragloom lines are parsed even in a block not run


def test_the_index_contract_example_passes_as_written(tmp_path: Path) -> None:
    """docs/plugins.md's IndexContract example, copied into a test file, passes with pytest."""
    block = next(
        b
        for b in BLOCKS
        if b.document == "docs/plugins.md" and "IndexContract" in b.text and b.info == "python"
    )
    output = run_pytest_file(block.text, tmp_path, "test_numpy_flat_index.py")
    assert re.search(r"1[0-9] passed", output.strip().splitlines()[-1]), output


def test_markers_are_read() -> None:
    """The marker rules themselves: reasons are kept, and empty or orphan markers are problems."""
    markdown = (
        "<!-- not run: needs a CUDA GPU -->\n```python\nimport torch\n```\n\n"
        "<!-- not run -->\n```bash\nragloom demo\n```\n"
        "<!-- not run: lost -->\n\ntext in between\n"
        "````text\n```\n````\n"
    )
    blocks, problems = parse_blocks(markdown, "x.md")
    assert [(b.line, b.info, b.not_run) for b in blocks] == [
        (2, "python", "needs a CUDA GPU"),
        (7, "bash", ""),
        (13, "text", None),
    ]
    assert blocks[2].text == "```\n"
    assert problems == [
        "x.md:6: a not-run marker needs a reason",
        "x.md:10: a not-run marker with no block after it",
    ]
    assert command_lines(
        "ragloom a \\\n  --b c   # note\n# only a comment\npip install -e .\n"
    ) == [
        ["ragloom", "a", "--b", "c"],
        ["pip", "install", "-e", "."],
    ]
    assert command_lines("$ ragloom plugins\nKIND NAME\n") == [["ragloom", "plugins"]]


ERRORS_SPEC = """schema = 1
[pipline]
n_docs = 5
[pipeline]
n_docs = "x"
[encoder]
type = "dpr"
path = "models/question_encoder"
[retriever]
type = "dense"
kb = "kb/wiki"
[retriever.index]
type = "faiss_exact"
[generator]
type = "bart"
[marginalizer]
type = "rag-token"
"""


def test_the_spec_errors_example_is_what_validate_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/spec.md's error output, with its line breaks and its ``...`` as the only liberties."""
    from ragloom.cli import main

    shown = next(
        b.text for b in BLOCKS if b.document == "docs/spec.md" and b.text.startswith("error: ")
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rag_token.toml").write_text(ERRORS_SPEC, encoding="utf-8")
    assert main(["validate", "rag_token.toml"]) == 1
    printed = " ".join(capsys.readouterr().err.split())
    pattern = ".*".join(re.escape(part) for part in " ".join(shown.split()).split(" ..."))
    assert re.fullmatch(pattern, printed), (
        f"docs/spec.md shows:\n{shown}\nvalidate prints:\n{printed}"
    )


# ---------------------------------------------------------------------------------------------
# Worked examples, followed from their first block to their last

WALKTHROUGHS = {"docs/corpus.md": "## A worked example"}
"""Pages whose section under the given heading is followed block by block in one directory."""


def section(document: str, heading: str) -> list[Block]:
    """The blocks of ``document`` from the line starting with ``heading`` to the next heading of
    its level."""
    lines = (REPO / document).read_text(encoding="utf-8").splitlines()
    start = next(n for n, line in enumerate(lines, 1) if line.startswith(heading))
    level = heading.split()[0] + " "
    end = next((n for n, line in enumerate(lines, 1) if n > start and line.startswith(level)), None)
    return [b for b in BLOCKS if b.document == document and start < b.line < (end or len(lines))]


def masked_warnings(lines: list[str]) -> list[str]:
    """Warning lines with their numbers as ``N``: the counts depend on the Python whose
    docstrings the example reads, the wording does not."""
    return [re.sub(r"\d[\d,]*", "N", line) for line in lines if line.startswith("WARNING: ")]


@pytest.mark.slow
@pytest.mark.parametrize(("document", "heading"), WALKTHROUGHS.items())
def test_a_worked_example_runs_as_written(
    document: str,
    heading: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every command of the example succeeds on the packaged models, in order, and the warnings
    an output block shows are those the command before it gave (numbers aside)."""
    from ragloom.cli import main

    monkeypatch.chdir(tmp_path)
    warned: list[str] = []
    commands = 0
    for block in section(document, heading):
        kind = kind_of(block)
        if block.not_run is not None:
            continue
        if block.file:
            (tmp_path / block.file).write_text(block.text, encoding="utf-8")
        elif kind == "python":
            exec(compile(block.text, block.id, "exec"), {"__name__": "__doc_example__"})
        elif kind == "shell":
            caplog.clear()
            for argv in command_lines(block.text):
                assert argv[0] == "ragloom", f"{block.id}: only ragloom commands run here"
                status = main(argv[1:])
                captured = capsys.readouterr()
                assert status == 0, f"{block.id}: `{shlex.join(argv)}`:\n{captured.err}"
                commands += 1
            warned = [
                f"WARNING: {r.getMessage()}"
                for r in caplog.records
                if r.name.startswith("ragloom") and r.levelno == logging.WARNING
            ]
        elif kind == "text":
            shown = masked_warnings(block.text.splitlines())
            assert shown == masked_warnings(warned), f"{block.id} shows other warnings"
    assert commands, f"{document}: no command under {heading!r}"
