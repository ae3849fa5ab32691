"""Reading documents (JSONL, CSV, DPR's TSV) and splitting them into passages."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RagloomError

FORMATS = ("jsonl", "csv", "tsv")


class DocumentsError(RagloomError):
    """An input file of documents that cannot be read."""


@dataclass(frozen=True)
class Document:
    """A document or passage: title, text, and the id the input gave it."""

    title: str
    text: str
    source_id: str


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "json", "ndjson"):
        return "jsonl"
    if suffix in ("csv", "tsv"):
        return suffix
    raise DocumentsError(
        f"{path}: cannot tell the format from the extension .{suffix}; name it .jsonl, .csv or "
        f".tsv, or pass --format."
    )


def read_documents(path: Path, format: str | None = None) -> Iterator[Document]:
    """Documents from ``path``: JSONL objects, or CSV/TSV rows with a header.

    Fields: ``text`` (required), ``title`` (optional), ``id`` (optional; the line number
    otherwise). DPR's ``psgs_w100.tsv`` (``id, text, title``) reads as TSV.
    """
    kind = format or detect_format(path)
    if kind not in FORMATS:
        raise DocumentsError(f"unknown format {kind!r}; use one of {', '.join(FORMATS)}.")
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as error:
        raise DocumentsError(f"{path}: cannot be read ({error.strerror}).") from None
    with handle:
        rows = _json_lines(path, handle) if kind == "jsonl" else _table(path, handle, kind)
        for line, row in rows:
            yield _document(path, line, row)


def _json_lines(path: Path, lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    for line, text in enumerate(lines, start=1):
        if text.strip():
            try:
                yield line, json.loads(text)
            except json.JSONDecodeError as error:
                raise DocumentsError(f"{path}:{line}: not valid JSON ({error.msg}).") from None


def _table(path: Path, lines: Iterable[str], kind: str) -> Iterator[tuple[int, Any]]:
    csv.field_size_limit(sys.maxsize)
    reader = csv.DictReader(lines, delimiter="\t" if kind == "tsv" else ",")
    if reader.fieldnames is None or "text" not in reader.fieldnames:
        raise DocumentsError(
            f"{path}: the header must name a text column (found: {reader.fieldnames})."
        )
    for row in reader:
        yield reader.line_num, row


def _document(path: Path, line: int, row: Any) -> Document:
    if not isinstance(row, dict):
        raise DocumentsError(f"{path}:{line}: expected an object with a text field.")
    text = row.get("text")
    if not isinstance(text, str):
        raise DocumentsError(f'{path}:{line}: no "text" string in this record.')
    title = row.get("title") or ""
    if not isinstance(title, str):
        raise DocumentsError(f'{path}:{line}: "title" must be a string.')
    source = row.get("id")
    return Document(title, text, str(source) if source not in (None, "") else str(line))


def split_words(text: str, words: int = 100) -> list[str]:
    """``text`` cut every ``words`` space-separated words (transformers' KB recipe)."""
    parts = text.split(" ")
    chunks = (" ".join(parts[i : i + words]).strip() for i in range(0, len(parts), words))
    return [chunk for chunk in chunks if chunk]


def passages(documents: Iterable[Document], words: int | None) -> Iterator[Document]:
    """Documents as passages: split into ``words``-word chunks when ``words`` is given."""
    for document in documents:
        if not document.text.strip():
            continue
        if words is None:
            yield document
            continue
        chunks = split_words(document.text, words)
        for number, chunk in enumerate(chunks):
            source = document.source_id if len(chunks) == 1 else f"{document.source_id}#{number}"
            yield Document(document.title, chunk, source)
