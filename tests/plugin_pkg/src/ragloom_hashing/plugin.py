"""The module the ``ragloom`` entry point names: it only registers, so it imports fast."""

import ragloom


@ragloom.hookimpl
def register_components(register):
    register(
        "encoder",
        "hashing",
        "ragloom_hashing.encoder:HashingEncoder",
        description="Bag of words hashed into a fixed number of dimensions; needs no weights.",
    )
    register(
        "index",
        "numpy-flat",
        "ragloom_hashing.index:NumpyFlatIndex",
        description="Brute-force inner product in numpy, saved as .npy files.",
    )
    register(
        "retriever",
        "keyword",
        "ragloom_hashing.keyword:KeywordRetriever",
        description="Passages ranked by the words they share with the question; never encodes.",
    )
    register(
        "reranker",
        "word-overlap",
        "ragloom_hashing.overlap:WordOverlapReranker",
        description="Candidates re-scored by the share of the question's words they hold.",
    )
