"""Fuzzing the real CLI: whatever the spec, the ``--set`` overrides or the documents, ``ragloom``
exits 0 or 1 and never prints a traceback.

One ragloom process (this file run as a script, ``--serve``) runs every generated command line
through ``ragloom.cli.main``, so each case costs milliseconds instead of an interpreter start.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import itertools
import json
import logging
import os
import select
import subprocess
import sys
import tomllib
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import encoder_workspace

EXAMPLE = Path(__file__).parent.parent / "examples" / "rag_token.toml"
ANSWER_SECONDS = 120
CASES = itertools.count()
FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class CurrentStderr(io.TextIOBase):
    """Writes to whatever ``sys.stderr`` is now (logging keeps the stream it was given)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)


def run_captured(main: Any, argv: list[str]) -> dict[str, Any]:
    """``main(argv)``'s exit status and stderr; an exception escaping it prints a traceback
    there, as the ``ragloom`` script would."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exit:
            status = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
        except Exception:
            traceback.print_exc()
            status = -1
    return {"status": status, "stderr": stderr.getvalue()}


def serve() -> None:
    """Read one JSON command line per stdin line, answer one JSON result per line."""
    from ragloom.cli import main

    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what the CLI or a C library prints must not mix with the replies
    logging.basicConfig(stream=CurrentStderr(), format="%(levelname)s: %(message)s")
    for line in sys.stdin:
        replies.write(json.dumps(run_captured(main, json.loads(line))) + "\n")


class Ragloom:
    """A ``--serve`` process: :meth:`run` runs one command line in it."""

    def __init__(self, cwd: Path) -> None:
        environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=environment,
        )

    def run(self, *argv: object) -> tuple[int, str]:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps([str(arg) for arg in argv]) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], ANSWER_SECONDS)
        assert ready, f"ragloom {argv} did not finish within {ANSWER_SECONDS} s"
        line = self.process.stdout.readline()
        assert line, f"the ragloom process died (status {self.process.wait()}) running {argv}"
        reply = json.loads(line)
        return reply["status"], reply["stderr"]

    def close(self) -> None:
        assert self.process.stdin
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def ragloom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ragloom]:
    server = Ragloom(tmp_path_factory.mktemp("cwd"))
    yield server
    server.close()


def assert_handled(status: int, stderr: str, case: object) -> None:
    """Exit 0 or 1, and an error (if any) as one message, never a traceback."""
    assert "Traceback" not in stderr, f"{case!r}\n{stderr}"
    assert status in (0, 1), f"status {status} for {case!r}\n{stderr}"


def numbered(directory: Path, name: str) -> Path:
    """A fresh path in ``directory``: the examples of one test share its tmp_path."""
    return directory / f"{next(CASES)}-{name}"


# Specs: random TOML values at random keys of random tables of a spec that validates.

KNOWN_SPEC = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def _tables(table: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _tables(value, (*prefix, key))


def _key_paths(table: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in table.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from _key_paths(value, (*prefix, key))


TABLES = list(_tables(KNOWN_SPEC))
KEY_PATHS = [".".join(path) for path in _key_paths(KNOWN_SPEC)]
KEYS = sorted(
    {path[-1] for path in _key_paths(KNOWN_SPEC)}
    | {"train", "kb", "path", "shards", "address", "checkpoint"}
)
NAMES = st.sampled_from(KEYS) | st.text(max_size=8)
TOML_SCALARS = (
    st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["faiss-exact", "hnsw", "rag-sequence", "asset:minilm", "../..", ""])
    | st.dates()
    | st.datetimes()
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
    max_leaves=6,
)


def _table_at(spec: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The table at ``path`` in ``spec``, made (or made a table again) where needed."""
    table = spec
    for key in path:
        if not isinstance(table.get(key), dict):
            table[key] = {}
        table = table[key]
    return table


@st.composite
def mutated_specs(draw: st.DrawFn) -> str:
    """The known spec with one to three keys set to random values, or deleted."""
    spec = copy.deepcopy(KNOWN_SPEC)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(TABLES) | st.lists(NAMES, min_size=1, max_size=2).map(tuple))
        table = _table_at(spec, path)
        key = draw(st.sampled_from(sorted(table)) | NAMES) if table else draw(NAMES)
        if key in table and draw(st.booleans()):
            del table[key]
        else:
            table[key] = draw(TOML_VALUES)
    return tomli_w.dumps(spec)


@st.composite
def spliced(draw: st.DrawFn, texts: st.SearchStrategy[bytes]) -> bytes:
    """A text from ``texts``, sometimes with random bytes inserted at a random place."""
    data = draw(texts)
    if draw(st.booleans()):
        return data
    at = draw(st.integers(0, len(data)))
    return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]


SPEC_FILES = spliced(
    mutated_specs().map(str.encode) | st.text().map(str.encode) | st.just(EXAMPLE.read_bytes())
)


@FUZZ
@given(content=SPEC_FILES)
def test_validate_any_spec_file(ragloom: Ragloom, tmp_path: Path, content: bytes) -> None:
    spec = numbered(tmp_path, "spec.toml")
    spec.write_bytes(content)
    assert_handled(*ragloom.run("validate", spec), content)


CLI_VALUES = st.text(max_size=20).filter(lambda text: "\0" not in text) | st.sampled_from(
    '[1, 2]|{a = 1}|nan|-inf|1e999|true|"x"|[|{|0|-1|2|1.5|hnsw|faiss-exact|rag-sequence|dense|'
    "asset:minilm|none|8bit|".split("|")
)
ASSIGNMENTS = st.builds(
    "{}{}{}".format,
    st.sampled_from(KEY_PATHS) | st.lists(NAMES, min_size=1, max_size=4).map(".".join),
    st.sampled_from(["=", "=", "=", "", "=="]),
    CLI_VALUES,
)


@FUZZ
@given(assignments=st.lists(ASSIGNMENTS, min_size=1, max_size=3))
def test_validate_any_set_override(ragloom: Ragloom, assignments: list[str]) -> None:
    options = [f"--set={assignment}" for assignment in assignments]
    assert_handled(*ragloom.run("validate", EXAMPLE, *options), assignments)


# Documents: JSONL of random JSON values, CSV/TSV with stray quotes, delimiters and newlines.

FIELD_TEXT = st.text(
    st.sampled_from("ab é\"',\t\n\r\\{}[]:") | st.characters(codec="utf-8"), max_size=12
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | FIELD_TEXT | st.just("a\ud800"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(FIELD_TEXT, inner, max_size=3),
    max_leaves=8,
)
RECORDS = JSON_VALUES | st.fixed_dictionaries(
    {}, optional={"text": FIELD_TEXT | JSON_VALUES, "title": JSON_VALUES, "id": JSON_VALUES}
)
JSONL = st.lists(RECORDS, max_size=5).map(lambda rows: "\n".join(map(json.dumps, rows)).encode())
DEEP_JSON = st.integers(1, 5000).map(lambda n: b'{"text": ' + b"[" * n + b"]" * n + b"}\n")
HEADERS = st.lists(st.sampled_from(["id", "text", "title"]) | FIELD_TEXT, min_size=1, max_size=4)
ROWS = st.lists(st.lists(FIELD_TEXT, min_size=1, max_size=4), max_size=5)


def table_bytes(header: list[str], rows: list[list[str]], delimiter: str, quoted: bool) -> bytes:
    """A CSV/TSV file: written by ``csv`` when ``quoted``, else fields joined as they are."""
    if quoted:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=delimiter).writerows([header, *rows])
        return buffer.getvalue().encode()
    return "".join(delimiter.join(row) + "\n" for row in [header, *rows]).encode()


def tables(delimiter: str) -> st.SearchStrategy[bytes]:
    return st.builds(table_bytes, HEADERS, ROWS, st.just(delimiter), st.booleans())


DOCUMENTS = st.one_of(
    st.tuples(st.just("jsonl"), spliced(JSONL | DEEP_JSON)),
    st.tuples(st.just("csv"), spliced(tables(","))),
    st.tuples(st.just("tsv"), spliced(tables("\t"))),
    st.tuples(st.sampled_from(["jsonl", "csv", "tsv"]), st.binary(max_size=64)),
)


@pytest.fixture(scope="module")
def encoder_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encoder_workspace(tmp_path_factory.mktemp("encoder")) / "spec.toml"


@settings(FUZZ, max_examples=40)
@given(documents=DOCUMENTS, split_words=st.none() | st.integers(-2, 4))
def test_kb_build_any_documents(
    ragloom: Ragloom,
    encoder_spec: Path,
    tmp_path: Path,
    documents: tuple[str, bytes],
    split_words: int | None,
) -> None:
    kind, content = documents
    path = numbered(tmp_path, f"documents.{kind}")
    path.write_bytes(content)
    options = [] if split_words is None else ["--split-words", split_words]
    out = path.with_suffix(".kb")
    status, stderr = ragloom.run(
        "kb", "build", path, "--spec", encoder_spec, "--out", out, *options
    )
    assert_handled(status, stderr, (documents, split_words))


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    serve()
