"""Opening a ``datasets.save_to_disk`` directory that may come from anyone, as a knowledge base.

``datasets.load_from_disk`` trusts the directory: it reads whatever files ``state.json`` lists
(``../elsewhere.arrow`` included), and features decode file paths stored in the rows (``Image``,
``Audio``) or read files while they are parsed (``ClassLabel(names_file=...)``). So before
``datasets`` sees the directory, :func:`load_kb_dataset` checks that every file it will read is a
plain file of the directory itself, and that every feature declared (in ``dataset_info.json`` and
in each Arrow file's metadata) is one a knowledge base uses: ``title`` and ``text`` strings, an
``embeddings`` sequence of floats, and other columns of plain values (which are ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from ..errors import IndexFileError

STATE_FILE = "state.json"
INFO_FILE = "dataset_info.json"
DATASET_DICT_FILE = "dataset_dict.json"
REQUIRED_COLUMNS = ("title", "text", "embeddings")
STRING_DTYPES = frozenset({"string", "large_string"})
FLOAT_DTYPES = frozenset({"float16", "float32", "float64"})
SEQUENCE_TYPES = frozenset({"Sequence", "List", "LargeList"})
ACCEPTED = (
    "a knowledge base reads title and text as strings (Value('string')) and embeddings as a "
    "sequence of floats (List(Value('float32'))), and ignores other columns of plain values "
    "(Value)"
)
URL_MARKERS = ("::", "://")  # what fsspec, under datasets, reads as a URL or a chain of them

Model = TypeVar("Model", bound=BaseModel)


class DataFile(BaseModel):
    """One entry of ``state.json``'s ``_data_files``."""

    filename: str


class DatasetState(BaseModel):
    """The part of ``state.json`` that says which files hold the rows."""

    data_files: list[DataFile] = Field(alias="_data_files", min_length=1)


class DatasetInfo(BaseModel):
    """The part of ``dataset_info.json`` (or of an Arrow file's metadata) that declares
    features."""

    features: dict[str, Any] | None = None


class ArrowMetadata(BaseModel):
    """The ``huggingface`` entry of an Arrow file's schema metadata."""

    info: DatasetInfo | None = None


def load_kb_dataset(directory: Path) -> Any:
    """The dataset saved in ``directory``, once every file and feature it uses is checked.

    Raises :class:`IndexFileError` naming the file, and the column or data file, that is
    refused. The dataset comes back unformatted (python objects), whatever format was saved.
    """
    import datasets

    root = _dataset_root(directory)
    state = _parsed(_inside(root, STATE_FILE), DatasetState)
    data_files = [_inside(root, entry.filename, listed=True) for entry in state.data_files]
    info_file = _inside(root, INFO_FILE)
    _check_features(info_file, _parsed(info_file, DatasetInfo).features)
    for data_file in data_files:
        _check_features(data_file, _arrow_features(data_file))
    try:
        dataset = datasets.Dataset.load_from_disk(str(root))
    except (KeyError, TypeError, ValueError, OSError) as error:
        raise IndexFileError(
            f"{directory}: datasets cannot load this saved dataset ({type(error).__name__}: "
            f"{error})."
        ) from None
    _check_features(root, dataset.features.to_dict())
    missing = [name for name in REQUIRED_COLUMNS if name not in dataset.column_names]
    if missing:
        raise IndexFileError(
            f"{directory} lacks the column(s) {', '.join(missing)}; transformers' custom "
            f"knowledge bases have title, text and embeddings."
        )
    missing_text = _first_row(_nulls(dataset, "text"))
    if missing_text is not None:
        raise IndexFileError(
            f"{directory}: row {missing_text} (counting from 0) has no text (null)."
        )
    return dataset.with_format(None)


def kb_embeddings(directory: Path, dataset: Any) -> Any:
    """The ``embeddings`` column of a dataset from :func:`load_kb_dataset` as a float32 matrix
    [rows, dim], refused unless every row is a vector of one nonzero length of finite values."""
    import numpy as np
    import pyarrow.compute as pc

    if len(dataset) == 0:
        raise IndexFileError(f"{directory} holds no passages.")
    null = _first_row(_nulls(dataset, "embeddings"))
    if null is not None:
        raise IndexFileError(f"{directory}: row {null} (counting from 0) has no embeddings (null).")
    lengths = pc.list_value_length(dataset.data.column("embeddings")).to_numpy()
    if lengths[0] == 0:
        raise IndexFileError(f"{directory}: the embeddings are empty (row 0 has no values).")
    uneven = _first_row(lengths != lengths[0])
    if uneven is not None:
        raise IndexFileError(
            f"{directory}: row {uneven} (counting from 0) has {lengths[uneven]} embedding values, "
            f"row 0 has {lengths[0]}; every passage needs a vector of the same size."
        )
    with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf, refused below
        matrix = np.asarray(dataset.with_format("numpy")["embeddings"], dtype=np.float32)
    unusable = _first_row(~np.isfinite(matrix).all(axis=1))
    if unusable is not None:
        raise IndexFileError(
            f"{directory}: the embeddings of row {unusable} (counting from 0) hold NaN or "
            f"infinity (as float32); re-encode that passage."
        )
    return matrix


def _nulls(dataset: Any, column: str) -> Any:
    """Whether each row of ``column`` is null (a numpy bool array)."""
    import pyarrow.compute as pc

    return pc.is_null(dataset.data.column(column)).to_numpy()


def _first_row(mask: Any) -> int | None:
    """The first row where ``mask`` is true, or None."""
    import numpy as np

    rows = np.flatnonzero(mask)
    return int(rows[0]) if rows.size else None


def _dataset_root(directory: Path) -> Path:
    root = directory.resolve()
    if any(marker in str(root) for marker in URL_MARKERS):
        raise IndexFileError(
            f"{root}: datasets would read a path containing {' or '.join(URL_MARKERS)} as a URL; "
            f"rename the directory or link to it."
        )
    if not root.is_dir():
        raise IndexFileError(f"{directory} is not a saved datasets directory (not a directory).")
    if (root / DATASET_DICT_FILE).exists() and not (root / STATE_FILE).exists():
        raise IndexFileError(
            f"{directory} holds a DatasetDict; pass the directory of one split, e.g. "
            f"{directory / 'train'}."
        )
    return root


def _inside(root: Path, name: str, listed: bool = False) -> Path:
    """``root / name``, a regular file that really is in ``root`` (a symlink may point only to
    another file of ``root``)."""
    source = f"{root / STATE_FILE} lists the data file {name!r}" if listed else str(root / name)
    if not name or name in (".", "..") or any(char in name for char in "/\\\0"):
        raise IndexFileError(
            f"{source}: not the name of a file in the dataset directory; a saved dataset reads "
            f"only its own files (data-00000-of-00001.arrow), so it is refused."
        )
    path = root / name
    resolved = path.resolve()
    if resolved.parent != root:
        raise IndexFileError(
            f"{source}: it links to {resolved}, outside the dataset directory; refused."
        )
    if not resolved.is_file():
        raise IndexFileError(
            f"{source}: no such file in {root}; is this a datasets.save_to_disk directory?"
        )
    return path


def _parsed(path: Path, model: type[Model], data: bytes | None = None) -> Model:
    """``data`` (the contents of ``path`` by default) validated as ``model``."""
    try:
        return model.model_validate_json(path.read_bytes() if data is None else data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise IndexFileError(
            f"{path}: not what datasets.save_to_disk writes ({where + ': ' if where else ''}"
            f"{first['msg']})."
        ) from None


def _arrow_features(path: Path) -> dict[str, Any] | None:
    """The features declared in the metadata of an Arrow stream file (as datasets writes)."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:
            schema = pa.ipc.open_stream(source).schema
    except (pa.ArrowInvalid, OSError) as error:
        raise IndexFileError(f"{path}: not an Arrow stream file ({error}).") from None
    metadata = (schema.metadata or {}).get(b"huggingface")
    if metadata is None:
        return None
    info = _parsed(path, ArrowMetadata, metadata).info
    return info.features if info else None


def _check_features(source: Path, features: dict[str, Any] | None) -> None:
    """Refuse any column whose declared feature a knowledge base does not read."""
    for name, feature in (features or {}).items():
        if not _accepted(name, feature):
            raise IndexFileError(
                f'{source}: the column "{name}" is {_described(feature)}; {ACCEPTED}.'
            )


def _accepted(name: str, feature: Any) -> bool:
    if name in ("title", "text"):
        return _is_value(feature, STRING_DTYPES)
    if name == "embeddings":
        return (
            isinstance(feature, dict)
            and feature.get("_type") in SEQUENCE_TYPES
            and _is_value(feature.get("feature"), FLOAT_DTYPES)
        )
    return _is_value(feature)


def _is_value(feature: Any, dtypes: frozenset[str] | None = None) -> bool:
    """Whether ``feature`` (as JSON) is a ``Value``, of one of ``dtypes`` when given."""
    return (
        isinstance(feature, dict)
        and feature.get("_type") == "Value"
        and (dtypes is None or feature.get("dtype") in dtypes)
    )


def _described(feature: Any) -> str:
    if not isinstance(feature, dict):
        return f"declared as {type(feature).__name__} {str(feature)[:60]}"
    kind = feature.get("_type")
    if not isinstance(kind, str):
        return "a nested struct"
    if kind == "Value":
        return f"Value({feature.get('dtype')!r})"
    inner = feature.get("feature")
    return f"{kind}({'' if inner is None else _described(inner)})"
