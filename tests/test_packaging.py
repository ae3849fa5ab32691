"""A non-editable install (`pip install .`) carries the registry manifest and the examples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, pip_install_target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip_install_target(REPO, target, tmp_path_factory.mktemp("build"))
    return target


def test_the_wheel_runs_from_its_own_files(installed: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    code = (
        "import ragloom, ragloom.plugins.builtin as b; print(ragloom.__file__); "
        "print(sorted(b.read_manifest().components['index']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    module_file, indexes = result.stdout.splitlines()
    assert module_file.startswith(str(installed))
    assert "faiss-exact" in indexes
    assert (installed / "ragloom" / "registry.toml").is_file()
    assert not (installed / "ragloom" / "registry.toml").is_symlink()
    validate = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.resources as r, sys; from ragloom.cli import main; "
            "sys.exit(main(['validate', str(r.files('ragloom') / 'examples' / 'rag_token.toml')]))",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert validate.returncode == 0, validate.stderr
    assert "rag_token.toml: valid" in validate.stdout
    assert (installed / "ragloom" / "examples" / "wikipedia.toml").is_file()
