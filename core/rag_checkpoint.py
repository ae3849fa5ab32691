"""The transformers RAG ``save_pretrained`` directory (either class), read and written without
transformers' RAG classes at run time.

Layout: ``config.json`` (``model_type = "rag"``) with nested ``question_encoder`` and
``generator`` configs; ``model.safetensors`` or ``pytorch_model.bin`` (read with
``weights_only=True``, :mod:`ragloom.torch_files`) whose keys start with
``rag.question_encoder.`` or ``rag.generator.``;
tokenizers in ``question_encoder_tokenizer/`` and ``generator_tokenizer/``. Tied weights
(``lm_head``, ``embed_tokens``) are absent from recent saves and tied again here.

The question encoder is a ``DPRQuestionEncoder`` when its config says ``dpr``, else any
``AutoModel`` (a sentence encoder); the generator is a seq2seq model (BART) or, when its config is
not encoder-decoder, a causal LM. ``RagTokenForGeneration.from_pretrained`` reads the
DPR + BART checkpoints this module writes.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Literal

from .errors import RagloomError
from .torch_files import load_tensors

Part = Literal["question_encoder", "generator"]
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
TIED = ("lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight")


VOCABULARY_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
"""Files a tokenizer reads its vocabulary from (a directory needs one of them)."""
TOKENIZER_FILES = (
    *VOCABULARY_FILES,
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
"""Every file ``save_pretrained`` may write for a tokenizer: what its tokens depend on."""


class CheckpointError(RagloomError):
    """A RAG checkpoint directory that is missing parts or does not fit its config."""


class ModelDirectoryError(RagloomError):
    """A model directory that is missing or lacks weights, config or tokenizer."""


def tokenizer_files(directory: Path) -> list[Path]:
    """The tokenizer files in ``directory``; a directory without a vocabulary file raises
    :class:`ModelDirectoryError` (transformers would build an empty tokenizer that reads every
    word as unknown)."""
    found = [directory / name for name in TOKENIZER_FILES if (directory / name).is_file()]
    if not any(path.name in VOCABULARY_FILES for path in found):
        raise ModelDirectoryError(
            f"{directory} has no tokenizer: expected {VOCABULARY_FILES[0]} (or "
            f"{', '.join(VOCABULARY_FILES[1:])}) there. Save the model's tokenizer into it "
            f"with tokenizer.save_pretrained({str(directory)!r})."
        )
    return found


def is_rag_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds a RAG ``config.json``."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "rag"


def checkpoint_weights(directory: Path) -> Path:
    """The weight file of a RAG checkpoint, or a clear error."""
    if not (directory / "config.json").is_file():
        raise CheckpointError(
            f"[pipeline] checkpoint = {directory}: no config.json there; point it at a directory "
            f"written by RagTokenForGeneration/RagSequenceForGeneration.save_pretrained or by "
            f"ragloom train."
        )
    for name in WEIGHTS:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"[pipeline] checkpoint = {directory}: no {' or '.join(WEIGHTS)}.")


def _state_dict(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    state: dict[str, Any] = load_tensors(path)
    return state


def read_config(directory: Path, part: Part | None = None) -> dict[str, Any]:
    """A model directory's ``config.json`` as a mapping (no transformers import); with
    ``part``, that part's section of a RAG checkpoint's."""
    path = directory / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{path}: cannot be read ({error}). Point the spec at a directory written by "
            f"save_pretrained."
        ) from None
    if part is None:
        return dict(data)
    if data.get("model_type") != "rag" or not isinstance(data.get(part), dict):
        raise CheckpointError(
            f"[pipeline] checkpoint = {directory}: config.json is not a RAG config with a "
            f"{part} section."
        )
    return dict(data[part])


def _part_config(directory: Path, part: Part) -> Any:
    from transformers import AutoConfig

    sub = read_config(directory, part)
    return AutoConfig.for_model(sub.pop("model_type"), **sub)


def load_rag_part(directory: Path, part: Part, **loading: Any) -> tuple[Any, Any]:
    """The model and tokenizer of one part of a RAG checkpoint.

    ``loading`` takes ``from_pretrained`` arguments (``dtype``, ``attn_implementation``,
    ``quantization_config``...).
    """
    from transformers import AutoTokenizer

    weights = checkpoint_weights(directory)
    config = _part_config(directory, part)
    prefix = f"rag.{part}."
    state = {k[len(prefix) :]: v for k, v in _state_dict(weights).items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(f"{weights} holds no {prefix}* weights.")
    model_class = _model_class(part, config)
    model = model_class.from_config(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if key not in TIED]
    unexpected = [
        key for key in unexpected if ".pooler." not in key and not key.endswith("version")
    ]
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: the {part} weights do not fit its config (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})."
        )
    model.tie_weights()
    tokenizer_directory = directory / f"{part}_tokenizer"
    tokenizer_files(tokenizer_directory)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_directory)
    # from_pretrained applies dtype, attention and quantization uniformly
    with tempfile.TemporaryDirectory(prefix="ragloom-part-") as temporary:
        model.save_pretrained(temporary)
        return model_class.from_pretrained(temporary, **loading), tokenizer


def write_rag_checkpoint(
    directory: Path,
    question_encoder: Any,
    question_tokenizer: Any,
    generator: Any,
    generator_tokenizer: Any,
    n_docs: int,
) -> None:
    """Write the two models and their tokenizers as one RAG checkpoint into ``directory`` (write
    into :func:`ragloom.atomic.directory` for an atomic replacement)."""
    from transformers import RagConfig, RagTokenForGeneration

    config = RagConfig.from_question_encoder_generator_configs(
        question_encoder.config,
        generator.config,
        n_docs=n_docs,
        retrieval_vector_size=vector_size(question_encoder.config),
    )
    rag = RagTokenForGeneration(config, question_encoder=question_encoder, generator=generator)
    rag.save_pretrained(directory)
    question_tokenizer.save_pretrained(directory / "question_encoder_tokenizer")
    generator_tokenizer.save_pretrained(directory / "generator_tokenizer")


def vector_size(config: Any) -> int:
    """The width of an encoder's output vectors: its projection if it has one (DPR), else its
    hidden size."""
    return int(getattr(config, "projection_dim", 0) or config.hidden_size)


class _DPRQuestionEncoderClass:
    """DPRQuestionEncoder with the Auto classes' ``from_config`` / ``from_pretrained`` pair."""

    @staticmethod
    def from_config(config: Any) -> Any:
        from transformers import DPRQuestionEncoder

        return DPRQuestionEncoder(config)

    @staticmethod
    def from_pretrained(directory: str, **loading: Any) -> Any:
        from transformers import DPRQuestionEncoder

        return DPRQuestionEncoder.from_pretrained(directory, **loading)


def _model_class(part: Part, config: Any) -> Any:
    """The class a part's config names: DPR or any encoder for the question encoder, seq2seq
    or causal for the generator."""
    import transformers

    if part == "question_encoder":
        return _DPRQuestionEncoderClass if config.model_type == "dpr" else transformers.AutoModel
    if config.is_encoder_decoder:
        return transformers.AutoModelForSeq2SeqLM
    return transformers.AutoModelForCausalLM
