"""The plugin passes ragloom's Index contract, as the built-in indexes do."""

import pytest

from ragloom.testing import IndexContract
from ragloom_hashing.index import NumpyFlatIndex


class TestNumpyFlatIndex(IndexContract):
    @pytest.fixture
    def index_factory(self):
        return lambda dim: NumpyFlatIndex.create(dim, NumpyFlatIndex.Params())
