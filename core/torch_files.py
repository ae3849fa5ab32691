"""Reading torch pickle files (``.bin`` weights, ``.pt`` training states) safely.

torch reads them with ``weights_only=True``: tensors and plain containers only, since a general
pickle runs code from the file while it loads. A file that needs more is refused with
:class:`UnsafePickleError`, which says how to convert a trusted file to safetensors; a truncated
or corrupt file raises :class:`DamagedFileError`. Both are one paragraph, without torch's own
advice to turn ``weights_only`` off.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import RagloomError

WEIGHTS_ONLY_REFUSAL = "Weights only load failed"
"""How torch's message starts when a pickle needs more than tensors."""


class UnsafePickleError(RagloomError):
    """A pickle file that holds more than tensors: loading it could run code from the file."""


class DamagedFileError(RagloomError):
    """A torch file that is truncated or corrupt."""


def unsafe_pickle_message(path: Path, error: Exception) -> str:
    """Why ``path`` is refused and how to convert it, naming what the pickle asked for."""
    named = re.search(r"GLOBAL ([\w.]+)", str(error))
    holds = f" (it refers to {named.group(1)})" if named else ""
    return (
        f"{path} is a pickle that holds more than tensors{holds}; loading it could run code "
        f"from the file, so ragloom refuses it. If you trust where it came from, convert it to "
        f'safetensors once, in a Python session of your own: state = torch.load("{path}", '
        f"weights_only=False), load it into its model (model.load_state_dict(state)), save that "
        f"with model.save_pretrained(directory, safe_serialization=True), and delete "
        f"{path.name}."
    )


def first_line(error: BaseException) -> str:
    """The first line of an error's message (torch's run over several)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


@contextlib.contextmanager
def refusing_pickles(
    path: Path, damaged: str = "Replace it with an intact copy."
) -> Iterator[None]:
    """Unpickling errors raised inside, about the file at ``path``, as :class:`UnsafePickleError`
    (torch refused a pickle that needs more than tensors) or :class:`DamagedFileError` (the
    pickle is corrupt; ``damaged`` says what to do)."""
    try:
        yield
    except pickle.UnpicklingError as error:
        if WEIGHTS_ONLY_REFUSAL in str(error):
            raise UnsafePickleError(unsafe_pickle_message(path, error)) from None
        raise DamagedFileError(f"{path} is corrupt ({first_line(error)}). {damaged}") from None


def load_tensors(path: Path, damaged: str = "Replace it with an intact copy.") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a refused pickle raises
    :class:`UnsafePickleError`, a truncated or corrupt file :class:`DamagedFileError` saying
    ``damaged`` (what to do)."""
    import torch

    with refusing_pickles(path, damaged):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, ValueError) as error:  # torch's zip reader, cut short
            raise DamagedFileError(
                f"{path} is truncated or corrupt ({first_line(error)}). {damaged}"
            ) from None
