"""The hot-swap experiment in its short version: a BART trained from scratch with RAG on one
edition of a generated world answers from whichever index it is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragloom.testing.hotswap import HotswapSettings, run_hotswap


@pytest.mark.slow
def test_answers_follow_the_index(tmp_path: Path) -> None:
    settings = HotswapSettings(entities=300, attributes=1, steps=600, evaluated=100)
    result = run_hotswap(tmp_path, settings)
    assert result.loss_last < 0.2 * result.loss_first
    for split in ("trained", "held-out"):
        for index, other in (("A", "B"), ("B", "A")):
            accuracy = result.accuracy[split][index]
            assert accuracy[index] >= 0.6, (split, index, accuracy)
            assert accuracy[other] <= 0.15, (split, index, accuracy)
