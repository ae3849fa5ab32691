"""Fine-tuning a pipeline end to end: ``ragloom train``.

The question encoder and the generator learn together through the marginalized likelihood of the
answers (:meth:`ragloom.Pipeline.loss`); the passage encoder, the knowledge base and the index
stay fixed. See :func:`train`.
"""

from .trainer import TrainResult, train

__all__ = ["TrainResult", "train"]
