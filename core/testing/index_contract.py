"""The Index contract: what every index plugin must do, as tests to inherit.

Subclass :class:`IndexContract` in a test module and set ``index_class`` (the registered class)
and ``params`` (an instance of its ``Params``). Approximate indexes lower ``min_recall_at_10``
and raise ``reconstruct_atol``; an index that needs many vectors to train raises
``corpus_size``. Params that are :class:`ragloom.protocols.SampledTraining` must give a
positive ``train_size`` and an integer ``seed``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ..protocols import Index, SampledTraining


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``float32 [n, dim]`` random vectors of length 1, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def exact_top_k(corpus: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the ``k`` largest inner products, best first (the ground truth)."""
    products: np.ndarray = queries @ corpus.T
    return np.argsort(-products, axis=1, kind="stable")[:, :k]


class IndexContract:
    """Tests every :class:`ragloom.protocols.Index` must pass."""

    index_class: Any = None
    params: Any = None
    dim = 32
    corpus_size = 2000
    min_recall_at_10 = 1.0
    reconstruct_atol = 1e-5
    estimate_tolerance = 0.2
    id_offset = 1000

    def make(self, dim: int | None = None) -> Any:
        """An empty index of the class under test."""
        if self.index_class is None or self.params is None:
            raise pytest.UsageError("an IndexContract subclass must set index_class and params")
        return self.index_class.create(dim or self.dim, self.params)

    @pytest.fixture
    def corpus(self) -> np.ndarray:
        return unit_vectors(self.corpus_size, self.dim, seed=1)

    @pytest.fixture
    def queries(self) -> np.ndarray:
        return unit_vectors(50, self.dim, seed=2)

    @pytest.fixture
    def filled(self, corpus: np.ndarray) -> Any:
        index = self.make()
        index.train(corpus)
        index.add(corpus, np.arange(len(corpus), dtype=np.int64) + self.id_offset)
        return index

    def test_satisfies_the_protocol(self) -> None:
        index = self.make()
        assert isinstance(index, Index)
        assert index.metric == "ip"
        assert index.dim == self.dim
        assert index.ntotal == 0
        assert set(index.search_params) <= set(type(self.params).model_fields)
        if isinstance(self.params, SampledTraining):  # a KB trains it on train_size vectors
            assert isinstance(self.params.train_size, int) and self.params.train_size >= 1
            assert isinstance(self.params.seed, int)

    def test_empty_index_returns_no_ids(self) -> None:
        scores, ids = self.make().search(unit_vectors(3, self.dim), 4)
        assert ids.shape == (3, 4) and ids.dtype == np.int64
        assert scores.shape == (3, 4) and scores.dtype == np.float32
        assert (ids == -1).all()
        assert np.isneginf(scores).all()

    def test_search_shapes_dtypes_and_order(self, filled: Any, queries: np.ndarray) -> None:
        assert filled.ntotal == self.corpus_size
        scores, ids = filled.search(queries, 10)
        assert scores.shape == ids.shape == (len(queries), 10)
        assert scores.dtype == np.float32 and ids.dtype == np.int64
        assert (np.diff(scores, axis=1) <= 1e-5).all(), "scores must be sorted best first"
        assert ((ids >= self.id_offset) & (ids < self.id_offset + self.corpus_size)).all()

    def test_recall_against_exact_search(
        self, filled: Any, corpus: np.ndarray, queries: np.ndarray
    ) -> None:
        _, ids = filled.search(queries, 10)
        truth = exact_top_k(corpus, queries, 10) + self.id_offset
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)])
        assert recall >= self.min_recall_at_10

    def test_scores_are_inner_products(self, filled: Any, queries: np.ndarray) -> None:
        scores, ids = filled.search(queries, 5)
        vectors = filled.reconstruct(ids.reshape(-1)).reshape(len(queries), 5, self.dim)
        expected = np.einsum("bd,bkd->bk", queries, vectors)
        np.testing.assert_allclose(scores, expected, atol=self.reconstruct_atol * 10 + 1e-4)

    def test_k_larger_than_ntotal(self, corpus: np.ndarray) -> None:
        index = self.make()
        index.train(corpus)
        vectors = unit_vectors(3, self.dim, seed=3)
        index.add(vectors, np.array([7, 8, 9], dtype=np.int64))
        scores, ids = index.search(vectors[:2], 5)
        assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
        found = ids[ids >= 0]
        assert set(found.tolist()) <= {7, 8, 9} and np.isfinite(scores[ids >= 0]).all()
        assert ids[0, 0] == 7 and ids[1, 0] == 8, "a stored vector finds itself first"
        if self.min_recall_at_10 == 1.0:
            assert sorted(ids[0, :3].tolist()) == [7, 8, 9]

    def test_reconstruct_returns_stored_vectors(self, filled: Any, corpus: np.ndarray) -> None:
        rows = np.array([0, 5, 17], dtype=np.int64)
        vectors = filled.reconstruct(rows + self.id_offset)
        assert vectors.shape == (3, self.dim) and vectors.dtype == np.float32
        np.testing.assert_allclose(vectors, corpus[rows], atol=self.reconstruct_atol)

    def test_save_and_load_round_trip(
        self, filled: Any, queries: np.ndarray, tmp_path: Path
    ) -> None:
        target = tmp_path / "saved"
        filled.save(target)
        loaded = type(filled).load(target)
        assert loaded.ntotal == filled.ntotal and loaded.dim == filled.dim
        before, after = filled.search(queries, 10), loaded.search(queries, 10)
        np.testing.assert_array_equal(before[1], after[1])
        np.testing.assert_allclose(before[0], after[0], rtol=1e-6)

    def test_save_replaces_an_existing_index(self, filled: Any, tmp_path: Path) -> None:
        target = tmp_path / "saved"
        filled.save(target)
        filled.add(unit_vectors(4, self.dim, seed=9), np.arange(4, dtype=np.int64))
        filled.save(target)
        assert type(filled).load(target).ntotal == self.corpus_size + 4
        left = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
        assert left == ["saved"], "no temporary files left (lock files stay, empty of data)"

    def test_wrong_shapes_are_refused(self, filled: Any) -> None:
        with pytest.raises(ValueError, match=str(self.dim)):
            filled.search(np.zeros((2, self.dim + 1), np.float32), 3)
        with pytest.raises(ValueError):
            filled.add(np.zeros((2, self.dim), np.float32), np.arange(3, dtype=np.int64))

    def test_estimate_is_close_to_the_real_size(self, filled: Any) -> None:
        estimate = self.index_class.estimate(self.corpus_size, self.dim, self.params)
        actual = filled.memory_bytes()
        assert abs(estimate - actual) <= self.estimate_tolerance * actual, (estimate, actual)

    def test_tune_changes_only_search_parameters(self, filled: Any, queries: np.ndarray) -> None:
        before = filled.search(queries, 10)
        filled.tune(self.params)
        after = filled.search(queries, 10)
        np.testing.assert_array_equal(before[1], after[1])

    def test_unknown_ids_raise_key_error(self, filled: Any) -> None:
        with pytest.raises(KeyError):
            filled.reconstruct(np.array([-5], dtype=np.int64))

    def test_concurrent_searches_agree(self, filled: Any, queries: np.ndarray) -> None:
        expected = filled.search(queries, 10)[1]
        results: list[np.ndarray] = []
        errors: list[BaseException] = []

        def search() -> None:
            try:
                for _ in range(5):
                    results.append(filled.search(queries, 10)[1])
            except BaseException as error:  # re-raised below, in the test thread
                errors.append(error)

        def add() -> None:
            try:
                extra = unit_vectors(200, self.dim, seed=11) * 0.01  # never in a top 10
                filled.add(extra, np.arange(200, dtype=np.int64) + 10**6)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=search) for _ in range(4)]
        threads.append(threading.Thread(target=add))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert len(results) == 20
        needed = 1.0 if self.min_recall_at_10 == 1.0 else 0.9
        for result in results:
            overlap = np.mean(
                [len(set(a) & set(b)) / 10 for a, b in zip(result, expected, strict=True)]
            )
            assert overlap >= needed
