"""A real third-party plugin package (tests/plugin_pkg), installed by pip into a site directory.

Nothing is faked here: pip builds and installs the package with its entry point, and fresh Python
processes find it through importlib.metadata, exactly as after `pip install ragloom-hashing`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TESTS, pip_install_target

PACKAGE = TESTS / "plugin_pkg"

SPEC = """
schema = 1
[encoder]
type = "hashing"
dim = {dim}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip_install_target(PACKAGE, target, tmp_path_factory.mktemp("build"))
    return target


def python(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("RAGLOOM_DISABLE_PLUGIN_AUTOLOAD", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_ragloom_plugins_lists_the_installed_plugin(site: Path) -> None:
    result = python(site, "-m", "ragloom.cli", "plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = {(row["kind"], row["name"]): row for row in json.loads(result.stdout)}
    for key in [
        ("encoder", "hashing"),
        ("index", "numpy-flat"),
        ("retriever", "keyword"),
        ("reranker", "word-overlap"),
    ]:
        assert rows[key]["distribution"] == "ragloom-hashing"
        assert rows[key]["version"] == "0.1.0"
        assert rows[key]["plugin"] == "hashing"
    assert rows[("index", "faiss-exact")]["distribution"] == "ragloom"


def test_the_plugins_encoder_works_from_a_spec(site: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(dim=64), encoding="utf-8")
    code = (
        "import sys; from ragloom import Pipeline; "
        "p = Pipeline.from_spec(sys.argv[1]); "
        "v = p.encoder.encode_queries(['who wrote animal farm', 'orwell animal farm']); "
        "print(list(v.shape), round(float(v[0] @ v[1]), 4), type(p.encoder).__module__)"
    )
    result = python(site, "-c", code, str(spec))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[2, 64]")
    assert 0.0 < float(result.stdout.split()[2]) < 1.0
    assert result.stdout.split()[3] == "ragloom_hashing.encoder"


def test_the_plugins_own_keys_are_validated(site: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(dim=64) + "lowercas = false\n", encoding="utf-8")
    result = python(site, "-m", "ragloom.cli", "validate", str(spec))
    assert result.returncode == 1
    assert '[encoder] unknown key "lowercas". Did you mean "lowercase"?' in result.stderr
    spec.write_text(SPEC.format(dim=1), encoding="utf-8")
    result = python(site, "-m", "ragloom.cli", "validate", str(spec))
    assert "[encoder] dim = 1: Input should be greater than or equal to 2." in result.stderr


KEYWORD_SPEC = """
schema = 1
[retriever]
type = "keyword"
path = "passages.jsonl"
"""


def test_the_keyword_retriever_reads_text_and_never_encodes(site: Path, tmp_path: Path) -> None:
    """A spec without an [encoder]: the keyword retriever reads the questions' text only (any
    encoding would fail for want of an encoder)."""
    lines = [
        {"title": "Orwell", "text": "animal farm is a novel by orwell"},
        {"title": "Paris", "text": "paris is the capital of france"},
        {"title": "Moon", "text": "apollo put an astronaut on the moon"},
    ]
    (tmp_path / "passages.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    spec = tmp_path / "spec.toml"
    spec.write_text(KEYWORD_SPEC, encoding="utf-8")
    code = (
        "import sys; from ragloom import Pipeline; "
        "p = Pipeline.from_spec(sys.argv[1]); "
        "r = p.retrieve(['who wrote animal farm', 'the capital of france'], k=2); "
        "print(r.ids.tolist(), r.passages[1][0].title, type(p.retriever).__module__)"
    )
    result = python(site, "-c", code, str(spec))
    assert result.returncode == 0, result.stderr
    ids, title, module = result.stdout.rsplit(maxsplit=2)
    assert (ids, title, module) == ("[[0, 1], [1, 2]]", "Paris", "ragloom_hashing.keyword")


def test_the_plugins_reranker_reorders_the_retrievers_candidates(
    site: Path, tmp_path: Path
) -> None:
    """keyword finds three candidates by words shared; word-overlap keeps the one holding the
    largest share of the question's words."""
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'schema = 1\n[pipeline]\nn_docs = 1\n[retriever]\ntype = "keyword"\n'
        'passages = ["the farm of the farm", "animal farm orwell", "a farm"]\n'
        '[reranker]\ntype = "word-overlap"\ncandidates = 3\n',
        encoding="utf-8",
    )
    code = (
        "import sys; from ragloom import Pipeline; "
        "p = Pipeline.from_spec(sys.argv[1]); "
        "r = p.retrieve(['the animal farm by orwell']); "
        "print(r.ids.tolist(), type(p.reranker).__module__)"
    )
    result = python(site, "-c", code, str(spec))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[[1]]", "ragloom_hashing.overlap"]


def test_the_plugin_passes_the_index_retriever_and_reranker_contracts(site: Path) -> None:
    """The package's own tests, run from the pip install: IndexContract for numpy-flat,
    RetrieverContract for keyword (no encoder: its questions refuse to be encoded) and
    RerankerContract for word-overlap."""
    result = python(site, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", cwd=PACKAGE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b31 passed, \d+ skipped in ", result.stdout), result.stdout
    skips = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert all("retriever_contract" in line for line in skips), skips  # capabilities it lacks
    assert "RetrieverContract" not in result.stderr
