"""What the index plugins share: input checks and the metadata file beside the index data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ragloom.errors import IndexFileError

META_FILE = "index.json"
IDS_FILE = "ids.npy"


def as_matrix(vectors: Any, dim: int, what: str) -> np.ndarray:
    """``vectors`` as a C-contiguous ``float32 [N, dim]`` array, or a ValueError saying why not."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{what} must have shape [N, {dim}], got {list(array.shape)}")
    return array


def as_ids(ids: Any, count: int) -> np.ndarray:
    """``ids`` as ``int64 [count]``, or a ValueError."""
    array = np.ascontiguousarray(ids, dtype=np.int64)
    if array.shape != (count,):
        raise ValueError(f"ids must have shape [{count}], got {list(array.shape)}")
    return array


def check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    (directory / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def read_meta(directory: Path, type_name: str, files: tuple[str, ...]) -> dict[str, Any]:
    """The metadata of a saved ``type_name`` index in ``directory``, checked, or IndexFileError."""
    missing = [name for name in (META_FILE, *files) if not (directory / name).is_file()]
    if missing:
        raise IndexFileError(
            f"{directory} is not a saved {type_name} index: {', '.join(missing)} missing. "
            f"Build the index again."
        )
    try:
        meta: dict[str, Any] = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise IndexFileError(
            f"{directory / META_FILE} is corrupt ({error}). Build the index again."
        ) from None
    if meta.get("type") != type_name:
        raise IndexFileError(f'{directory} holds a "{meta.get("type")}" index, not "{type_name}".')
    return meta


def load_ids(directory: Path, count: int) -> np.ndarray:
    """The saved id array, checked against the expected count."""
    try:
        ids = np.load(directory / IDS_FILE, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise IndexFileError(
            f"{directory / IDS_FILE} is truncated or corrupt ({error}). Build the index again."
        ) from None
    if ids.shape != (count,) or ids.dtype != np.int64:
        raise IndexFileError(
            f"{directory / IDS_FILE} holds {ids.shape[0] if ids.ndim else 0} ids, the index "
            f"{count}. Build the index again."
        )
    return ids


def lookup_rows(ids: np.ndarray, order: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions in ``ids`` of the ``wanted`` ids (``order`` sorts ``ids``); KeyError if absent."""
    if not len(wanted):
        return np.zeros(0, np.int64)
    sorted_ids = ids[order]
    places = np.searchsorted(sorted_ids, wanted).clip(max=max(len(ids) - 1, 0))
    found = len(ids) > 0 and sorted_ids[places] == wanted
    if not np.all(found):
        absent = wanted[~np.asarray(found, dtype=bool)] if len(ids) else wanted
        raise KeyError(f"ids not in the index: {absent[:20].tolist()}")
    return np.asarray(order[places], dtype=np.int64)
