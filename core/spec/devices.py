"""Device keys (``device = "cpu"``): the forms a spec accepts, and the device one names here.

A spec's ``device`` is ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (GPU number N) or ``"auto"`` (CUDA
when torch sees a GPU, else the CPU); validation checks the form only, without importing torch.
:func:`resolve_device`, called when a component is built, refuses a CUDA device this machine
does not have.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from ..errors import ParameterError

DEVICE_FORMS = '"cpu", "cuda", "cuda:N" (GPU number N) or "auto" (CUDA when present, else the CPU)'

_FORM = re.compile(r"cpu|auto|cuda(:[0-9]+)?")


def _check_form(value: str) -> str:
    if not _FORM.fullmatch(value):
        raise ValueError(f"is not a device: use {DEVICE_FORMS}")
    return value


Device = Annotated[str, AfterValidator(_check_form)]
"""A spec value naming a device, in one of :data:`DEVICE_FORMS`."""


def resolve_device(device: str, key: str) -> str:
    """The torch device ``device`` (the value of ``key``, e.g. ``[generator] device``) names
    here: ``"auto"`` resolved; a CUDA device this machine lacks is a :class:`ParameterError`."""
    import torch

    if not _FORM.fullmatch(device):
        raise ParameterError(f'{key} = "{device}" is not a device: use {DEVICE_FORMS}.')
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not device.startswith("cuda"):
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ParameterError(
            f'{key} = "{device}", but this machine has no CUDA GPU that torch can use (or torch '
            f'was built without CUDA). Use device = "cpu", or "auto" to use a GPU when present.'
        )
    number = int(device.partition(":")[2] or 0)
    if number >= count:
        raise ParameterError(
            f'{key} = "{device}", but this machine has {count} CUDA GPU'
            f"{'s' if count > 1 else ''} (cuda:0 to cuda:{count - 1}). Use one of those, "
            f'"cpu", or "auto".'
        )
    return device
