"""Contract test suites a plugin's tests inherit, so third-party components pass the same tests
as the built-in ones.

```python
from ragloom.testing import IndexContract


class TestMyIndex(IndexContract):
    index_class = MyIndex
    params = MyIndex.Params()
```

ragloom installs the pytest plugin ``ragloom.pytest_plugin`` (entry point ``pytest11``), which
turns on pytest's assertion rewriting for these suites.
"""

from .encoder_contract import EncoderContract
from .generator_contract import GeneratorContract
from .index_contract import IndexContract, unit_vectors
from .marginalizer_contract import MarginalizerContract
from .retriever_contract import RetrieverContract
from .table_generator import TableGenerator

__all__ = [
    "EncoderContract",
    "GeneratorContract",
    "IndexContract",
    "MarginalizerContract",
    "RetrieverContract",
    "TableGenerator",
    "unit_vectors",
]
