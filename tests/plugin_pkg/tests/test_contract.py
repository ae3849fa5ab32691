"""The plugin passes ragloom's Index contract, as the built-in indexes do."""

from ragloom.testing import IndexContract
from ragloom_hashing.index import NumpyFlatIndex


class TestNumpyFlatIndex(IndexContract):
    index_class = NumpyFlatIndex
    params = NumpyFlatIndex.Params()
