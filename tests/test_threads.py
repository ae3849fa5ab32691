"""Thread counts: ``[pipeline] threads`` and ``--threads`` reach torch and faiss, the default is
what the process may use, and bad counts are refused with the key or option that gave them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ragloom import SpecError
from ragloom.cli import build_parser, main
from ragloom.spec import load_spec
from ragloom.spec import threads as threads_module
from ragloom.spec.threads import ThreadCount, available_cpus, cpu_quota, default_threads

EXAMPLE = Path(__file__).parent.parent / "examples" / "rag_token.toml"

COUNTING_CLI = """
import json, sys
import faiss, torch
from ragloom.cli import main
import ragloom.spec.threads
ragloom.spec.threads.available_cpus = lambda: 3  # unlike torch's own count here
for argv in json.loads(sys.argv[1]):
    status = main(argv)
    print(json.dumps([status, torch.get_num_threads(), faiss.omp_get_max_threads()]))
"""
"""Runs ``ragloom`` once per argument list and prints the status and the thread counts of
torch and faiss after each run; the CPUs available are 3, whatever the machine has."""


def test_threads_reach_torch_and_faiss_through_the_cli(tiny_rag: Callable[..., Path]) -> None:
    spec = tiny_rag("threads")
    one = spec.with_name("one-thread.toml")
    one.write_text(spec.read_text().replace("[pipeline]\n", "[pipeline]\nthreads = 1\n"))
    question = "What is the capital of anything?"
    runs = [
        ["ask", str(spec), question],  # the default: the CPUs available
        ["ask", str(one), question],  # [pipeline] threads
        ["ask", str(one), question, "--threads", "2"],  # --threads overrides it
    ]
    environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    result = subprocess.run(
        [sys.executable, "-c", COUNTING_CLI, json.dumps(runs)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    counts = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("[")]
    assert counts == [[0, 3, 3], [0, 1, 1], [0, 2, 2]]


@pytest.mark.parametrize("value", ["0", "-2", "2.5", '"4"', "true"])
def test_validate_refuses_counts_that_are_not_positive_whole_numbers(
    write_spec: Callable[..., Path], capsys: pytest.CaptureFixture[str], value: str
) -> None:
    path = write_spec(f"schema = 1\n[pipeline]\nthreads = {value}\n")
    with pytest.raises(SpecError, match=r"\[pipeline\] threads = "):
        load_spec(path)
    assert main(["validate", str(path)]) == 1
    assert f"[pipeline] threads = {value}" in capsys.readouterr().err


def test_the_threads_option_refuses_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", str(EXAMPLE), "question", "--threads", "0"]) == 1
    assert "--threads: 0 is not allowed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ask", str(EXAMPLE), "question", "--threads", "two"])


@pytest.mark.parametrize(
    "argv",
    [
        ["ask", "s.toml", "q"],
        ["demo"],
        ["eval", "s.toml", "--data", "qa.jsonl"],
        ["kb", "build", "docs.jsonl", "--spec", "s.toml", "--out", "kb"],
        ["kb", "import-hf", "passages", "--out", "kb"],
        ["index", "build", "kb", "--type", "faiss-exact"],
        ["index", "compare", "kb", "--types", "faiss-exact"],
        ["serve", "s.toml"],
        ["train", "s.toml", "--data", "qa.jsonl", "--out", "run"],
    ],
)
def test_every_command_that_runs_a_pipeline_takes_threads(argv: list[str]) -> None:
    assert build_parser().parse_args([*argv, "--threads", "3"]).threads == 3
    assert build_parser().parse_args(argv).threads is None


def test_validate_shows_the_count_and_where_it_comes_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["validate", str(EXAMPLE)]) == 0
    assert "[pipeline] threads 1 (OMP_NUM_THREADS)" in capsys.readouterr().out
    assert main(["validate", str(EXAMPLE), "--set", "pipeline.threads=3"]) == 0
    assert "[pipeline] threads 3\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("setting", "expected"), [("3", 3), ("4,2", 4), (" 2 ", 2), ("0", None), ("x", None)]
)
def test_the_default_follows_omp_num_threads(
    monkeypatch: pytest.MonkeyPatch, setting: str, expected: int | None
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", setting)
    if expected is None:
        assert default_threads() == ThreadCount(available_cpus(), "the CPUs this process may use")
    else:
        assert default_threads() == ThreadCount(expected, "OMP_NUM_THREADS")


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_a_container_quota_caps_the_cpus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: dict[str, str], quota: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(threads_module, "CGROUP", tmp_path)
    assert cpu_quota() == quota
    affinity = len(os.sched_getaffinity(0))
    expected = affinity if quota is None else min(affinity, -(-quota // 1))
    assert available_cpus() == expected
