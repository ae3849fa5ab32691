"""Contract kits a plugin's tests inherit, so third-party components pass the same tests as the
built-in ones, and the small fixtures they are built on.

```python
from ragloom.testing import IndexContract


class TestMyIndex(IndexContract):
    index_class = MyIndex
    params = MyIndex.Params()
```

The kits (pytest base classes; each module's docstring names the fixtures a subclass provides):

- :mod:`~ragloom.testing.encoder_contract`: :class:`EncoderContract`;
- :mod:`~ragloom.testing.index_contract`: :class:`IndexContract` (and ``unit_vectors``);
- :mod:`~ragloom.testing.retriever_contract`: :class:`RetrieverContract`;
- :mod:`~ragloom.testing.reranker_contract`: :class:`RerankerContract`;
- :mod:`~ragloom.testing.generator_contract`: :class:`GeneratorContract`;
- :mod:`~ragloom.testing.marginalizer_contract`: :class:`MarginalizerContract`.

Helpers for kit users, tests and benchmarks:

- :mod:`~ragloom.testing.table_generator`: :class:`TableGenerator`, an exact bigram generator;
- :mod:`~ragloom.testing.tiny_models`: small random DPR, BERT, BART, RAG and causal-LM
  directories with trained tokenizers, built offline in seconds;
- :mod:`~ragloom.testing.random_kb`: knowledge bases of random unit vectors, for scale;
- :mod:`~ragloom.testing.world`: a generated world of facts in two editions, for training tests
  and the hot-swap experiment (which lives beside its benchmark, benchmarks/hotswap_experiment.py).

ragloom installs the pytest plugin ``ragloom.pytest_plugin`` (entry point ``pytest11``), which
turns on pytest's assertion rewriting for these kits.
"""

from .encoder_contract import EncoderContract
from .generator_contract import GeneratorContract
from .index_contract import IndexContract, unit_vectors
from .marginalizer_contract import MarginalizerContract
from .reranker_contract import RerankerContract
from .retriever_contract import RetrieverContract
from .table_generator import TableGenerator

__all__ = [
    "EncoderContract",
    "GeneratorContract",
    "IndexContract",
    "MarginalizerContract",
    "RerankerContract",
    "RetrieverContract",
    "TableGenerator",
    "unit_vectors",
]
