"""Small tensor helpers shared by the pipeline and the marginalizers (torch loads on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def shift_left(labels: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """``labels[:, 1:]`` with a column of ``pad_token_id`` appended: what each position predicts.

    With transformers' RAG layout (labels fed unshifted), position ``t`` predicts ``labels[t+1]``.
    """
    import torch

    pad = torch.full_like(labels[:, :1], pad_token_id)
    return torch.cat([labels[:, 1:], pad], dim=1)
