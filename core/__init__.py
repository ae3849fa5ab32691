"""ragloom: Retrieval-Augmented Generation you can take apart.

Importing ``ragloom`` loads no torch, faiss or hnswlib; those load when a component is built.
"""

from .errors import (
    DuplicateComponentError,
    MissingComponentError,
    MissingExtraError,
    PluginLoadError,
    RagloomError,
    SpecError,
    UnknownComponentError,
)
from .hookspecs import hookimpl
from .pipeline import AnswerStream, Pipeline
from .plugin_manager import get_registry
from .protocols import Answer, Passage, PassageText, Retrieved
from .spec import Spec, load_spec

__all__ = [
    "Answer",
    "AnswerStream",
    "DuplicateComponentError",
    "MissingComponentError",
    "MissingExtraError",
    "Passage",
    "PassageText",
    "Pipeline",
    "PluginLoadError",
    "RagloomError",
    "Retrieved",
    "Spec",
    "SpecError",
    "UnknownComponentError",
    "get_registry",
    "hookimpl",
    "load_spec",
]
