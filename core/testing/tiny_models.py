"""Small random RAG models with real trained tokenizers, built offline in a few seconds.

For tests and benchmarks (nothing is downloaded): ``bert_dir`` writes a BERT-like encoder (as
sentence encoders are), ``dpr_dirs`` a DPR question/context encoder pair, ``rag_checkpoint`` a
whole RAG checkpoint through transformers' own ``save_pretrained``, and
``recipe_knowledge_base`` a knowledge base the way transformers' example script makes one.
``Size`` sets the widths and depths (``TINY`` by default, ``BASE`` for bart-base/DPR-base size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

WORDS = (
    "paris france capital city river seine tower museum people live million london england "
    "thames bridge queen berlin germany wall history war music opera rome italy empire pope "
    "who what when where how many wrote book author novel animal farm orwell moon apollo "
    "landing astronaut rocket space einstein physics relativity theory light energy mass"
).split()


@dataclass(frozen=True)
class Size:
    """Widths and depths of the random models."""

    encoder_hidden: int = 32
    encoder_layers: int = 2
    encoder_heads: int = 2
    generator_hidden: int = 32
    generator_layers: int = 2
    generator_heads: int = 2
    init_std: float = 0.3


TINY = Size()
BASE = Size(768, 12, 12, 768, 6, 12, init_std=0.02)


def corpus(
    lines: int = 400, seed: int = 0, words: Sequence[str] = WORDS, length: int = 12
) -> list[str]:
    """``lines`` random sentences of ``length`` words drawn from ``words`` (default: a small
    vocabulary)."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(words), (lines, length), generator=generator)
    return [" ".join(words[i] for i in row) for row in picks.tolist()]


SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def pseudo_words(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct made-up words of two to four syllables: a corpus over them trains a
    tokenizer of any vocabulary size (a 30k-token BPE needs that many different words)."""
    generator = torch.Generator().manual_seed(seed)
    words: dict[str, None] = {}
    while len(words) < count:
        lengths = torch.randint(2, 5, (count,), generator=generator).tolist()
        picks = torch.randint(len(SYLLABLES), (count, 4), generator=generator).tolist()
        for length, row in zip(lengths, picks, strict=True):
            words.setdefault("".join(SYLLABLES[i] for i in row[:length]))
    return list(words)[:count]


def wordpiece_tokenizer(directory: Path, texts: Sequence[str] | None = None) -> Any:
    """A lowercasing WordPiece tokenizer trained on ``texts`` (default: the corpus), saved to
    ``directory``."""
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(
        corpus() if texts is None else texts,
        trainers.WordPieceTrainer(vocab_size=200, special_tokens=special),
    )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = BertTokenizerFast(tokenizer_object=tokenizer, do_lower_case=True, model_max_length=128)
    fast.save_pretrained(directory)
    return fast


def bert_config(vocab_size: int, size: Size = TINY) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=size.encoder_hidden,
        num_hidden_layers=size.encoder_layers,
        num_attention_heads=size.encoder_heads,
        intermediate_size=2 * size.encoder_hidden,
        max_position_embeddings=128,
        pad_token_id=0,
    )


def bert_dir(directory: Path, seed: int = 0) -> Path:
    """A random BERT (a stand-in for a sentence encoder) with its tokenizer."""
    from transformers import BertModel

    tokenizer = wordpiece_tokenizer(directory)
    torch.manual_seed(seed)
    BertModel(bert_config(len(tokenizer))).save_pretrained(directory)
    return directory


def dpr_dirs(
    root: Path, seed: int = 0, size: Size = TINY, texts: Sequence[str] | None = None
) -> tuple[Path, Path]:
    """Random DPR question and context encoders, saved as transformers saves them (their
    tokenizer trained on ``texts``, default: the corpus)."""
    from transformers import DPRConfig, DPRContextEncoder, DPRQuestionEncoder

    question, context = root / "question_encoder", root / "ctx_encoder"
    tokenizer = wordpiece_tokenizer(question, texts)
    tokenizer.save_pretrained(context)
    config = DPRConfig(**bert_config(len(tokenizer), size).to_dict(), projection_dim=0)
    torch.manual_seed(seed)
    DPRQuestionEncoder(config).save_pretrained(question)
    torch.manual_seed(seed + 1)
    DPRContextEncoder(config).save_pretrained(context)
    return question, context


def bpe_tokenizer(
    directory: Path,
    texts: Sequence[str] | None = None,
    vocab_size: int = 300,
    add_prefix_space: bool = False,
) -> Any:
    """A byte-level BPE tokenizer with BART's special tokens, trained on ``texts`` (default: the
    corpus); with ``add_prefix_space`` a word reads the same at the start of a text as inside."""
    from transformers import BartTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer.train_from_iterator(
        [*(corpus() if texts is None else texts), " / // ? . ,"],
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    fast = BartTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=512,
        add_prefix_space=add_prefix_space,
    )
    fast.save_pretrained(directory)
    return fast


def bart_model(vocab_size: int, seed: int = 0, size: Size = TINY) -> Any:
    """A random BART with transformers' BART token conventions (pad 1, bos 0, eos 2)."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    hidden = size.generator_hidden
    config = BartConfig(
        vocab_size=vocab_size,
        d_model=hidden,
        encoder_layers=size.generator_layers,
        decoder_layers=size.generator_layers,
        encoder_attention_heads=size.generator_heads,
        decoder_attention_heads=size.generator_heads,
        encoder_ffn_dim=2 * hidden,
        decoder_ffn_dim=2 * hidden,
        max_position_embeddings=512,
        init_std=size.init_std,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
    )
    model = BartForConditionalGeneration(config)
    model.eval()  # type: ignore[no-untyped-call]
    return model


def rag_checkpoint(
    root: Path,
    seed: int = 0,
    size: Size = TINY,
    vocab_size: int = 300,
    texts: Sequence[str] | None = None,
) -> tuple[Path, Path, Path]:
    """A RAG checkpoint written by transformers' RagTokenForGeneration.save_pretrained, its
    generator's BPE of ``vocab_size`` tokens trained on ``texts`` (default: the corpus).

    Returns the checkpoint directory and the DPR question / context encoder directories.
    (bitsandbytes' CPU 4-bit kernels need a generator at least 64 wide.)
    """
    from transformers import (
        DPRQuestionEncoder,
        DPRQuestionEncoderTokenizerFast,
        RagConfig,
        RagTokenForGeneration,
        RagTokenizer,
    )

    question_dir, context_dir = dpr_dirs(root / "dpr", seed, size, texts)
    generator_tokenizer = bpe_tokenizer(root / "bart", texts, vocab_size)
    generator = bart_model(len(generator_tokenizer), seed, size)
    question_encoder = DPRQuestionEncoder.from_pretrained(question_dir)
    config = RagConfig.from_question_encoder_generator_configs(
        question_encoder.config,
        generator.config,
        n_docs=3,
        retrieval_vector_size=size.encoder_hidden,
    )
    model = RagTokenForGeneration(config, question_encoder=question_encoder, generator=generator)
    checkpoint = root / "rag"
    model.save_pretrained(checkpoint)
    question_tokenizer = DPRQuestionEncoderTokenizerFast.from_pretrained(question_dir)
    RagTokenizer(question_tokenizer, generator_tokenizer).save_pretrained(checkpoint)  # type: ignore[no-untyped-call]
    return checkpoint, question_dir, context_dir


def recipe_knowledge_base(
    root: Path,
    context_dir: Path,
    index: Any,
    count: int = 120,
    texts: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """transformers' use_own_knowledge_dataset.py, step by step (hf_rag.md §12): a datasets
    directory of title, text and DPR context embeddings, and a faiss index file over them.
    The passages are ``texts`` (default: ``count`` lines of the corpus)."""
    import datasets
    from transformers import DPRContextEncoder, DPRQuestionEncoderTokenizerFast

    texts = list(corpus(count, seed=5) if texts is None else texts)
    titles = [" ".join(text.split()[:2]) for text in texts]
    tokenizer = DPRQuestionEncoderTokenizerFast.from_pretrained(context_dir)
    encoder = DPRContextEncoder.from_pretrained(context_dir)
    encoder.eval()  # type: ignore[no-untyped-call]
    with torch.no_grad():
        ids = tokenizer(titles, texts, truncation=True, padding="longest", return_tensors="pt")
        embeddings = encoder(ids["input_ids"], return_dict=True).pooler_output.numpy()
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "title": datasets.Value("string"),
            "embeddings": datasets.Sequence(datasets.Value("float32")),
        }
    )
    dataset = datasets.Dataset.from_dict(
        {"text": texts, "title": titles, "embeddings": list(embeddings)}, features=features
    )
    passages = root / "my_knowledge_dataset"
    dataset.save_to_disk(str(passages))
    dataset.add_faiss_index("embeddings", custom_index=index)
    index_path = root / "my_knowledge_dataset_index.faiss"
    dataset.get_index("embeddings").save(str(index_path))
    return passages, index_path


def rag_spec(
    checkpoint: Path,
    context_dir: Path,
    kb: Path,
    marginalizer: str = "rag-token",
    n_docs: int = 3,
    num_beams: int = 1,
    max_length: int = 20,
) -> str:
    """The spec of a pipeline over a ``rag_checkpoint`` and its imported knowledge base."""
    return f"""schema = 1
[pipeline]
n_docs = {n_docs}
checkpoint = "{checkpoint}"
[encoder]
type = "dpr"
passage_path = "{context_dir}"
[retriever]
type = "dense"
kb = "{kb}"
[retriever.index]
type = "faiss-exact"
[generator]
type = "bart"
[marginalizer]
type = "{marginalizer}"
[generation]
num_beams = {num_beams}
max_length = {max_length}
"""


CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def causal_lm_dir(directory: Path, seed: int = 0, chat: bool = True, hidden: int = 64) -> Path:
    """A random Llama-architecture causal LM with a trained BPE tokenizer; with ``chat``, a
    ChatML template and ``<|im_end|>`` as end of turn (as SmolLM2-Instruct has)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = bpe_tokenizer(directory)
    if chat:
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.3,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory
