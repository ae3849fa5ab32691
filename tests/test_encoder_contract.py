"""Every built-in encoder passes the Encoder contract: ``dpr`` over DPR question/context towers
and over a BERT-like directory, and ``hf-mean-pool``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ragloom.context import BuildContext
from ragloom.plugins.hf_encoder import HFEncoder, MeanPoolEncoder
from ragloom.spec import PipelineSettings
from ragloom.testing import EncoderContract
from ragloom.testing.tiny_models import bert_dir, dpr_dirs


def table(component: Any, directory: Path, **params: str) -> tuple[Any, BuildContext]:
    """The validated Params and the BuildContext of a spec table."""
    return component.Params(**params), BuildContext(directory, PipelineSettings())


@pytest.fixture(scope="module")
def berts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two random BERTs: variant 0 and variant 1 (other weights)."""
    return [bert_dir(tmp_path_factory.mktemp(f"bert{seed}"), seed=seed) for seed in (0, 1)]


@pytest.fixture(scope="module")
def dprs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Path]]:
    """Two random DPR question/context pairs."""
    return [dpr_dirs(tmp_path_factory.mktemp(f"dpr{seed}"), seed=seed) for seed in (0, 1)]


class HFEncoderContract(EncoderContract):
    """An encoder of plugins/hf_encoder.py, built from the spec tables of ``tables`` (one per
    variant)."""

    component: Any = HFEncoder

    @pytest.fixture
    def encoder_factory(self, tables: list[tuple[Any, BuildContext]]) -> Callable[[int], Any]:
        return lambda variant: self.component.from_spec(*tables[variant])

    @pytest.fixture
    def spec_table(self, tables: list[tuple[Any, BuildContext]]) -> tuple[Any, BuildContext]:
        return tables[0]


class TestDPR(HFEncoderContract):
    @pytest.fixture
    def tables(self, dprs: list[tuple[Path, Path]]) -> list[tuple[Any, BuildContext]]:
        return [
            table(HFEncoder, question.parent, path=str(question), passage_path=str(context))
            for question, context in dprs
        ]


class TestDPROverBERT(HFEncoderContract):
    @pytest.fixture
    def tables(self, berts: list[Path]) -> list[tuple[Any, BuildContext]]:
        return [
            table(HFEncoder, bert, path=str(bert), pooling="mean", normalize="true")
            for bert in berts
        ]


class TestMeanPool(HFEncoderContract):
    component = MeanPoolEncoder

    @pytest.fixture
    def tables(self, berts: list[Path]) -> list[tuple[Any, BuildContext]]:
        return [table(MeanPoolEncoder, bert, path=str(bert)) for bert in berts]
