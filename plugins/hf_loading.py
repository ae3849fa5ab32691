"""What the Hugging Face plugins share: the dtype table and what ``"auto"`` chooses, the weight
file of a model directory, loading a model and its tokenizer with the tokenizer and pickle checks,
the generator's config, the spec table of a trained model, and the name of the cache argument."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

import torch

from ragloom.assets import ASSET_PREFIX
from ragloom.context import BuildContext
from ragloom.errors import RagloomError
from ragloom.rag_checkpoint import WEIGHTS, ModelDirectoryError, read_config, tokenizer_files
from ragloom.spec import resolve_device
from ragloom.torch_files import refusing_pickles

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""A spec's ``dtype`` values and the torch dtypes they name."""

DtypeName = Literal["float32", "bfloat16", "float16", "auto"]
"""A spec's ``dtype``: one of :data:`DTYPES`, or ``"auto"`` (:func:`resolve_dtype`)."""

AUTO_DTYPE = (
    '"auto": bfloat16 where the device computes it natively (CUDA, a CPU with AMX-BF16 or '
    "AVX512-BF16), float32 elsewhere"
)
"""How ``dtype = "auto"`` chooses, for the parameters' descriptions."""


def native_bfloat16(device: str) -> bool:
    """Whether ``device`` (a spec's device: ``"cpu"``, ``"cuda:N"``, ``"auto"``) computes
    bfloat16 natively: a CUDA GPU that supports it, or a CPU with AMX-BF16 or AVX512-BF16
    matrix instructions (elsewhere bfloat16 is emulated and slower than float32)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """The torch dtype a spec's ``dtype`` names on ``device``: ``"auto"`` is bfloat16 where
    :func:`native_bfloat16`, float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return DTYPES[dtype]


MODEL_KEYS = ("path", "gguf_file")
"""The spec keys that say where a model loads from; a trained model loads from the checkpoint."""


def on_device(params: Any, key: str) -> Any:
    """``params`` with its ``device`` (the value of ``key``, e.g. ``[generator] device``)
    resolved for this machine: ``"auto"`` made concrete, a missing CUDA device refused."""
    return params.model_copy(update={"device": resolve_device(params.device, key)})


def weights_file(directory: Path) -> Path:
    """The weight file of a transformers model directory, or a clear error."""
    if not directory.is_dir():
        raise ModelDirectoryError(f"model directory {directory} does not exist.")
    for name in WEIGHTS:
        if (directory / name).is_file():
            return directory / name
    sharded = sorted(directory.glob("model-*.safetensors"))
    if sharded:
        return sharded[0]
    raise ModelDirectoryError(
        f"{directory} has no weights ({' or '.join(WEIGHTS)}). Point the spec at a directory "
        f"written by save_pretrained."
    )


def checked_weights(directory: Path) -> Path:
    """The weight file of a model directory that also holds a tokenizer, or a clear error."""
    weights = weights_file(directory)
    tokenizer_files(directory)
    return weights


def load_pretrained(
    model_class: Any,
    directory: Path,
    weights: Path | None = None,
    gguf_file: str | None = None,
    **loading: Any,
) -> tuple[Any, Any]:
    """The model (``model_class.from_pretrained(directory, **loading)``, refusing pickled code in
    ``weights``) and tokenizer of a model directory, or of the GGUF file ``gguf_file`` in it.
    ``weights`` defaults to the directory's weight file, checked with its tokenizer."""
    from transformers import AutoTokenizer

    gguf = {"gguf_file": gguf_file} if gguf_file is not None else {}
    if weights is None:
        weights = directory / gguf_file if gguf_file is not None else checked_weights(directory)
    with refusing_pickles(weights):
        model = model_class.from_pretrained(directory, **loading, **gguf)
    return model, AutoTokenizer.from_pretrained(directory, **gguf)


def generator_config(params: Any, context: BuildContext) -> dict[str, Any]:
    """The generator's ``config.json`` (of ``path``, or of ``[pipeline] checkpoint``'s generator
    part), read without loading the model; packaged models (``asset:``) are not read here."""
    if params.path is not None:
        if params.path.startswith(ASSET_PREFIX):
            raise RagloomError(f"{params.path} is a packaged model, checked when first built.")
        return read_config(context.resolve_path(params.path))
    if context.pipeline.checkpoint is not None:
        return read_config(context.resolve_path(context.pipeline.checkpoint), "generator")
    raise ModelDirectoryError(
        "[generator] needs path = a model directory, or [pipeline] checkpoint = a "
        "transformers RAG directory."
    )


def checkpoint_table(table: dict[str, Any]) -> dict[str, Any]:
    """A generator's spec table for its trained model: the model from the checkpoint."""
    return {key: value for key, value in table.items() if key not in MODEL_KEYS}


def cache_argument(model: Any) -> str:
    """The name of the key/value cache argument of ``model.forward``: transformers 5 renamed
    ``past_key_values`` to ``cache``."""
    forward = inspect.signature(model.forward).parameters
    return "cache" if "cache" in forward else "past_key_values"
