"""The hot-swap experiment in its short version: a BART trained from scratch with RAG on one
edition of a generated world answers from whichever index it is given.

The experiment lives beside its benchmark (benchmarks/hotswap_experiment.py), outside the
ragloom package; the ``experiment`` fixture imports it with benchmarks/ on ``sys.path`` for this
test only (monkeypatch restores the path), so no other test sees the benchmarks' modules.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

from conftest import REPO


@pytest.fixture
def experiment(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module("hotswap_experiment")


def test_the_benchmark_and_this_test_share_one_experiment(experiment: ModuleType) -> None:
    assert Path(experiment.__file__ or "").parent == REPO / "benchmarks"
    assert experiment.HotswapSettings().steps > 0


@pytest.mark.slow
def test_answers_follow_the_index(experiment: ModuleType, tmp_path: Path) -> None:
    settings = experiment.HotswapSettings(entities=300, attributes=1, steps=600, evaluated=100)
    result = experiment.run_hotswap(tmp_path, settings)
    assert result.loss_last < 0.2 * result.loss_first
    for split in ("trained", "held-out"):
        for index, other in (("A", "B"), ("B", "A")):
            accuracy = result.accuracy[split][index]
            assert accuracy[index] >= 0.6, (split, index, accuracy)
            assert accuracy[other] <= 0.15, (split, index, accuracy)
