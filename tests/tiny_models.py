"""Tiny random models and real trained tokenizers, made in the test (no hub access).

``bert_dir`` writes a BERT-like encoder (as sentence encoders are); ``dpr_dirs`` writes a DPR
question encoder and context encoder pair with their tokenizers, as transformers saves them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, BertTokenizerFast

WORDS = (
    "paris france capital city river seine tower museum people live million london england "
    "thames bridge queen berlin germany wall history war music opera rome italy empire pope "
    "who what when where how many wrote book author novel animal farm orwell moon apollo "
    "landing astronaut rocket space einstein physics relativity theory light energy mass"
).split()


def corpus(lines: int = 400, seed: int = 0) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(WORDS), (lines, 12), generator=generator)
    return [" ".join(WORDS[i] for i in row) for row in picks.tolist()]


def wordpiece_tokenizer(directory: Path) -> BertTokenizerFast:
    """A lowercasing WordPiece tokenizer trained on the tiny corpus, saved to ``directory``."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(
        corpus(), trainers.WordPieceTrainer(vocab_size=200, special_tokens=special)
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


def bert_config(vocab_size: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
    )


def bert_dir(directory: Path, seed: int = 0) -> Path:
    """A tiny random BERT (a stand-in for a sentence encoder) with its tokenizer."""
    tokenizer = wordpiece_tokenizer(directory)
    torch.manual_seed(seed)
    BertModel(bert_config(len(tokenizer))).save_pretrained(directory)
    return directory


def dpr_dirs(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Tiny random DPR question and context encoders, saved as transformers saves them."""
    from transformers import DPRConfig, DPRContextEncoder, DPRQuestionEncoder

    question, context = root / "question_encoder", root / "ctx_encoder"
    tokenizer = wordpiece_tokenizer(question)
    tokenizer.save_pretrained(context)
    config = DPRConfig(**bert_config(len(tokenizer)).to_dict(), projection_dim=0)
    torch.manual_seed(seed)
    DPRQuestionEncoder(config).save_pretrained(question)
    torch.manual_seed(seed + 1)
    DPRContextEncoder(config).save_pretrained(context)
    return question, context
