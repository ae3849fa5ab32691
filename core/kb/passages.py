"""Passages stored as an Arrow IPC file, memory-mapped: row ``i`` is the passage with id ``i``."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import IndexFileError
from ..protocols import PassageText
from .documents import Document

PASSAGES_FILE = "passages.arrow"
BATCH_ROWS = 65_536


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.int64()),
            ("title", pa.string()),
            ("text", pa.string()),
            ("source_id", pa.string()),
        ]
    )


def _batches(documents: Iterable[Document]) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for document in documents:
        batch.append(document)
        if len(batch) == BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def write_passages(path: Path, documents: Iterable[Document]) -> tuple[int, list[int]]:
    """Write the passages; returns their count and each one's length in characters."""
    import pyarrow as pa

    schema = _schema()
    count, lengths = 0, list[int]()
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for batch in _batches(documents):
            writer.write_batch(
                pa.record_batch(
                    [
                        pa.array(range(count, count + len(batch)), pa.int64()),
                        pa.array([d.title for d in batch], pa.string()),
                        pa.array([d.text for d in batch], pa.string()),
                        pa.array([d.source_id for d in batch], pa.string()),
                    ],
                    schema=schema,
                )
            )
            lengths.extend(len(d.title) + len(d.text) for d in batch)
            count += len(batch)
    return count, lengths


def check_ids(ids: Iterable[int], count: int, where: Path) -> None:
    """Refuse passage ids outside ``0..count-1``: an index that returns them was built for
    another knowledge base (or damaged)."""
    import numpy as np

    given = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
    outside = given[(given < 0) | (given >= count)].tolist()
    if outside:
        raise IndexFileError(
            f"passage ids {outside[:10]} are outside 0..{count - 1} of {where}: the index that "
            f"returned them belongs to another knowledge base or is damaged. Rebuild it with "
            f"`ragloom index build {where.parent} --type TYPE`."
        )


class ArrowPassageStore:
    """The passages of a KB, memory-mapped (nothing is read until asked for)."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa

        self.path = path
        try:
            source = pa.memory_map(str(path), "r")
            self._table = pa.ipc.open_file(source).read_all()
        except (OSError, pa.ArrowInvalid) as error:
            raise IndexFileError(
                f"{path} is missing, truncated or not an Arrow file ({error}). Build the "
                f"knowledge base again."
            ) from None
        if self._table.schema.names[:3] != ["id", "title", "text"]:
            raise IndexFileError(f"{path} lacks the columns id, title, text.")
        self._titles = self._table.column("title").chunks
        self._texts = self._table.column("text").chunks
        sizes = [len(chunk) for chunk in self._titles]
        self._starts = [sum(sizes[:number]) for number in range(len(sizes))]

    def __len__(self) -> int:
        return int(self._table.num_rows)

    def get(self, ids: Sequence[int]) -> list[PassageText]:
        check_ids(ids, len(self), self.path)
        if not len(ids):
            return []
        return [self._passage(int(passage_id)) for passage_id in ids]

    def _passage(self, passage_id: int) -> PassageText:
        """One row, read from its record batch in place: a ``take`` on the whole chunked table
        copies every chunk it touches, which costs milliseconds per call on a large KB."""
        number = bisect.bisect_right(self._starts, passage_id) - 1
        row = passage_id - self._starts[number]
        title, text = self._titles[number][row].as_py(), self._texts[number][row].as_py()
        return PassageText(passage_id, title, text)

    def columns(self, start: int, stop: int) -> tuple[list[str], list[str]]:
        """Titles and texts of rows ``start..stop``."""
        part = self._table.slice(start, stop - start).select(["title", "text"]).to_pydict()
        return part["title"], part["text"]
