"""No input crashes ragloom: a catalog of bad inputs and injected faults, run through the real
CLI and counted (the evidence behind issue 11's closing note).

    python benchmarks/probe.py [--only WORD ...] [--log FILE] [--keep]

Everything runs offline in a temporary directory: a tiny random BERT encoder and a tiny random
DPR + BART RAG checkpoint (``ragloom.testing.tiny_models``), knowledge bases of 40 and 30
documents (the first with three indexes), a RAG knowledge base, specs, a QA file and a
transformers export. It takes about 8 minutes on 2 busy cores.

``CLI_CASES``, ``API_CASES`` and ``FAULT_CASES`` are the catalog: one row per bad input, with
its category, what is run (a ``ragloom`` command line, a Python expression calling the API, or
a fault function) and what is expected (``ok``: rc 0, ``error``: rc 1 with one paragraph,
``usage``: rc 2 from argparse, ``any``: 0 or 1). Command lines and API calls run in a helper
process that calls ``ragloom.cli.main(argv)`` (or evaluates the call) per case and prints an
exception escaping it as a traceback, as the ``ragloom`` script would; a case that kills or
hangs the helper is counted and the helper started again. The faults (``ulimit -f``, SIGKILL,
SIGINT and SIGTERM mid-write, two writers at once, a closed stdout, non-UTF-8 command lines,
``kb info --verify`` after a flipped byte) start real ``ragloom`` processes. Every process has
its address space limited to 10 GiB, so that a huge allocation fails instead of starving the
machine.

Besides the exit status, each case checks what it must not do: ``protect``ed user files must
come out unchanged ("data lost": one changed or gone; "wrote in": new files in them), and a
failed run must leave neither its output nor staging behind ("half").

It prints one table per category: inputs tried, rc 0, rc 1, rc 2 (usage errors), tracebacks,
other ends (signals, hangs, other statuses), data lost, wrote in, half-written, unexpected (a
clean end other than the expected one) and seconds; then every case that gave a traceback, a
signal, data loss, a write into a protected path, a half-written output, an unexpected end or a
message that looks unclear (heuristics: no ``error:`` line, several paragraphs, an errno or a C++
exception text, a Python repr, very short), each with its command line and the last line of
stderr. ``--log`` writes every case's stderr. Exit status 1 when any case gave a traceback, a
signal or lost data.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import random
import re
import resource
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ENVIRONMENT = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
CASE_SECONDS = 180
MEMORY_LIMIT = 10 * 2**30  # address space of every ragloom process: a huge allocation fails
UNCAUGHT = -1000  # the helper's status for an exception escaping main()
LEFTOVER_MARKS = (".tmp-", ".replaced-", ".building", ".incoming")
COLUMNS = (
    "tried", "rc 0", "rc 1", "usage", "traceback", "other", "data lost", "wrote in", "half", "unexp"
)  # fmt: skip
UNCLEAR_SIGNS = (
    "object at 0x",
    "<dict>",
    "PosixPath(",
    "errors.pydantic.dev",
    "[Errno",
    "NoneType",
    "Error:",
    "Exception",
    "codec can",
)


# --- outcomes ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How one case ended."""

    label: str
    expect: str
    rc: int | None  # None: it did not finish (hang)
    stderr: str
    data_lost: list[str] = field(default_factory=list)
    half_written: list[str] = field(default_factory=list)
    wrote_in: list[str] = field(default_factory=list)  # new files in a protected path
    stdout: str = ""
    seconds: float = 0.0

    @property
    def column(self) -> str:
        if "Traceback (most recent call last)" in self.stderr:
            return "traceback"
        return {0: "rc 0", 1: "rc 1", 2: "usage"}.get(self.rc, "other")  # type: ignore[arg-type]

    @property
    def unexpected(self) -> bool:
        wanted = {"ok": {"rc 0"}, "error": {"rc 1"}, "usage": {"usage"}, "any": {"rc 0", "rc 1"}}
        column = self.column
        return column in ("rc 0", "rc 1", "usage") and column not in wanted[self.expect]

    def last_line(self) -> str:
        """The last line of stderr (of stdout, where rc 0 was not expected)."""
        text = self.stdout if self.column == "rc 0" and self.stdout.strip() else self.stderr
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else "(no stderr)"

    def message(self) -> str:
        """The error paragraph: from the last ``error:`` line to the end."""
        at = self.stderr.rfind("error: ")
        return self.stderr[at:].strip() if at >= 0 else self.stderr.strip()

    def unclear(self) -> str:
        """Why the rc-1 message looks unclear, or '' (heuristics; read them yourself)."""
        if self.column != "rc 1" or self.label.startswith("api:"):
            return ""
        text = self.message()
        if "error: " not in self.stderr:
            return "no 'error:' line"
        if self.stderr.count("error: ") > 1 or "\n\n" in text:
            return "several paragraphs"
        if len(re.sub(r"\S*/\S*", "", text)) < 40:  # paths aside
            return "very short"
        for sign in UNCLEAR_SIGNS:
            if sign in text:
                return f"contains {sign!r}"
        return ""


def limits(file_size: int | None = None) -> Callable[[], None]:
    """For ``preexec_fn``: the memory limit, and ``ulimit -f`` when ``file_size`` is given."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        if file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    return apply


def status_of_signal(rc: int | None) -> str:
    if rc is None:
        return "did not finish"
    if rc == UNCAUGHT:
        return "an uncaught exception"
    if rc < 0:
        return f"killed by {signal.Signals(-rc).name}"
    return f"rc {rc}"


# --- the fixtures -----------------------------------------------------------------------------


def write_documents(path: Path, count: int, seed: int = 4, words: int = 0) -> Path:
    """``count`` JSONL documents (about 24 words each, or ``words`` one-word documents)."""
    from ragloom.testing.tiny_models import corpus

    with path.open("w", encoding="utf-8") as handle:
        for number, text in enumerate(corpus(count, seed=seed)):
            body = f"w{number}" if words else f"{text} {text}"
            handle.write(json.dumps({"id": number, "title": text[:12], "text": body}) + "\n")
    return path


ENCODER_SPEC = """schema = 1
[encoder]
type = "dpr"
path = "{bert}"
pooling = "mean"
normalize = true
"""
RETRIEVAL_TABLES = '[retriever]\ntype = "dense"\nkb = "{kb}"\n[retriever.index]\ntype = "hnsw"\n'
TRAIN_TABLE = (
    '\n[train]\nmax_steps = 1\nbatch_size = 2\nlearning_rate = 0.001\nschedule = "constant"\n'
    'device = "cpu"\nsave_every = 1\n'
)
INDEX_TYPES = ("faiss-exact", "hnsw", "faiss-hnsw")


class Fixtures:
    """The files every case may name as ``{name}``: models, specs, documents, KBs."""

    def __init__(self, root: Path, helper: Ragloom) -> None:
        self.root, self.helper = root, helper  # the helper runs command lines in one process
        self.paths: dict[str, Path] = {"root": root}
        self.texts: dict[str, str] = {}

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]

    def spec(self, name: str, text: str) -> Path:
        self.texts[name] = text
        path = self.root / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        self.paths[name] = path
        return path

    def build(self) -> None:
        from ragloom.testing.tiny_models import bert_dir, rag_checkpoint, rag_spec

        root = self.root
        quiet = contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO())
        with quiet[0], quiet[1]:  # the tokenizer trainers' and transformers' progress bars
            self.paths["bert"] = bert_dir(root / "bert")
            checkpoint, _, context = rag_checkpoint(root / "rag")
        self.paths.update(ckpt=checkpoint, ctx=context, kb=root / "kb", ragkb=root / "ragkb")
        self.paths["docs"] = write_documents(root / "docs.jsonl", 40)
        self.paths["other_docs"] = write_documents(root / "other.jsonl", 30, seed=9)
        enc = self.spec("enc", ENCODER_SPEC.format(bert=self["bert"]))
        rag = rag_spec(checkpoint, context, self["ragkb"], n_docs=2, max_length=6)
        self.spec("rag", rag)
        self.spec("ret", self.texts["enc"] + RETRIEVAL_TABLES.format(kb=self["kb"]))
        self.spec("train", rag + TRAIN_TABLE)
        qa = [("paris capital", "paris"), ("who wrote animal farm", "orwell")]
        self.paths["qa"] = root / "qa.jsonl"
        self.paths["qa"].write_text(
            "".join(json.dumps({"question": q, "answers": [a]}) + "\n" for q, a in qa)
        )
        steps = [
            ["kb", "build", self["docs"], "--spec", enc, "--out", self["kb"]],
            ["kb", "build", self["other_docs"], "--spec", enc, "--out", root / "other_kb"],
            *(["index", "build", self["kb"], "--type", t] for t in INDEX_TYPES),
            ["kb", "build", self["docs"], "--spec", self["rag"], "--out", self["ragkb"]],
            ["index", "build", self["ragkb"], "--type", "faiss-exact"],
            ["kb", "export-hf", self["ragkb"], "--out", root / "hf"],
        ]
        for argv in steps:
            rc, stderr = self.helper.run([str(arg) for arg in argv])
            if rc != 0:
                sys.exit(f"fixture step {argv} failed (rc {rc}):\n{stderr}")
        self.paths.update(hf=root / "hf", other_kb=root / "other_kb")

    def substitute(self, text: str, tmp: Path) -> str:
        """``{tmp}`` and ``{fixture}`` replaced; any other braces are left as they are."""
        names = {"tmp": tmp, **self.paths}
        return re.sub(r"\{(\w+)\}", lambda m: str(names.get(m[1], m[0])), text)


# --- the CLI, in one helper process -------------------------------------------------------------


class CurrentStderr(io.TextIOBase):
    """Writes to whatever ``sys.stderr`` is now (logging keeps the stream it was given)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)


def call_api(code: str, specs: dict[str, str], pipelines: dict[str, Any]) -> int:
    """Evaluate one API case: 0 if it returns, 1 for a RagloomError (printed as the CLI
    prints it); anything else escapes (a traceback)."""
    from ragloom import Pipeline, RagloomError

    if not pipelines:
        pipelines.update({name: Pipeline.from_spec(path) for name, path in specs.items()})
    try:
        eval(code, {"Pipeline": Pipeline, "RAG": specs["rag"], **pipelines})
    except RagloomError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def serve() -> None:
    """Run one JSON request per stdin line, ``{"argv", "cwd"}`` (a command line) or ``{"code",
    "specs"}`` (an API call); answer ``{"rc", "stderr", "stdout"}`` on one line each."""
    from ragloom.cli import main

    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what a C library prints must not mix with the replies
    logging.basicConfig(stream=CurrentStderr(), format="%(levelname)s: %(message)s")
    home = os.getcwd()
    pipelines: dict[str, Any] = {}
    for line in sys.stdin:
        request = json.loads(line)
        os.chdir(request["cwd"] or home)
        stderr, stdout = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            try:
                if "code" in request:
                    rc = call_api(request["code"], request["specs"], pipelines)
                else:
                    rc = main(request["argv"])
            except SystemExit as exit:
                rc = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
            except BaseException:
                traceback.print_exc()
                rc = UNCAUGHT
        os.chdir(home)
        reply = {"rc": rc, "stderr": stderr.getvalue(), "stdout": stdout.getvalue()[-2000:]}
        replies.write(json.dumps(reply) + "\n")


class Ragloom:
    """The helper process; restarted when a case kills it or hangs."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.process: subprocess.Popen[str] | None = None
        self.stdout = ""  # the end of the last case's stdout

    def start(self) -> subprocess.Popen[str]:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, __file__, "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=self.cwd,
                env=ENVIRONMENT,
                preexec_fn=limits(),
            )
        return self.process

    def run(self, argv: list[str], cwd: Path | None = None) -> tuple[int | None, str]:
        return self.request({"argv": argv, "cwd": str(cwd or "")})

    def request(self, request: dict[str, Any]) -> tuple[int | None, str]:
        process = self.start()
        assert process.stdin and process.stdout
        request.setdefault("cwd", "")
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], CASE_SECONDS)
        if not ready:
            process.kill()
            process.wait()
            return None, f"(no answer within {CASE_SECONDS} s)"
        line = process.stdout.readline()
        if not line:
            return process.wait(), "(the ragloom process died)"
        reply = json.loads(line)
        self.stdout = reply["stdout"]
        return reply["rc"], reply["stderr"]

    def close(self) -> None:
        if self.process and self.process.poll() is None:
            assert self.process.stdin
            self.process.stdin.close()
            self.process.wait(timeout=60)


def ragloom_process(
    argv: list[Any], timeout: float = CASE_SECONDS, **options: Any
) -> tuple[int | None, str]:
    """``ragloom ARGV`` as a process of its own: its status and stderr."""
    command = [
        sys.executable,
        "-m",
        "ragloom.cli",
        *(a if isinstance(a, bytes) else str(a) for a in argv),
    ]
    options.setdefault("preexec_fn", limits())
    try:
        result = subprocess.run(
            command, capture_output=True, timeout=timeout, env=ENVIRONMENT, **options
        )
    except subprocess.TimeoutExpired as expired:
        return None, (expired.stderr or b"").decode(errors="replace") + "(timed out)"
    return result.returncode, result.stderr.decode(errors="replace")


# --- what a case checks besides the exit status --------------------------------------------------


def snapshot(path: Path) -> dict[str, str]:
    """What is at ``path``: each file's sha256, each link's target (links are not followed)."""
    if path.is_symlink():
        return {".": f"link to {os.readlink(path)}"}
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    if not path.is_dir():
        return {".": "missing"}
    found = {".": "directory"}
    for child in sorted(path.rglob("*")):
        name = str(child.relative_to(path))
        if child.is_symlink():
            found[name] = f"link to {os.readlink(child)}"
        elif child.is_file():
            found[name] = hashlib.sha256(child.read_bytes()).hexdigest()
    return found


def is_lock(name: str) -> bool:
    return Path(name).name.startswith(".") and name.endswith(".lock")


def changes(before: dict[str, str], after: dict[str, str]) -> tuple[list[str], list[str]]:
    """What was lost (a file changed or gone; ragloom's own lock files aside) and what was
    added (new entries, lock files included)."""
    lost = [
        f"{name} {'gone' if name not in after else 'changed'}"
        for name in before
        if before[name] != after.get(name) and not is_lock(name)
    ]
    return lost, [f"{name} new" for name in after if name not in before]


def leftovers(directories: list[Path]) -> set[str]:
    """Staging, temporary and aside entries in ``directories`` (and under the first)."""
    found = set()
    for number, directory in enumerate(directories):
        if not directory.is_dir():
            continue
        entries = directory.rglob("*") if number == 0 else directory.iterdir()
        found |= {str(p) for p in entries if any(mark in p.name for mark in LEFTOVER_MARKS)}
    return found


def outputs(argv: list[str], cwd: Path) -> list[Path]:
    """The paths a command line writes (the values of ``--out`` and ``--plot``)."""
    return [
        cwd / argv[i + 1]
        for i, arg in enumerate(argv[:-1])
        if arg in ("--out", "--plot") and argv[i + 1]
    ]


class Checked:
    """Around one run: the protected paths must stay as they were, and a failed run must leave
    neither its output nor staging behind."""

    def __init__(
        self, protect: list[Path], outs: list[Path], watch: list[Path], resumable: bool = False
    ) -> None:
        self.protect, self.outs, self.watch = protect, outs, watch
        self.before = {path: snapshot(path) for path in protect}
        self.existed = {path: path.exists() or path.is_symlink() for path in outs}
        self.staging = leftovers(watch)
        self.resumable = resumable  # a kb build's .building staging is kept to resume from

    def finish(self, outcome: Outcome) -> Outcome:
        for path, before in self.before.items():
            lost, added = changes(before, snapshot(path))
            if lost:
                outcome.data_lost.append(f"{path}: {', '.join(lost[:4])}")
            if added:
                outcome.wrote_in.append(f"{path}: {', '.join(added[:4])}")
        if self.resumable:
            self.staging |= {p for p in leftovers(self.watch) if p.endswith(".building")}
        if outcome.rc not in (0, None):
            outcome.half_written += [
                f"{path} left behind"
                for path, existed in self.existed.items()
                if not existed and path.exists()
            ]
        outcome.half_written += sorted(leftovers(self.watch) - self.staging)
        return outcome


# --- setting up a case's files -------------------------------------------------------------------


@dataclass(frozen=True)
class Big:
    """File content made when the case runs (too big to hold in the catalog), and its name."""

    text: str
    make: Callable[[], bytes]

    def __call__(self) -> bytes:
        return self.make()


Content = bytes | str | Big


def describe(content: Content) -> str:
    if isinstance(content, Big):
        return content.text
    shown = repr(content)
    return shown if len(shown) <= 70 else f"{shown[:60]}... ({len(content)} long)"


@dataclass(frozen=True)
class Setup:
    """What a case makes in its directory before it runs, and a few words saying what."""

    text: str
    make: Callable[[Path, Fixtures], None]

    def __call__(self, tmp: Path, fx: Fixtures) -> None:
        self.make(tmp, fx)


def file(name: str, content: Content) -> Setup:
    """A file in the case's directory (``{fixture}`` names in text are replaced)."""

    def make(tmp: Path, fx: Fixtures) -> None:
        data = content() if isinstance(content, Big) else content
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(fx.substitute(data, tmp), encoding="utf-8")
        else:
            path.write_bytes(data)

    return Setup(f"{name} = {describe(content)}", make)


def spec(base: str, *edits: tuple[str, str], extra: str = "", name: str = "spec.toml") -> Setup:
    """A spec in the case's directory: a fixture spec's text with ``(old, new)`` edits."""

    def make(tmp: Path, fx: Fixtures) -> None:
        text = fx.texts[base]
        for old, new in edits:
            assert old in text, (old, base)
            text = text.replace(old, fx.substitute(new, tmp), 1)
        (tmp / name).write_text(text + fx.substitute(extra, tmp), encoding="utf-8")

    changes = [repr(new.split("\nx")[0]) for _, new in edits] + ([repr(extra)] if extra else [])
    return Setup(f"{name} = {base} spec with {', '.join(changes)}", make)


def user_dir(name: str) -> Setup:
    """A directory of the user's own files, which no ragloom command may touch."""

    def make(tmp: Path, fx: Fixtures) -> None:
        (tmp / name / "notes").mkdir(parents=True)
        (tmp / name / "thesis.txt").write_text("three years of work")
        (tmp / name / "notes" / "todo.txt").write_text("back it up")

    return Setup(f"{name}/ = the user's files", make)


def copy(fixture: str, name: str, without_indexes: bool = False) -> Setup:
    def make(tmp: Path, fx: Fixtures) -> None:
        ignore = shutil.ignore_patterns("indexes") if without_indexes else None
        if fx[fixture].is_dir():
            shutil.copytree(fx[fixture], tmp / name, ignore=ignore)
        else:
            shutil.copy(fx[fixture], tmp / name)

    return Setup(f"{name} = a copy of {{{fixture}}}", make)


def link(name: str, target: str) -> Setup:
    def make(tmp: Path, fx: Fixtures) -> None:
        (tmp / name).symlink_to(fx.substitute(target, tmp))

    return Setup(f"{name} -> {target}", make)


def array(name: str, make_array: Callable[[], Any], pickle: bool = False) -> Setup:
    def make(tmp: Path, fx: Fixtures) -> None:
        np.save(tmp / name, make_array(), allow_pickle=pickle)

    made = make_array()
    return Setup(f"{name} = {made.dtype} array of shape {list(made.shape)}", make)


def manifest_edit(**values: Any) -> Setup:
    def make(tmp: Path, fx: Fixtures) -> None:
        path = tmp / "kb" / "manifest.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **values}))

    return Setup(f"kb/manifest.json with {json.dumps(values)}", make)


def remove(pattern: str) -> Setup:
    def make(tmp: Path, fx: Fixtures) -> None:
        for path in tmp.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    return Setup(f"rm {pattern}", make)


def mkdir(name: str) -> Setup:
    return Setup(f"mkdir {name}", lambda tmp, fx: (tmp / name).mkdir(parents=True))


def both(*setups: Setup) -> Setup:
    def make(tmp: Path, fx: Fixtures) -> None:
        for setup in setups:
            setup(tmp, fx)

    return Setup("; ".join(setup.text for setup in setups), make)


def jsonl(*records: Any) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def deep(depth: int) -> Big:
    text = f'{{"text": [[[...]]]}} nested {depth} deep'
    return Big(text, lambda: b'{"text": ' + b"[" * depth + b"]" * depth + b"}\n")


def random_bytes(count: int = 512) -> Big:
    return Big(f"{count} random bytes", lambda: random.Random(count).randbytes(count))


def repeated(head: bytes, middle: bytes, times: int, tail: bytes = b"") -> Big:
    text = f"{head!r} + {middle!r} * {times:,} + {tail!r}"
    return Big(text, lambda: head + middle * times + tail)


# --- the catalog ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    """A Python expression run in the API process (``rag``, ``ret``: loaded pipelines)."""

    code: str


@dataclass(frozen=True)
class Fault:
    """A function of the fixtures and the case's directory that runs real processes."""

    name: str
    run: Callable[[Fixtures, Path], list[Outcome]]


@dataclass(frozen=True)
class Case:
    category: str
    what: tuple[str, ...] | Api | Fault
    expect: str = "error"
    setup: Setup | None = None
    protect: tuple[str, ...] = ()
    cwd: str | None = None

    @property
    def label(self) -> str:
        if isinstance(self.what, Api):
            return f"api: {self.what.code}"
        if isinstance(self.what, Fault):
            return self.what.name
        words = [w if len(w) < 80 else f"{w[:30]}...({len(w)} chars)" for w in self.what]
        where = f"(in {self.cwd}) " if self.cwd else ""
        command = where + "ragloom " + " ".join(repr(w) if " " in w or not w else w for w in words)
        if not self.setup:
            return command
        return f"{command}   [{textwrap.shorten(self.setup.text, 160, placeholder=' ...')}]"


def cli(
    category: str,
    command: str | tuple[str, ...],
    expect: str = "error",
    setup: Setup | None = None,
    protect: str = "",
    cwd: str | None = None,
) -> Case:
    """A ``ragloom`` command line (a string is split as a shell would); ``protect``: paths, one
    space between them, that must come out unchanged."""
    argv = tuple(shlex.split(command)) if isinstance(command, str) else command
    return Case(category, argv, expect, setup, tuple(protect.split()), cwd)


def spec_file(content: Content, expect: str = "error") -> Case:
    """``ragloom validate`` on a spec file of exactly ``content``."""
    return cli("spec files", "validate {tmp}/spec.toml", expect, file("spec.toml", content))


def spec_value(*edits: tuple[str, str], expect: str = "error", extra: str = "") -> Case:
    """``ragloom validate`` on the RAG spec with ``(old, new)`` edits."""
    return cli("spec values", "validate {tmp}/spec.toml", expect, spec("rag", *edits, extra=extra))


def ask_spec(*edits: tuple[str, str], expect: str = "error", base: str = "rag") -> Case:
    """``ragloom ask`` (which loads everything) on an edited spec."""
    return cli("ask", "ask {tmp}/spec.toml paris", expect, spec(base, *edits))


def override(assignment: str, expect: str = "error", command: str = "validate {rag}") -> Case:
    return cli("--set", (*shlex.split(command), "--set", assignment), expect)


def ask(question: str, expect: str = "any", spec_name: str = "rag", options: str = "") -> Case:
    return cli("ask", ("ask", f"{{{spec_name}}}", question, *shlex.split(options)), expect)


def qa_file(content: Content, expect: str = "error") -> Case:
    command = "eval {rag} --data {tmp}/qa.jsonl --out {tmp}/ev --limit 1"
    return cli("eval --data", command, expect, file("qa.jsonl", content))


def eval_with(options: str, expect: str = "error", spec_name: str = "rag") -> Case:
    command = f"eval {{{spec_name}}} --data {{qa}} --out {{tmp}}/ev {options}"
    return cli("eval options", command, expect)


def eval_out(
    out: str, setup: Setup | None = None, protect: str = "", cwd: str | None = None
) -> Case:
    """``ragloom eval`` of copies of the spec and QA file into ``out``, which collides with
    what is there; the copies and ``protect`` must come out unchanged."""
    files = both(copy("rag", "spec.toml"), copy("qa", "qa.jsonl"), *([setup] if setup else []))
    command = ("eval", "{tmp}/spec.toml", "--data", "{tmp}/qa.jsonl", "--retrieval-only")
    protect = f"{{tmp}}/spec.toml {{tmp}}/qa.jsonl {protect}"
    return cli("eval --out", (*command, "--out", out), "error", files, protect, cwd)


def documents(name: str, content: Content, options: str = "", expect: str = "error") -> Case:
    """``ragloom kb build`` of one documents file."""
    command = f"kb build {{tmp}}/{name} --spec {{enc}} --out {{tmp}}/out {options}"
    return cli("kb build inputs", command, expect, file(name, content))


def kb_option(options: str, expect: str = "error") -> Case:
    return cli(
        "kb build options", f"kb build {{docs}} --spec {{enc}} --out {{tmp}}/out {options}", expect
    )


def kb_out(
    out: str,
    setup: Setup | None = None,
    protect: str = "",
    expect: str = "error",
    cwd: str | None = None,
    options: str = "",
) -> Case:
    """``ragloom kb build`` of a copy of the documents into ``out``, which may collide with
    what is there already; the documents and ``protect`` must come out unchanged."""
    files = both(copy("docs", "docs.jsonl"), *([setup] if setup else []))
    command = ("kb", "build", "{tmp}/docs.jsonl", "--spec", "{enc}", "--out", out)
    protect = f"{{tmp}}/docs.jsonl {protect}"
    return cli("kb build --out", (*command, *shlex.split(options)), expect, files, protect, cwd)


def kb_info(
    target: str, setup: Setup | None = None, expect: str = "error", protect: str = ""
) -> Case:
    return cli("kb info", ("kb", "info", target, "--verify"), expect, setup, protect)


def damaged_kb(damage: Setup, expect: str = "error") -> Case:
    """``ragloom kb info --verify`` on a copy of the KB with ``damage`` done to it."""
    return kb_info("{tmp}/kb", both(copy("kb", "kb"), damage), expect)


def hf(command: str, setup: Setup | None = None, protect: str = "", expect: str = "error") -> Case:
    return cli("kb import/export", f"kb {command}", expect, setup, protect)


def index_build(options: str, expect: str = "error") -> Case:
    """``ragloom index build`` on a copy of the KB without indexes."""
    kb = copy("kb", "kb", without_indexes=True)
    return cli("index build", f"index build {{tmp}}/kb {options}", expect, kb)


def compare(options: str, setup: Setup | None = None, expect: str = "error") -> Case:
    command = f"index compare {{kb}} --plot {{tmp}}/p.png --num-queries 20 {options}"
    return cli("index compare", command, expect, setup)


def queries(make_array: Callable[[], Any], pickle: bool = False, expect: str = "error") -> Case:
    return compare(
        "--types faiss-exact --queries {tmp}/q.npy", array("q.npy", make_array, pickle), expect
    )


def compare_plot(
    plot: str, setup: Setup | None = None, protect: str = "", expect: str = "error"
) -> Case:
    command = ("index", "compare", "{tmp}/kb", "--types", "faiss-exact", "--num-queries", "20")
    kb = both(copy("kb", "kb"), *([setup] if setup else []))
    return cli("index compare", (*command, "--plot", plot), expect, kb, protect)


def train_data(content: Content) -> Case:
    command = "train {train} --data {tmp}/qa.jsonl --out {tmp}/run"
    return cli("train", command, "error", file("qa.jsonl", content))


def train_set(assignment: str, expect: str = "error") -> Case:
    command = ("train", "{train}", "--data", "{qa}", "--out", "{tmp}/run", "--set", assignment)
    return cli("train", command, expect)


def train_out(
    out: str, setup: Setup | None = None, protect: str = "", cwd: str | None = None
) -> Case:
    files = both(copy("train", "spec.toml"), copy("qa", "qa.jsonl"), *([setup] if setup else []))
    command = ("train", "{tmp}/spec.toml", "--data", "{tmp}/qa.jsonl", "--out", out)
    protect = f"{{tmp}}/spec.toml {{tmp}}/qa.jsonl {protect}"
    return cli("train --out", command, "error", files, protect, cwd)


USER = "{tmp}/user"
MINE = file("notes.txt", "mine")
LINKED_USER = both(user_dir("user"), link("link", USER))
HUGE = str(10**30)
NO_ENCODER = "schema = 1\n[generation]\nnum_beams = 1\n"
BUILD_WITH_SPEC = "kb build {docs} --spec {tmp}/spec.toml --out {tmp}/out"
DEEP_TOML = Big("x = [[[...]]] 100,000 deep", lambda: b"x = " + b"[" * 100_000 + b"]" * 100_000)
KB_COPY, BARE_KB = copy("kb", "kb"), copy("kb", "kb", without_indexes=True)
HF_COPY = copy("hf", "hf")
LINKED_OUT = both(BARE_KB, user_dir("outside"), link("kb/indexes", "{tmp}/outside"))
LINKED_PHOTO = both(file("photo.png", b"\x89PNG holiday"), link("link.png", "{tmp}/photo.png"))
NPZ = Setup(
    "q.npz = an .npz archive",
    lambda tmp, fx: np.savez(tmp / "q.npz", q=np.ones((4, 32), np.float32)),
)

# fmt: off
CLI_CASES: list[Case] = [
    # --- the command line itself (argparse) ---
    cli("command line", "", "usage"),
    cli("command line", "nonsense", "usage"),
    cli("command line", "--version", "ok"),
    cli("command line", "kb", "usage"),
    cli("command line", "index", "usage"),
    cli("command line", "kb build", "usage"),
    cli("command line", "kb frobnicate", "usage"),
    cli("command line", "validate", "usage"),
    cli("command line", "ask {rag}", "usage"),
    cli("command line", "validate {rag} --set", "usage"),
    cli("command line", "demo --set noequals"),
    cli("command line", "demo --set pipeline.n_docs=x"),
    cli("command line", "demo extra", "usage"),
    cli("plugins", "plugins", "ok"),
    cli("plugins", "plugins --json", "ok"),
    cli("plugins", "plugins --bogus", "usage"),
    cli("plugins", "plugins extra", "usage"),
    # --- spec files: what the file is ---
    cli("spec files", "validate {tmp}/missing.toml"),
    cli("spec files", "validate ''"),
    cli("spec files", "validate {tmp}"),
    cli("spec files", "validate /dev/null"),
    cli("spec files", "validate {docs}"),
    cli("spec files", "validate {kb}"),
    cli("spec files", "validate {kb}/embeddings.npy"),
    cli("spec files", "validate {tmp}/" + "x" * 5000 + ".toml"),
    cli("spec files", "validate {docs}/spec.toml"),
    spec_file(""),
    spec_file("# only a comment\n"),
    spec_file(random_bytes()),
    spec_file(repeated(b"schema = 1\n", b"# padding\n", 2_000_000), expect="ok"),
    spec_file(repeated(b'schema = 1\nx = "', b"a", 20_000_000, b'"\n')),
    spec_file("schema = 1\n# caf\xe9\n".encode("latin-1")),
    spec_file("schema = 1\n".encode("utf-16")),
    spec_file(b"\xef\xbb\xbfschema = 1\n", expect="any"),
    spec_file(DEEP_TOML),
    spec_file(repeated(b"schema = 1\n[", b"a.", 50_000, b"a]\n")),
    spec_file("schema = 1\n[pipeline\nn_docs = 2\n"),
    spec_file("schema = 1\n[pipeline]\nn_docs = \n"),
    spec_file("schema = 1\n[pipeline]\nn_docs = 2\nn_docs = 3\n"),
    spec_file("schema = 1\n[pipeline]\n[pipeline]\n"),
    spec_file('schema = 1\n[pipeline]\nn_docs = "unterminated\n'),
    spec_file("schema = 1\n\x00\n"),
    spec_file("[pipeline]\nn_docs = 2\n"),
    spec_file("schema = 2\n"),
    spec_file('schema = "1"\n'),
    spec_file("schema = 1\npipeline = 3\n"),
    spec_file("schema = 1\n[nonsense]\nx = 1\n"),
    spec_file('schema = 1\n[[encoder]]\ntype = "dpr"\n'),
    spec_file(ENCODER_SPEC + '[retriever]\ntype = "dense"\nkb = "{kb}"\nindex = "hnsw"\n'),
    spec_file("schema = 1\n[generation]\nnum_beams = 2\n", expect="ok"),
    # --- spec files: values ---
    spec_value(("n_docs = 2", "n_docs = 0")),
    spec_value(("n_docs = 2", "n_docs = -1")),
    spec_value(("n_docs = 2", "n_docs = true")),
    spec_value(("n_docs = 2", "n_docs = 1e8")),
    spec_value(("n_docs = 2", "n_docs = 2.5")),
    spec_value(("n_docs = 2", 'n_docs = "2"')),
    spec_value(("n_docs = 2", "n_docs = nan")),
    spec_value(("n_docs = 2", "n_docs = inf")),
    spec_value(("n_docs = 2", "n_docs = [2]")),
    spec_value(("n_docs = 2", "n_docs = {a = 1}")),
    spec_value(("n_docs = 2", "n_docs = 1979-05-27")),
    spec_value(("n_docs = 2", f"n_docs = {HUGE}")),
    spec_value(("n_docs = 2", "n_docs = 9223372036854775807")),
    spec_value(("n_docs = 2", "n_docs = 1000000000")),
    spec_value(("n_docs = 2", "n_docs = 100000"), expect="any"),
    spec_value(("num_beams = 1", "num_beams = 0")),
    spec_value(("num_beams = 1", "num_beams = -4")),
    spec_value(("num_beams = 1", "num_beams = 100000")),
    spec_value(("max_length = 6", "max_length = 0")),
    spec_value(("max_length = 6", "max_length = 1"), expect="ok"),
    spec_value(("max_length = 6", "max_length = 100000")),
    spec_value(("max_length = 6", "max_length = 6\nmin_length = 50"), expect="any"),
    spec_value(("max_length = 6", "max_length = 6\nmin_length = -1")),
    spec_value(("max_length = 6", "max_length = 6\nlength_penalty = nan"), expect="any"),
    spec_value(("max_length = 6", 'max_length = 6\nearly_stopping = "yes"')),
    spec_value(("max_length = 6", "max_length = 6\nbeams = 4")),
    spec_value(("n_docs = 2", "n_docs = 2\nndocs = 2")),
    spec_value(extra="[nonsense]\nx = 1\n"),
    spec_value(extra="[retriever.nonsense]\nx = 1\n"),
    spec_value(('type = "dpr"', 'type = "nope"')),
    spec_value(('type = "dpr"', "type = 5")),
    spec_value(('type = "dpr"', 'type = ""')),
    spec_value(('type = "faiss-exact"', 'type = "hnws"')),
    spec_value(('type = "rag-token"', 'type = "rag-nope"')),
    spec_value(('[generator]\ntype = "bart"', "[generator]")),
    spec_value(('type = "bart"', 'type = "bart"\nattention = "flash"')),
    spec_value(('type = "bart"', 'type = "bart"\nquantization = "3bit"')),
    spec_value(('type = "bart"', 'type = "bart"\ndtype = "float8"')),
    spec_value(('type = "bart"', 'type = "bart"\ndevice = "tpu"')),
    spec_value(('type = "faiss-exact"', 'type = "hnsw"\nM = 0')),
    spec_value(('type = "faiss-exact"', 'type = "faiss-compressed"\nfactory = "garbage"'),
               expect="any"),
    spec_value(('type = "faiss-exact"', 'type = "faiss-exact"\nnprobe = 4')),
    # --- spec files: paths ---
    spec_value(('checkpoint = "', 'checkpoint = "/nonexistent/'), expect="any"),
    spec_value(('kb = "', 'kb = "/nonexistent/'), expect="any"),  # "not built yet"
    spec_value(('passage_path = "', 'passage_path = "/nonexistent/')),
    spec_value(('checkpoint = "', 'checkpoint = "{docs}"\nx_checkpoint = "')),
    spec_value(('kb = "', 'kb = "\\u0000')),
    spec_value(('kb = "', 'kb = ""\nx = "')),
    spec_value(('kb = "', 'kb = "' + "x" * 5000)),
    spec_value(('kb = "', 'kb = "{bert}"\nx = "')),
    spec_value(('kb = "', 'kb = "{kb}"\nx = "')),
    spec_value(('kb = "', 'kb = "{docs}"\nx = "')),
    spec_value(('passage_path = "', 'passage_path = "asset:nope"\nx = "')),
    spec_value(('kb = "', 'kb = "asset:nope"\nx = "')),
    spec_value(('passage_path = "', 'passage_path = "{kb}"\nx = "'), expect="any"),
    # --- spec files through ask, which loads everything ---
    ask_spec(('checkpoint = "', 'checkpoint = "/nonexistent/')),
    ask_spec(('checkpoint = "', 'checkpoint = "{bert}"\nx_checkpoint = "')),
    ask_spec(('checkpoint = "', 'checkpoint = "{docs}"\nx_checkpoint = "')),
    ask_spec(('checkpoint = "', 'checkpoint = "{kb}"\nx_checkpoint = "')),
    ask_spec(('passage_path = "', 'passage_path = "{bert}"\nx = "')),
    ask_spec(('kb = "', 'kb = "{kb}"\nx = "')),
    ask_spec(('[generator]\ntype = "bart"', "")),
    ask_spec(('[marginalizer]\ntype = "rag-token"', ""), expect="any"),
    ask_spec(('[retriever]\ntype = "dense"', '[retriever_]\ntype = "dense"')),
    ask_spec(("n_docs = 2", "n_docs = 1000"), expect="any"),
    ask_spec(("max_length = 6", "max_length = 1"), expect="ok"),
    ask_spec(('type = "bart"', 'type = "bart"\ndevice = "tpu"')),
    ask_spec(('type = "bart"', 'type = "bart"\ndevice = "cuda"')),
    ask_spec(('type = "dpr"', 'type = "dpr"\ndevice = "cuda:7"')),
    ask_spec(('path = "', 'path = "/nonexistent/'), base="ret"),
    # --- --set ---
    override("noequals"),
    override("=5"),
    override("pipeline.n_docs="),
    override("pipeline..n_docs=3"),
    override(".n_docs=3"),
    override("pipeline.n_docs.=3"),
    override("pipeline.n_docs=abc"),
    override("pipeline.n_docs=[1, 2]"),
    override("pipeline.n_docs={a = 1}"),
    override("pipeline.n_docs=1e999"),
    override("pipeline.n_docs=nan"),
    override("pipeline.n_docs=-inf"),
    override("pipeline.n_docs=true"),
    override("pipeline.n_docs=0"),
    override(f"pipeline.n_docs={HUGE}"),
    override("pipeline.n_docs.x=1"),
    override("pipeline=3"),
    override("pipeline.nope=1"),
    override("nonsense.key=1"),
    override("retriever.index=3"),
    override("retriever.index.type=nope"),
    override("retriever.index.type="),
    override("encoder=dpr"),
    override("retriever.kb="),
    override("retriever.kb=/nonexistent", expect="any"),
    override("schema=2"),
    override("generation.num_beams=0"),
    override("generation.max_length=-1"),
    override("generator.path=asset:nope"),
    override("pipeline.n_docs=2", expect="ok"),
    override("marginalizer.type=rag-sequence", expect="ok"),
    override('pipeline.n_docs="3"', expect="any"),
    override("pipeline.n_d\u00f6cs=3"),
    override("pipeline.n_docs==3"),
    override("train.learning_rate=-1"),
    override("generation.num_beams=0", command="ask {rag} paris"),
    override("pipeline.n_docs=x", command="ask {rag} paris"),
    override("retriever.kb={kb}", command="ask {rag} paris"),
    # --- ask ---
    ask(""),
    ask("   "),
    ask("x" * 100_000),
    ask("paris " * 20_000),
    ask("\x1b[2J\t\r\n"),
    ask("\u202e\U0001f600\u0000"),
    ask("paris \ud800", expect="error"),
    ask("paris", expect="ok", options="--show-passages --set pipeline.n_docs=100"),
    ask("paris", expect="error", spec_name="enc"),
    ask("paris", expect="error", spec_name="ret"),
    cli("ask", "ask {tmp}/missing.toml paris"),
    cli("ask", "ask {docs} paris"),
    # --- eval: the QA file ---
    qa_file(b""),
    qa_file(b"\n\n"),
    qa_file(random_bytes()),
    qa_file('{"question": "caf\xe9", "answers": ["x"]}\n'.encode("latin-1")),
    qa_file('[{"question": "q", "answers": ["a"]}]'),
    qa_file(jsonl({"question": "q"})),
    qa_file(jsonl({"question": "q", "answers": "paris"})),
    qa_file(jsonl({"question": "q", "answers": []})),
    qa_file(jsonl({"question": "q", "answers": [5]})),
    qa_file(jsonl({"question": 5, "answers": ["a"]})),
    qa_file(jsonl({"question": "", "answers": ["a"]})),
    qa_file(jsonl({"question": None, "answers": ["a"]})),
    qa_file(jsonl({"answers": ["a"]})),
    qa_file(jsonl(["q", ["a"]])),
    qa_file(jsonl({"question": "q\ud800", "answers": ["a"]})),
    qa_file('{"question": "q", "answers": ["a"]}\r{"question": "r", "answers": ["b"]}\r'),
    qa_file("question,answers\nparis,paris\n"),
    qa_file(deep(100_000)),
    qa_file(jsonl({"question": "q", "answers": ["a"], "title": 5}), expect="any"),
    qa_file(jsonl({"question": "x" * 1_000_000, "answers": ["a"]}), expect="any"),
    qa_file(jsonl({"question": "q", "answers": ["a"]}) * 2, expect="ok"),
    cli("eval --data", "eval {rag} --data {tmp}/missing.jsonl --out {tmp}/ev"),
    cli("eval --data", "eval {rag} --data {tmp} --out {tmp}/ev"),
    cli("eval --data", "eval {rag} --data {kb}/embeddings.npy --out {tmp}/ev"),
    # --- eval: options ---
    eval_with("--retrieval-only -k abc"),
    eval_with("--retrieval-only -k 0"),
    eval_with("--retrieval-only -k -1"),
    eval_with("--retrieval-only -k 1,,2"),
    eval_with("--retrieval-only -k ''"),
    eval_with("--retrieval-only -k ' '"),
    eval_with(f"--retrieval-only -k {HUGE}", expect="any"),
    eval_with("--retrieval-only -k 100", expect="any"),
    eval_with("--retrieval-only -k 1,1,1", expect="ok"),
    eval_with("--retrieval-only --limit 0"),
    eval_with("--retrieval-only --limit -1"),
    eval_with("--retrieval-only --limit abc", expect="usage"),
    eval_with(f"--retrieval-only --limit {HUGE}", expect="ok"),
    eval_with("--retrieval-only --sweep nokey"),
    eval_with("--retrieval-only --sweep =1,2"),
    eval_with("--retrieval-only --sweep pipeline.n_docs="),
    eval_with("--retrieval-only --sweep pipeline.n_docs=1,x"),
    eval_with("--retrieval-only --sweep pipeline.n_docs=1,,2"),
    eval_with("--retrieval-only --sweep pipeline.n_docs=1,1", expect="any"),
    eval_with("--retrieval-only --sweep nonsense.key=1,2"),
    eval_with("--retrieval-only --sweep retriever.index.type=hnsw,nope"),
    eval_with("--retrieval-only --sweep retriever.kb=/nonexistent"),
    eval_with("--retrieval-only --sweep retriever.kb=a/b,c"),
    eval_with("--retrieval-only --sweep retriever.index.type=faiss-exact,hnsw "
              "--sweep pipeline.n_docs=1,2", expect="ok"),
    eval_with("--retrieval-only --set retriever.index.type=nope"),
    eval_with("--retrieval-only --set generator.path=/nonexistent", expect="any"),
    eval_with("--limit 1", expect="ok"),
    eval_with("--retrieval-only", spec_name="enc"),
    eval_with("", spec_name="ret"),
    eval_with("--retrieval-only", expect="ok", spec_name="ret"),
    # --- eval: where it writes ---
    eval_out("{tmp}/qa.jsonl"),
    eval_out("{tmp}/spec.toml"),
    eval_out(USER, user_dir("user"), USER),
    eval_out("{tmp}/notes.txt", MINE, "{tmp}/notes.txt"),
    eval_out("{tmp}/link", LINKED_USER, f"{USER} {{tmp}}/link"),
    eval_out(".", cwd="{tmp}"),
    eval_out("", cwd="{tmp}"),
    eval_out("{tmp}"),
    eval_out("{tmp}/qa.jsonl/ev"),
    eval_out("{tmp}/kb", copy("kb", "kb"), "{tmp}/kb"),
    eval_out("{tmp}/bert", copy("bert", "bert"), "{tmp}/bert"),
    # --- kb build: the documents ---
    documents("empty.jsonl", b""),
    documents("blank.jsonl", b"\n\n  \n"),
    documents("huge.jsonl", repeated(b'{"text": "', b"paris ", 1_000_000, b'"}\n'), expect="ok"),
    documents("words.jsonl", repeated(b'{"text": "', b"paris ", 2_000, b'"}\n'), "--split-words 1",
              expect="ok"),
    documents("binary.jsonl", random_bytes()),
    documents("latin1.jsonl", '{"text": "caf\xe9"}\n'.encode("latin-1")),
    documents("utf16.jsonl", jsonl({"text": "paris"}).encode("utf-16")),
    documents("bom.jsonl", b"\xef\xbb\xbf" + jsonl({"text": "paris"}).encode(), expect="any"),
    documents("mac.jsonl", b'{"text": "a"}\r{"text": "b"}\r'),
    documents("crlf.jsonl", b'{"text": "a"}\r\n{"text": "b"}\r\n', expect="ok"),
    documents("notes.txt", jsonl({"text": "paris"})),
    documents("docs.json", jsonl({"text": "paris"}), expect="any"),
    documents("docs.parquet", random_bytes()),
    documents("docs", jsonl({"text": "paris"})),
    documents("DOCS.JSONL", jsonl({"text": "paris"}), expect="any"),
    documents("docs.jsonl.gz", random_bytes()),
    documents("text5.jsonl", jsonl({"text": 5})),
    documents("textnull.jsonl", jsonl({"text": None})),
    documents("textlist.jsonl", jsonl({"text": ["a", "b"]})),
    documents("textdict.jsonl", jsonl({"text": {"a": 1}})),
    documents("textempty.jsonl", jsonl({"text": ""})),
    documents("textspace.jsonl", jsonl({"text": "   "})),
    documents("title5.jsonl", jsonl({"text": "paris", "title": 5})),
    documents("idlist.jsonl", jsonl({"text": "paris", "id": [1]})),
    documents("dupid.jsonl", jsonl({"text": "a", "id": 1}, {"text": "b", "id": 1}), expect="any"),
    documents("list.jsonl", jsonl(["paris"])),
    documents("string.jsonl", jsonl("paris")),
    documents("null.jsonl", "null\n"),
    documents("open.jsonl", "{\n"),
    documents("comma.jsonl", '{"text": "paris",}\n'),
    documents("nan.jsonl", '{"text": "paris", "score": NaN}\n', expect="any"),
    documents("deep.jsonl", deep(100_000)),
    documents("surrogate.jsonl", '{"text": "paris \\ud800"}\n'),
    documents("nul.jsonl", '{"text": "paris \\u0000 france"}\n', expect="any"),
    documents("nulbyte.jsonl", b'{"text": "paris"}\n\x00\x00\n'),
    documents("quote.csv", 'id,text\n1,"unbalanced\n'),
    documents("header.csv", "id,text,title\n"),
    documents("notext.csv", "id,title\n1,paris\n"),
    documents("extra.csv", "id,text\n1,paris,france,more\n", expect="any"),
    documents("short.csv", "id,text,title\n1\n"),
    documents("bigfield.csv", repeated(b"id,text\n1,", b"a", 200_000, b"\n"), expect="ok"),
    documents("nul.csv", b"id,text\n1,par\x00is\n"),
    documents("latin1.csv", "id,text\n1,caf\xe9\n".encode("latin-1")),
    documents("quoted.csv", 'id,text\n1,"a ""quoted"" word, a comma\nand a newline"\n', "", "ok"),
    documents("semicolon.csv", "id;text\n1;paris\n"),
    documents("dpr.tsv", "id\ttext\ttitle\n1\tparis\n", expect="any"),
    documents("noheader.tsv", "1\tparis\tfrance\n", expect="any"),
    documents("comma.tsv", "id,text\n1,paris\n"),
    documents("docs.jsonl", jsonl({"text": "paris"}), "--format csv", expect="any"),
    documents("docs.csv", "id,text\n1,paris\n", "--format jsonl"),
    documents("docs.csv", "id,text\n1,paris\n", "--format tsv", expect="any"),
    documents("docs.jsonl", jsonl({"text": "paris"}), "--format xml", expect="usage"),
    cli("kb build inputs", "kb build {tmp}/missing.jsonl --spec {enc} --out {tmp}/out"),
    cli("kb build inputs", "kb build {tmp} --spec {enc} --out {tmp}/out"),
    cli("kb build inputs", "kb build /dev/null --spec {enc} --out {tmp}/out"),
    cli("kb build inputs", "kb build '' --spec {enc} --out {tmp}/out"),
    cli("kb build inputs", "kb build {kb} --spec {enc} --out {tmp}/out"),
    cli("kb build inputs", "kb build {docs}/x.jsonl --spec {enc} --out {tmp}/out"),
    # --- kb build: options ---
    kb_option("--split-words 0", expect="ok"),
    kb_option("--split-words -1"),
    kb_option("--split-words 1", expect="ok"),
    kb_option(f"--split-words {HUGE}", expect="any"),
    kb_option("--split-words abc", expect="usage"),
    kb_option("--batch-size 0"),
    kb_option("--batch-size -5"),
    kb_option(f"--batch-size {HUGE}", expect="any"),
    kb_option("--batch-size 1", expect="ok"),
    kb_option("--batch-size abc", expect="usage"),
    kb_option("--flush-seconds -1"),
    kb_option("--flush-seconds nan", expect="any"),
    kb_option("--flush-seconds inf", expect="any"),
    kb_option("--dtype float64", expect="usage"),
    kb_option("--dtype float16", expect="ok"),
    kb_option("--chunk-size 0"),
    kb_option("--num-cpus 0"),
    kb_option("--force", expect="ok"),
    kb_option("--no-wait", expect="ok"),
    kb_option("--set encoder.pooling=nope"),
    kb_option("--set encoder.path=/nonexistent"),
    kb_option("--set noequals"),
    kb_option("--ray --address ray://127.0.0.1:1", expect="any"),
    cli("kb build options", "kb build {docs} --spec {tmp}/missing.toml --out {tmp}/out"),
    cli("kb build options", "kb build {docs} --spec {docs} --out {tmp}/out"),
    cli("kb build options", BUILD_WITH_SPEC, "any", file("spec.toml", NO_ENCODER)),  # bm25 KB
    cli("kb build options", BUILD_WITH_SPEC, setup=spec("enc", ('path = "', 'path = "{docs}"\n#'))),
    # --- kb build: where it writes ---
    kb_out("{tmp}/docs.jsonl"),
    kb_out(USER, user_dir("user"), USER),
    kb_out(USER, user_dir("user"), USER, options="--force"),
    kb_out("{tmp}/notes.txt", MINE, "{tmp}/notes.txt"),
    kb_out("{tmp}/notes.txt", MINE, "{tmp}/notes.txt", options="--force"),
    kb_out("{tmp}/link", LINKED_USER, f"{USER} {{tmp}}/link"),
    kb_out("{tmp}/dangling", link("dangling", "{tmp}/nowhere"), "{tmp}/dangling"),
    kb_out("{tmp}/kblink", link("kblink", "{kb}"), "{kb} {tmp}/kblink"),
    kb_out(".", cwd="{tmp}"),
    kb_out("", cwd="{tmp}"),
    kb_out("{tmp}"),
    kb_out("{tmp}/docs.jsonl/kb"),
    kb_out("{tmp}/a/b/c", expect="any"),
    kb_out("{enc}", protect="{enc}"),
    kb_out("{tmp}/bert", copy("bert", "bert"), "{tmp}/bert"),
    kb_out("{tmp}/bert", copy("bert", "bert"), "{tmp}/bert", options="--force"),
    kb_out("{tmp}/empty", mkdir("empty"), expect="ok"),
    kb_out("{tmp}/hidden", file("hidden/.keep", ""), "{tmp}/hidden"),
    kb_out("{tmp}/other", copy("other_kb", "other"), "{tmp}/other"),
    kb_out("{tmp}/other", copy("other_kb", "other"), expect="ok", options="--force"),
    kb_out("{tmp}/ragkb", copy("ragkb", "ragkb"), "{tmp}/ragkb"),
    kb_out("{tmp}/same", copy("kb", "same"), expect="ok"),
    kb_out("{tmp}/hf", HF_COPY, "{tmp}/hf"),
    kb_out("{tmp}/hf", HF_COPY, "{tmp}/hf", options="--force"),
    kb_out("{tmp}/kb/indexes", copy("kb", "kb"), "{tmp}/kb"),
    kb_out("/proc/version", protect="/proc/version"),
    # --- kb info ---
    kb_info("{tmp}/missing"),
    kb_info("{docs}"),
    kb_info("{tmp}"),
    kb_info(USER, user_dir("user"), protect=USER),
    kb_info("{bert}"),
    kb_info("{hf}"),
    kb_info(""),
    kb_info("{kb}", expect="ok"),
    kb_info("{tmp}/link", link("link", "{kb}"), expect="any"),
    cli("kb info", "kb info kb", "ok", copy("kb", "kb"), cwd="{tmp}"),
    damaged_kb(file("kb/manifest.json", b"")),
    damaged_kb(file("kb/manifest.json", b"{")),
    damaged_kb(file("kb/manifest.json", b"[]")),
    damaged_kb(file("kb/manifest.json", random_bytes())),
    damaged_kb(file("kb/manifest.json", '{"format": "ragloom-kb", "version": 99}')),
    damaged_kb(file("kb/manifest.json", '{"format": "something-else", "version": 1}')),
    damaged_kb(file("kb/embeddings.npy", b"")),
    damaged_kb(file("kb/passages.arrow", b"")),
    damaged_kb(file("kb/passages.arrow", random_bytes(8426))),
    damaged_kb(remove("kb/embeddings.npy")),
    damaged_kb(remove("kb/manifest.json")),
    damaged_kb(remove("kb/indexes/hnsw*/index")),
    damaged_kb(remove("kb/indexes/hnsw*/manifest.json"), expect="any"),
    damaged_kb(mkdir("kb/indexes/stray"), expect="ok"),
    damaged_kb(manifest_edit(count=-1)),
    damaged_kb(manifest_edit(dim=0)),
    damaged_kb(manifest_edit(count=10**12)),
    damaged_kb(manifest_edit(embeddings_dtype="int8")),
    damaged_kb(manifest_edit(files={"../../etc/passwd": {"size": 1, "xxh3_128": "0"}})),
    # --- kb import-hf / export-hf ---
    hf("import-hf {tmp}/missing --out {tmp}/out"),
    hf("import-hf {docs} --out {tmp}/out"),
    hf("import-hf {tmp}/empty --out {tmp}/out", mkdir("empty")),
    hf("import-hf {tmp}/user --out {tmp}/out", user_dir("user"), USER),
    hf("import-hf {kb} --out {tmp}/out", protect="{kb}"),
    hf("import-hf {hf}/passages --out {tmp}/out", expect="ok"),
    hf("import-hf {hf}/passages --index {tmp}/missing.faiss --out {tmp}/out"),
    hf("import-hf {hf}/passages --index {docs} --out {tmp}/out"),
    hf("import-hf {hf}/passages --index {hf} --out {tmp}/out"),
    hf("import-hf {hf}/passages --index {kb}/indexes/faiss-exact/index/index.faiss --out {tmp}/o",
       expect="any"),
    hf("import-hf {hf}/passages --index {hf}/index.faiss --spec {enc} --out {tmp}/out"),
    hf("import-hf {hf}/passages --index {hf}/index.faiss --spec {rag} --out {tmp}/o", expect="ok"),
    hf("import-hf {tmp}/hf/passages --out {tmp}/hf/passages", HF_COPY, "{tmp}/hf"),
    hf("import-hf {tmp}/hf/passages --out {tmp}/hf", HF_COPY, "{tmp}/hf"),
    hf("import-hf {tmp}/hf/passages --index {tmp}/hf/index.faiss --out {tmp}/hf/index.faiss",
       HF_COPY, "{tmp}/hf"),
    hf("import-hf {tmp}/hf/passages --out {tmp}/hf/passages/x", HF_COPY, "{tmp}/hf", "any"),
    hf("import-hf {hf}/passages --out {tmp}/user", user_dir("user"), USER),
    hf("import-hf {hf}/passages --out {tmp}/notes.txt", MINE, "{tmp}/notes.txt"),
    hf("import-hf {hf}/passages --out {tmp}/kb", copy("kb", "kb"), "{tmp}/kb"),
    hf("import-hf {hf}/passages --out {tmp}/link", LINKED_USER, USER),
    hf("export-hf {tmp}/missing --out {tmp}/out"),
    hf("export-hf {docs} --out {tmp}/out"),
    hf("export-hf {bert} --out {tmp}/out"),
    hf("export-hf {kb} --out {kb}", protect="{kb}"),
    hf("export-hf {tmp}/kb --out {tmp}/kb/export", copy("kb", "kb"), "{tmp}/kb", expect="any"),
    hf("export-hf {kb} --out {tmp}/user", user_dir("user"), USER),
    hf("export-hf {kb} --out {tmp}/notes.txt", MINE, "{tmp}/notes.txt"),
    hf("export-hf {kb} --out {tmp}/link", LINKED_USER, USER),
    hf("export-hf {kb} --out {tmp}/kb2", copy("kb", "kb2"), "{tmp}/kb2"),
    hf("export-hf {kb} --out {tmp}/hf", copy("hf", "hf"), expect="ok"),
    hf("export-hf {kb} --out {tmp}/a/b/c", expect="any"),
    cli("kb import/export", "kb export-hf {kb} --out .", "error", KB_COPY, "{tmp}/kb", "{tmp}/kb"),
    cli("kb import/export", "kb export-hf kb --out exported", "ok", copy("kb", "kb"), cwd="{tmp}"),
    # --- index build ---
    index_build("--type nope"),
    index_build("--type ''"),
    index_build("--type hnws"),
    index_build("--type dense"),
    index_build("--type ../../x"),
    index_build("--type hnsw --param noequals"),
    index_build("--type hnsw --param M=x"),
    index_build("--type hnsw --param M=-1"),
    index_build("--type hnsw --param M=0"),
    index_build("--type hnsw --param M=1", expect="any"),
    index_build("--type hnsw --param M=100000", expect="any"),
    index_build("--type hnsw --param M=1e3"),
    index_build("--type hnsw --param M=true"),
    index_build("--type hnsw --param ef_construction=0"),
    index_build("--type hnsw --param nope=1"),
    index_build("--type hnsw --param type=faiss-exact"),
    index_build("--type faiss-compressed --param factory=garbage"),
    index_build("--type faiss-compressed --param factory=IVF1000,PQ8", expect="any"),
    index_build("--type faiss-compressed --param factory=IVF4,PQ7"),
    index_build("--type faiss-compressed --param factory=IDMap,Flat", expect="any"),
    index_build("--type faiss-compressed --param nprobe=0"),
    index_build("--type faiss-hnsw --param M=x"),
    index_build("--type faiss-exact --shards 0"),
    index_build("--type faiss-exact --shards -2"),
    index_build(f"--type faiss-exact --shards {HUGE}"),
    index_build("--type faiss-exact --shards 41"),
    index_build("--type faiss-exact --shards 40", expect="ok"),
    index_build("--type faiss-exact --shards x", expect="usage"),
    index_build("--type faiss-exact --ray"),
    index_build("--type faiss-exact --input {docs}"),
    index_build("--type faiss-exact --input {tmp}/missing.jsonl --spec {enc}"),
    index_build("--type faiss-exact --input {docs} --spec {rag}"),
    index_build("--type faiss-exact --input {other_docs} --spec {enc}"),
    index_build("--type hnsw", expect="ok"),
    cli("index build", "index build {tmp}/missing --type hnsw"),
    cli("index build", "index build {docs} --type hnsw"),
    cli("index build", "index build {tmp}/user --type hnsw", "error", user_dir("user"), USER),
    cli("index build", "index build {hf} --type hnsw", protect="{hf}"),
    cli("index build", "index build {kb}", "usage"),
    cli("index build", "index build kb --type hnsw", "ok", BARE_KB, cwd="{tmp}"),
    cli("index build", "index build kb --type faiss-exact", "ok", BARE_KB, cwd="{tmp}"),
    cli("index build", "index build ./kb/ --type faiss-hnsw", "ok", BARE_KB, cwd="{tmp}"),
    cli("index build", "index build {tmp}/kb --type hnsw", "error", LINKED_OUT, "{tmp}/outside"),
    # --- index compare ---
    compare("--types faiss-exact -k 0"),
    compare("--types faiss-exact -k -1"),
    compare(f"--types faiss-exact -k {HUGE}"),
    compare("--types faiss-exact -k 41"),
    compare("--types faiss-exact -k 40", expect="ok"),
    compare("--types faiss-exact -k x", expect="usage"),
    compare("--types ''"),
    compare("--types ',, ,'"),
    compare("--types nope"),
    compare("--types hnsw,nope"),
    compare("--types faiss-exact,faiss-exact", expect="any"),
    compare("--types faiss-exact --param M=x", expect="any"),
    compare("--types hnsw --param M=x"),
    compare("--types faiss-exact --num-queries 0"),
    compare("--types faiss-exact --num-queries -1"),
    compare("--types faiss-exact --queries {tmp}/missing.npy"),
    compare("--types faiss-exact --queries {docs}"),
    compare("--types faiss-exact --queries {tmp}/q.npy", file("q.npy", b"")),
    compare("--types faiss-exact --queries {tmp}/q.npy", file("q.npy", random_bytes())),
    compare("--types faiss-exact --queries {tmp}/q.npz", NPZ),
    queries(lambda: np.array([{"a": 1}], dtype=object), pickle=True),
    queries(lambda: np.zeros((3, 5), np.float32)),
    queries(lambda: np.zeros(32, np.float32)),
    queries(lambda: np.zeros((0, 32), np.float32)),
    queries(lambda: np.full((4, 32), np.nan, np.float32)),
    queries(lambda: np.ones((4, 32), np.float64), expect="any"),
    queries(lambda: np.ones((4, 32), np.int64), expect="any"),
    queries(lambda: np.ones((2, 4, 32), np.float32)),
    compare_plot("{tmp}"),
    compare_plot("{tmp}/a/b/p.png", expect="any"),
    compare_plot("{tmp}/notes.txt", MINE, "{tmp}/notes.txt"),
    compare_plot("{tmp}/kb/manifest.json", protect="{tmp}/kb"),
    compare_plot("{tmp}/kb/passages.arrow/p.png", protect="{tmp}/kb"),
    compare_plot("{tmp}/link.png", LINKED_PHOTO, "{tmp}/photo.png"),
    compare_plot("{tmp}/p.txt", expect="any"),
    compare_plot(""),
    cli("index compare", "index compare {tmp}/missing --types faiss-exact --plot {tmp}/p.png"),
    cli("index compare", "index compare {docs} --types faiss-exact --plot {tmp}/p.png"),
    cli("index compare", "index compare kb --types faiss-exact,hnsw --num-queries 20 --plot p.png",
        "ok", BARE_KB, cwd="{tmp}"),
    # --- train ---
    train_data(b""),
    train_data(random_bytes()),
    train_data("not json\n"),
    train_data(jsonl({"question": "q"})),
    train_data(jsonl({"question": "q", "answers": []})),
    cli("train", "train {train} --data {tmp}/missing.jsonl --out {tmp}/run"),
    cli("train", "train {train} --data {tmp} --out {tmp}/run"),
    cli("train", "train {train} --data {qa} --dev {tmp}/missing.jsonl --out {tmp}/run"),
    cli("train", "train {train} --data {qa} --dev {docs} --out {tmp}/run"),
    cli("train", "train {enc} --data {qa} --out {tmp}/run"),
    cli("train", "train {ret} --data {qa} --out {tmp}/run"),
    cli("train", "train {train} --data {qa} --out {tmp}/run", "ok"),
    train_set("train.learning_rate=0"),
    train_set("train.learning_rate=-1"),
    train_set("train.learning_rate=fast"),
    train_set("train.learning_rate=nan"),
    train_set("train.optimizer=adagrad"),
    train_set("train.train=[]"),
    train_set('train.train=["decoder"]'),
    train_set("train.train=generator"),
    train_set("train.batch_size=0"),
    train_set("train.max_steps=0"),
    train_set("train.epochs=0"),
    train_set("train.label_smoothing=1.0"),
    train_set("train.device=tpu"),
    train_set("train.device=cuda"),
    train_set("train.schedule=exponential"),
    train_set("train.best_metric=bleu"),
    train_set("train.nope=1"),
    train_set("train.save_every=0"),
    train_set("train.gradient_accumulation=0"),
    train_set("train.n_docs=1000", expect="any"),
    train_set("train=3"),
    # --- train: where it writes ---
    train_out("{tmp}/qa.jsonl"),
    train_out("{tmp}/spec.toml"),
    train_out(USER, user_dir("user"), USER),
    train_out("{tmp}/notes.txt", MINE, "{tmp}/notes.txt"),
    train_out("{tmp}/link", LINKED_USER, USER),
    train_out(".", cwd="{tmp}"),
    train_out("{tmp}/kb", copy("kb", "kb"), "{tmp}/kb"),
    train_out("{tmp}/ckpt", copy("ckpt", "ckpt"), "{tmp}/ckpt"),
]
# fmt: on


# --- the Python API ------------------------------------------------------------------------------

API_CASES = [
    Case("api", Api(code), expect)
    for code, expect in [
        ("Pipeline.from_spec({})", "error"),
        ("Pipeline.from_spec({'schema': 1})", "ok"),
        ("Pipeline.from_spec({'schema': '1'})", "error"),
        ("Pipeline.from_spec({'schema': 1, 'pipeline': 3})", "error"),
        ("Pipeline.from_spec({'schema': 1, 'nonsense': {}})", "error"),
        ("Pipeline.from_spec({'schema': 1, 'pipeline': {'n_docs': float('nan')}})", "error"),
        ("Pipeline.from_spec({'schema': 1, 'encoder': {'type': object()}})", "error"),
        ("Pipeline.from_spec({1: 2})", "error"),
        ("Pipeline.from_spec(None)", "error"),
        ("Pipeline.from_spec(42)", "error"),
        ("Pipeline.from_spec(b'schema = 1')", "error"),
        ("Pipeline.from_spec('/nonexistent.toml')", "error"),
        ("Pipeline.from_spec(RAG, {'pipeline.n_docs': 'x'})", "error"),
        ("Pipeline.from_spec(RAG, {'pipeline.n_docs': None})", "error"),
        ("Pipeline.from_spec(RAG, {'pipeline.n_docs': True})", "error"),
        ("Pipeline.from_spec(RAG, {'': 1})", "error"),
        ("Pipeline.from_spec(RAG, {'pipeline..n_docs': 1})", "error"),
        ("Pipeline.from_spec(RAG, {5: 1})", "error"),
        ("Pipeline.from_spec(RAG, [('pipeline.n_docs', 1)])", "error"),
        ("Pipeline.from_spec(RAG, 'pipeline.n_docs=1')", "error"),
        ("Pipeline.from_spec(RAG, {'retriever.index': 3})", "error"),
        ("rag.retrieve([])", "ok"),
        ("rag.generate([])", "ok"),
        ("rag.retrieve(['paris'], k=0)", "error"),
        ("rag.retrieve(['paris'], k=-1)", "error"),
        ("rag.retrieve(['paris'], k=True)", "error"),
        ("rag.retrieve(['paris'], k=2.5)", "error"),
        ("rag.retrieve(['paris'], k='3')", "error"),
        ("rag.retrieve(['paris'], k=10**9)", "any"),
        ("rag.retrieve(['paris'], k=10**30)", "error"),
        ("rag.retrieve(['paris'], k=100)", "ok"),
        ("rag.retrieve([None])", "error"),
        ("rag.retrieve([5])", "error"),
        ("rag.retrieve([b'paris'])", "error"),
        ("rag.retrieve('paris')", "any"),
        ("rag.retrieve(None)", "error"),
        ("rag.retrieve(5)", "error"),
        ("rag.retrieve(['paris \\ud800'])", "error"),
        ("rag.retrieve(['x' * 1_000_000])", "any"),
        ("rag.retrieve([''])", "any"),
        ("rag.generate([None])", "error"),
        ("rag.generate([['paris']])", "error"),
        ("rag.generate(['paris \\ud800'])", "error"),
        ("rag.generate(['paris ' * 100_000])", "any"),
        ("rag.generate([''])", "any"),
        ("rag.generate(['paris'] * 64)", "ok"),
        ("rag.generate(['paris'], max_length=0)", "error"),
        ("rag.generate(['paris'], max_length=-1)", "error"),
        ("rag.generate(['paris'], num_beams=0)", "error"),
        ("rag.generate(['paris'], num_beams=True)", "error"),
        ("rag.generate(['paris'], nonsense=1)", "error"),
        ("rag.generate(['paris'], max_length=10**12)", "error"),
        ("rag.loss(['paris'], [])", "error"),
        ("rag.loss([], [])", "any"),
        ("rag.loss(['paris'], [None])", "error"),
        ("ret.generate(['paris'])", "error"),
        ("ret.retrieve(['paris'], k=40)", "ok"),
        ("ret.retrieve(['paris'], k=41)", "any"),
        ("ret.share(rag, 'generator').generate(['paris'])", "any"),
        ("ret.share(rag, 'nonsense')", "error"),
        ("ret.share(None, 'encoder')", "error"),
    ]
]


def run_api(cases: list[Case], fx: Fixtures) -> list[Outcome]:
    """Every API case in one helper process (started again if a case kills it)."""
    helper = Ragloom(fx.root / "cwd")
    specs = {"rag": str(fx["rag"]), "ret": str(fx["ret"])}
    outcomes = []
    for case in cases:
        started = time.monotonic()
        rc, stderr = helper.request({"code": case.what.code, "specs": specs})  # type: ignore[union-attr]
        outcome = Outcome(case.label, case.expect, rc, stderr, seconds=time.monotonic() - started)
        outcomes.append(outcome)
    helper.close()
    return outcomes


# --- injected faults, each with real processes --------------------------------------------------


def step(
    label: str,
    expect: str,
    argv: list[Any],
    watch: list[Path],
    outs: Sequence[Path] = (),
    **options: Any,
) -> Outcome:
    """One real ``ragloom`` process, checked like a CLI case."""
    checked = Checked([], list(outs), watch)
    rc, stderr = ragloom_process(argv, **options)
    return checked.finish(Outcome(label, expect, rc, stderr))


def verified(label: str, kb: Path, watch: list[Path]) -> Outcome:
    return step(f"{label}, then kb info --verify", "ok", ["kb", "info", kb, "--verify"], watch)


def flip_byte(path: Path, seed: int = 0) -> None:
    data = bytearray(path.read_bytes())
    position = random.Random(seed).randrange(len(data) // 4, len(data))
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def retrieval_spec(fx: Fixtures, path: Path, kb: Path, index_type: str) -> Path:
    text = fx.texts["enc"] + RETRIEVAL_TABLES.format(kb=kb).replace('"hnsw"', f'"{index_type}"')
    path.write_text(text, encoding="utf-8")
    return path


def flipped(index_type: str | None) -> Fault:
    """A byte flipped in each file of the KB (or of one of its indexes), in a copy each time;
    then ``kb info --verify`` (a process) and a retrieval that loads the index (in the helper
    process, which a crash would kill)."""

    def run(fx: Fixtures, tmp: Path) -> list[Outcome]:
        where = (
            fx["kb"] if index_type is None else next((fx["kb"] / "indexes").glob(f"{index_type}*"))
        )
        names = sorted(
            str(p.relative_to(fx["kb"]))
            for p in where.rglob("*")
            if p.is_file() and not p.name.startswith(".")
            and (index_type is not None or "indexes" not in p.relative_to(fx["kb"]).parts)
        )  # fmt: skip
        outcomes = []
        for number, name in enumerate(names):
            kb = tmp / f"kb{number}"
            shutil.copytree(fx["kb"], kb)
            flip_byte(kb / name)
            spec_path = retrieval_spec(fx, tmp / f"spec{number}.toml", kb, index_type or "hnsw")
            watch = [kb]
            outcomes.append(step(f"byte flipped in {name}: kb info --verify", "error",
                                 ["kb", "info", kb, "--verify"], watch))  # fmt: skip
            load = ["eval", spec_path, "--data", fx["qa"], "--retrieval-only", "--limit", "1",
                    "--out", tmp / f"ev{number}"]  # fmt: skip
            label = f"byte flipped in {name}: eval --retrieval-only ({index_type or 'hnsw'})"
            checked = Checked([], [], watch)
            rc, stderr = fx.helper.run([str(arg) for arg in load])  # in the helper: quicker
            outcomes.append(checked.finish(Outcome(label, "any", rc, stderr)))
        return outcomes

    return Fault(f"byte flips in {index_type or 'the KB files'}", run)


def size_limited(command: str, limit: int) -> Fault:
    """The command under ``ulimit -f`` (``limit`` bytes): rc 1 with nothing written (a KB
    build's staging may stay, to resume from); for an index, a retrieval that loads what was
    written; then the same command without the limit finishes, and what it wrote verifies."""

    def run(fx: Fixtures, tmp: Path) -> list[Outcome]:
        kb, out = tmp / "kb", tmp / "out"
        index_type = command.split()[-1]
        argv: list[Any]
        if command == "kb build":
            documents = write_documents(tmp / "words.jsonl", 600, words=1)
            argv, out = ["kb", "build", documents, "--spec", fx["enc"], "--out", kb], kb
        elif command.startswith("index build"):
            shutil.copytree(fx["kb"], kb, ignore=shutil.ignore_patterns("indexes"))
            argv = ["index", "build", kb, "--type", index_type]
        elif command == "kb export-hf":
            argv = ["kb", "export-hf", fx["kb"], "--out", out]
        else:  # train
            argv = ["train", fx["train"], "--data", fx["qa"], "--out", out]
        label = f"ulimit -f {limit} bytes: ragloom {command}"
        watch = [tmp, kb / "indexes"]
        checked = Checked([], [out], watch, resumable=command == "kb build")
        rc, stderr = ragloom_process(argv, preexec_fn=limits(limit))
        results = [checked.finish(Outcome(label, "error", rc, stderr))]
        if command.startswith("index build"):
            spec_path = retrieval_spec(fx, tmp / "spec.toml", kb, index_type)
            load = ["eval", spec_path, "--data", fx["qa"], "--retrieval-only", "--out", tmp / "ev"]
            results.append(step(f"{label}, then a retrieval with that index", "any", load, watch))
        results.append(step(f"{label}, then again without the limit", "ok", argv, watch, [out]))
        if command in ("kb build",) or command.startswith("index build"):
            results.append(verified(label, kb, watch))
        return results

    return Fault(f"ulimit -f {limit}: {command}", run)


def staging_progress(out: Path) -> int:
    try:
        progress = json.loads((out.parent / f".{out.name}.building" / "progress.json").read_text())
        return int(progress["batches_done"])
    except (OSError, ValueError, KeyError):
        return 0


def kill_when(
    argv: list[Any], ready: Callable[[], bool], sig: int = signal.SIGKILL
) -> tuple[int | None, str]:
    """Start ``ragloom ARGV``, send ``sig`` as soon as ``ready()``; its status and stderr."""
    command = [sys.executable, "-m", "ragloom.cli", *map(str, argv)]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=ENVIRONMENT, preexec_fn=limits()
        )
        deadline = time.monotonic() + CASE_SECONDS
        while not ready() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        finished_first = process.poll() is not None
        if not finished_first:
            process.send_signal(sig)
        rc = process.wait()
        stderr.seek(0)
        text = stderr.read().decode(errors="replace")
    return rc, text + ("\n(finished before the signal)" if finished_first else "")


def has_staging(directory: Path) -> Callable[[], bool]:
    return lambda: bool(leftovers([directory]))


@dataclass
class Writer:
    """A command that writes an artifact, prepared in a case's directory: its command line,
    when it is mid-write (for a kill), and the KB to verify afterwards."""

    argv: list[Any]
    mid_write: Callable[[], bool]
    kb: Path | None = None


def writer(command: str, fx: Fixtures, tmp: Path) -> Writer:
    kb = tmp / "kb"
    if command == "kb build":  # 800 one-word documents over a copy of the KB: a rebuild
        shutil.copytree(fx["kb"], kb)
        documents = write_documents(tmp / "many.jsonl", 800, words=1)
        argv = ["kb", "build", documents, "--spec", fx["enc"], "--out", kb, "--force"]
        argv += ["--batch-size", "8", "--flush-seconds", "0"]
        return Writer(argv, lambda: staging_progress(kb) >= 5, kb)
    if command == "index build":
        shutil.copytree(fx["kb"], kb, ignore=shutil.ignore_patterns("indexes"))
        argv = ["index", "build", kb, "--type", "faiss-hnsw", "--param", "M=8"]
        return Writer(argv, has_staging(kb / "indexes"), kb)
    if command == "kb export-hf":
        return Writer(["kb", "export-hf", fx["kb"], "--out", tmp / "export"], has_staging(tmp))
    if command == "eval":
        argv = ["eval", fx["rag"], "--data", fx["qa"], "--out", tmp / "ev"]
        return Writer(argv, (tmp / "ev").exists)
    spec_path = tmp / "train.toml"  # train
    spec_path.write_text(fx.texts["train"].replace("max_steps = 1", "max_steps = 6"))
    argv = ["train", spec_path, "--data", fx["qa"], "--out", tmp / "run"]
    return Writer(argv, (tmp / "run").exists)


WRITERS = ("kb build", "index build", "kb export-hf", "eval", "train")


def killed(command: str, sig: int = signal.SIGKILL) -> Fault:
    """``command`` sent ``sig`` mid-write (SIGKILL is the fault itself; SIGINT and SIGTERM
    should end in rc 1); the artifact before it still verifies, and the same command run
    again finishes and leaves nothing behind."""
    name = signal.Signals(sig).name

    def run(fx: Fixtures, tmp: Path) -> list[Outcome]:
        job = writer(command, fx, tmp)
        rc, stderr = kill_when(job.argv, job.mid_write, sig)
        label = f"{name} mid-{command} ({status_of_signal(rc)})"
        if "finished before the signal" in stderr:
            label += " (it finished before the signal)"
        outcomes = [] if rc == -signal.SIGKILL else [Outcome(label, "error", rc, stderr)]
        watch = [tmp, *([job.kb / "indexes"] if job.kb else [])]
        if job.kb:
            outcomes.append(verified(label, job.kb, []))
        outcomes.append(step(f"{label}, then the same command again", "ok", job.argv, watch))
        if job.kb:
            outcomes.append(verified(f"{label}, rerun", job.kb, watch))
        return outcomes

    return Fault(f"{name} mid-{command}", run)


def together(command: str, no_wait: bool = False) -> Fault:
    """Two processes of ``command`` at once on one output: both end in rc 0 (the second waits)
    or, with ``--no-wait``, one may refuse; the output verifies and nothing is left behind."""
    title = f"two at once: ragloom {command}{' --no-wait' if no_wait else ''}"

    def run(fx: Fixtures, tmp: Path) -> list[Outcome]:
        job = writer(command, fx, tmp)
        argv = [str(arg) for arg in job.argv] + (["--no-wait"] if no_wait else [])
        command_line = [sys.executable, "-m", "ragloom.cli", *argv]
        processes = [
            subprocess.Popen(
                command_line,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=ENVIRONMENT,
                preexec_fn=limits(),
            )
            for _ in range(2)
        ]
        outcomes = []
        for number, process in enumerate(processes, start=1):
            try:
                _, stderr = process.communicate(timeout=CASE_SECONDS * 2)
            except subprocess.TimeoutExpired:
                process.kill()
                _, stderr = process.communicate()
            rc = None if process.returncode == -signal.SIGKILL else process.returncode
            expect = "any" if no_wait else "ok"
            outcomes.append(Outcome(f"{title} (process {number})", expect, rc, stderr.decode()))
        watch = [tmp, *([job.kb / "indexes"] if job.kb else [])]
        outcomes[-1].half_written += sorted(leftovers(watch))
        if job.kb:
            outcomes.append(verified(title, job.kb, watch))
        return outcomes

    return Fault(title, run)


def closed_pipe(argv: list[str]) -> Fault:
    """``ragloom ... | head -0``: stdout closed before the command writes."""

    def run(fx: Fixtures, tmp: Path) -> list[Outcome]:
        command = [sys.executable, "-m", "ragloom.cli", *(fx.substitute(a, tmp) for a in argv)]
        read, write = os.pipe()
        os.close(read)
        with tempfile.TemporaryFile() as stderr:
            rc = subprocess.call(
                command, stdout=write, stderr=stderr, env=ENVIRONMENT, preexec_fn=limits()
            )
            os.close(write)
            stderr.seek(0)
            text = stderr.read().decode(errors="replace")
        label = f"stdout closed: ragloom {' '.join(argv)}"
        return [Outcome(label, "any", rc, text)]

    return Fault(f"stdout closed: {' '.join(argv)}", run)


def undecodable(
    label: str,
    argv: list[str | bytes],
    setup: Callable[[Fixtures, Path], None] | None = None,
    expect: str = "any",
) -> Fault:
    """A command line with bytes that are not UTF-8 (a file name or a question)."""

    def run(fx: Fixtures, tmp: Path) -> list[Outcome]:
        if setup:
            setup(fx, tmp)
        names = {"tmp": str(tmp), **{k: str(v) for k, v in fx.paths.items()}}
        command = [
            re.sub(rb"\{(\w+)\}", lambda m: os.fsencode(names.get(m[1].decode(), "?")), arg)
            if isinstance(arg, bytes) else fx.substitute(arg, tmp)
            for arg in argv
        ]  # fmt: skip
        rc, stderr = ragloom_process(command)
        return [Outcome(f"non-UTF-8: {label}", expect, rc, stderr)]

    return Fault(f"non-UTF-8: {label}", run)


def full_disk(fx: Fixtures, tmp: Path) -> list[Outcome]:
    """``kb build`` onto a 256 KiB tmpfs (where this machine lets us mount one)."""
    mount = tmp / "disk"
    mount.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    ).returncode:
        return []
    try:
        documents = write_documents(tmp / "many.jsonl", 3000)
        argv = ["kb", "build", documents, "--spec", fx["enc"], "--out", mount / "kb"]
        return [step("full disk (256 KiB tmpfs): kb build", "error", argv, [mount], [mount / "kb"])]
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def write_in(name: str, content: bytes) -> Callable[[Fixtures, Path], None]:
    """A file in the case's directory; ``name`` may hold surrogate escapes (undecodable bytes)."""
    return lambda fx, tmp: (tmp / name).write_bytes(content)


FAULT_CASES = [
    Case("faults: damaged files", flipped(None)),
    *(Case("faults: damaged files", flipped(index_type)) for index_type in INDEX_TYPES),
    Case("faults: ulimit -f", size_limited("kb build", 2_000)),
    Case("faults: ulimit -f", size_limited("kb build", 40_000)),
    Case("faults: ulimit -f", size_limited("index build faiss-exact", 2_000)),
    Case("faults: ulimit -f", size_limited("index build hnsw", 2_000)),
    Case("faults: ulimit -f", size_limited("kb export-hf", 2_000)),
    Case("faults: ulimit -f", size_limited("train", 20_000)),
    Case("faults: ulimit -f", Fault("full disk", full_disk)),
    *(Case("faults: killed", killed(command)) for command in WRITERS),
    Case("faults: killed", killed("kb build", signal.SIGINT)),
    Case("faults: killed", killed("kb build", signal.SIGTERM)),
    *(Case("faults: two at once", together(command)) for command in WRITERS),
    Case("faults: two at once", together("kb build", no_wait=True)),
    Case("faults: signals and pipes", closed_pipe(["plugins"])),
    Case("faults: signals and pipes", closed_pipe(["kb", "info", "{kb}"])),
    Case("faults: signals and pipes", closed_pipe(["validate", "{rag}"])),
    Case(
        "faults: non-UTF-8 argv",
        undecodable("ask question", ["ask", "{rag}", b"caf\xff"], expect="error"),
    ),
    Case(
        "faults: non-UTF-8 argv",
        undecodable(
            "kb build input name",
            ["kb", "build", b"{tmp}/docs\xff.jsonl", "--spec", "{enc}", "--out", "{tmp}/kb"],
            write_in("docs\udcff.jsonl", b'{"text": "paris"}\n'),
        ),
    ),
    Case(
        "faults: non-UTF-8 argv",
        undecodable(
            "kb build --out name",
            ["kb", "build", "{docs}", "--spec", "{enc}", "--out", b"{tmp}/kb\xff"],
        ),
    ),
    Case(
        "faults: non-UTF-8 argv",
        undecodable(
            "validate missing spec name", ["validate", b"{tmp}/spec\xff.toml"], expect="error"
        ),
    ),
    Case(
        "faults: non-UTF-8 argv",
        undecodable(
            "--set value", ["validate", "{rag}", "--set", b"pipeline.n_docs=\xff"], expect="error"
        ),
    ),
    Case(
        "faults: non-UTF-8 argv",
        undecodable(
            "--set key", ["validate", "{rag}", "--set", b"pipeline.n\xffdocs=2"], expect="error"
        ),
    ),
]


# --- running the catalog and printing the tables ----------------------------------------------

CASES: list[Case] = [*CLI_CASES, *API_CASES, *FAULT_CASES]


def run_cli_case(case: Case, number: int, fx: Fixtures) -> Outcome:
    tmp = fx.root / "cases" / f"{number:03d}"
    tmp.mkdir(parents=True)
    if case.setup:
        case.setup(tmp, fx)
    argv = [fx.substitute(arg, tmp) for arg in case.what]  # type: ignore[union-attr]
    cwd = Path(fx.substitute(case.cwd, tmp)) if case.cwd else fx.root / "cwd"
    protect = [Path(fx.substitute(path, tmp)) for path in case.protect]
    watch = [tmp, fx.root, fx["kb"] / "indexes", fx["ragkb"] / "indexes", cwd]
    outs = outputs(argv, cwd)
    checked = Checked(protect, outs, watch + [out.parent for out in outs])
    rc, stderr = fx.helper.run(argv, cwd)
    return checked.finish(Outcome(case.label, case.expect, rc, stderr, stdout=fx.helper.stdout))


def run_all(cases: list[Case], fx: Fixtures) -> list[tuple[Case, Outcome]]:
    results: list[tuple[Case, Outcome]] = []
    for number, case in enumerate(cases):
        if isinstance(case.what, tuple):
            started = time.monotonic()
            outcome = run_cli_case(case, number, fx)
            outcome.seconds = time.monotonic() - started
            results.append((case, outcome))
    api = [case for case in cases if isinstance(case.what, Api)]
    if api:
        results += zip(api, run_api(api, fx), strict=True)
    for number, case in enumerate(cases):
        if isinstance(case.what, Fault):
            tmp = fx.root / "cases" / f"{number:03d}"
            tmp.mkdir(parents=True)
            started = time.monotonic()
            try:
                outcomes = case.what.run(fx, tmp)
                for outcome in outcomes:
                    outcome.seconds = (time.monotonic() - started) / len(outcomes)
                results += [(case, outcome) for outcome in outcomes]
            except Exception:
                text = traceback.format_exc()
                results.append(
                    (case, Outcome(f"{case.label} (the probe itself failed)", "any", None, text))
                )
    return results


def counts(outcomes: list[Outcome]) -> list[int]:
    return [
        len(outcomes),
        *(sum(o.column == column for o in outcomes) for column in COLUMNS[1:6]),
        sum(bool(o.data_lost) for o in outcomes),
        sum(bool(o.wrote_in) for o in outcomes),
        sum(bool(o.half_written) for o in outcomes),
        sum(o.unexpected for o in outcomes),
        round(sum(o.seconds for o in outcomes)),
    ]


def print_tables(results: list[tuple[Case, Outcome]]) -> None:
    from ragloom.commands.common import table_lines

    categories = list(dict.fromkeys(case.category for case, _ in results))
    rows: list[list[Any]] = [["CATEGORY", *(c.upper() for c in COLUMNS), "SECONDS"]]
    for category in categories:
        rows.append([category, *counts([o for case, o in results if case.category == category])])
    rows.append(["TOTAL", *counts([o for _, o in results])])
    print("\n".join(table_lines([[*row[:-1], str(row[-1]).rjust(5)] for row in rows])))


def failures(results: list[tuple[Case, Outcome]]) -> dict[str, list[Outcome]]:
    found: dict[str, list[Outcome]] = {
        "tracebacks": [],
        "signals, hangs and other ends": [],
        "data lost": [],
        "wrote into protected paths": [],
        "half-written outputs": [],
        "unexpected ends": [],
        "unclear messages (heuristic)": [],
    }
    for _, outcome in results:
        if outcome.column == "traceback":
            found["tracebacks"].append(outcome)
        if outcome.column == "other":
            found["signals, hangs and other ends"].append(outcome)
        if outcome.data_lost:
            found["data lost"].append(outcome)
        if outcome.wrote_in:
            found["wrote into protected paths"].append(outcome)
        if outcome.half_written:
            found["half-written outputs"].append(outcome)
        if outcome.unexpected:
            found["unexpected ends"].append(outcome)
        if outcome.unclear():
            found["unclear messages (heuristic)"].append(outcome)
    return found


def print_failures(found: dict[str, list[Outcome]]) -> None:
    for heading, outcomes in found.items():
        print(f"\n{heading.upper()} ({len(outcomes)})")
        for outcome in outcomes:
            print(f"  {outcome.label}")
            details = [f"{status_of_signal(outcome.rc)}, expected {outcome.expect}"]
            details += outcome.data_lost + outcome.wrote_in + outcome.half_written
            if heading.startswith("unclear"):
                details.append(f"{outcome.unclear()}: {outcome.message()}")
            else:
                details.append(outcome.last_line())
            for detail in details:
                print(textwrap.indent(textwrap.shorten(detail, 400, placeholder=" ..."), "      "))


def write_log(path: Path, results: list[tuple[Case, Outcome]]) -> None:
    with path.open("w", encoding="utf-8") as log:
        for case, outcome in results:
            log.write(f"=== [{case.category}] {outcome.label}\n")
            log.write(
                f"--- {status_of_signal(outcome.rc)}; {outcome.column}; expected {outcome.expect}; "
                f"{outcome.seconds:.1f} s\n"
            )
            for problem in outcome.data_lost + outcome.wrote_in + outcome.half_written:
                log.write(f"--- {problem}\n")
            log.write(outcome.stderr[-6000:].rstrip() + "\n\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", action="extend", nargs="+", metavar="WORD", help="categories holding WORD only"
    )
    parser.add_argument("--log", type=Path, help="write every case's stderr to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.only or any(w in c.category for w in args.only)]
    root = Path(tempfile.mkdtemp(prefix="ragloom-probe-"))
    started = time.monotonic()
    try:
        (root / "cwd").mkdir()
        fx = Fixtures(root, Ragloom(root / "cwd"))
        fx.build()
        print(f"fixtures built in {time.monotonic() - started:.0f} s; {len(cases)} cases")
        results = run_all(cases, fx)
        fx.helper.close()
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{len(results)} inputs in {time.monotonic() - started:.0f} s\n")
    print_tables(results)
    found = failures(results)
    print_failures(found)
    if args.log:
        write_log(args.log, results)
    crashed = found["tracebacks"] or found["signals, hangs and other ends"] or found["data lost"]
    return 1 if crashed else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        sys.exit(main())
