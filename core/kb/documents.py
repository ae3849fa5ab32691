"""Reading documents (JSONL, CSV, DPR's TSV) and splitting them into passages."""

from __future__ import annotations

import csv
import json
import logging
import reprlib
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import RagloomError

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "tsv")
DELIMITERS = {"csv": ",", "tsv": "\t"}
BYTE_ORDER_MARK = "\ufeff"
JSON_KINDS = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
}


class DocumentsError(RagloomError):
    """An input file of documents that cannot be read, or a way of splitting them that cannot
    work."""


@dataclass(frozen=True)
class Document:
    """A document or passage: title, text, and the id the input gave it."""

    title: str
    text: str
    source_id: str


def detect_format(path: Path) -> str:
    """``jsonl``, ``csv`` or ``tsv``, from the file name's extension."""
    if path.is_dir():
        raise DocumentsError(f"{path}: cannot be read (Is a directory); give a file of documents.")
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
    otherwise). DPR's ``psgs_w100.tsv`` (``id, text, title``) reads as TSV. The file is UTF-8
    (a leading byte order mark is skipped); CSV and TSV quote as Python's ``csv`` module writes.

    Every input problem is a :class:`DocumentsError` naming the file and, past the header, the
    line: a file that cannot be opened (missing, a directory); bytes that are not UTF-8, or a
    NUL byte (a binary file); a JSONL line that is not JSON, is nested too deeply, or is not an
    object; a CSV/TSV header without a ``text`` column or naming a column twice; a record with
    more fields than the header (an unquoted delimiter in a text); a malformed quote, and a
    quote that never closes (named at the line where it opens, since it would swallow every
    row after it); ``text`` missing or not a string, ``title`` not a string or null, ``id`` not
    a string or a number; a string with an unpaired surrogate escape. An empty file reads as no
    documents (``kb build`` then refuses: no passages to index). The format is checked when this
    is called, the file as the documents are read.
    """
    kind = format or detect_format(path)
    if kind not in FORMATS:
        raise DocumentsError(f"unknown format {kind!r}; use one of {', '.join(FORMATS)}.")
    return _read(path, kind)


def _read(path: Path, kind: str) -> Iterator[Document]:
    with _opened(path) as lines:
        rows = _json_lines(lines) if kind == "jsonl" else _table(lines, kind)
        for line, row in rows:
            yield _document(path, line, row)


def json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of the JSONL file ``path``, each line
    checked as the documents' are (UTF-8, no NUL byte, valid and not too deep JSON)."""
    with _opened(path) as lines:
        yield from _json_lines(lines)


@contextmanager
def _opened(path: Path) -> Iterator[TextLines]:
    try:
        handle = path.open("rb")
    except OSError as error:
        raise DocumentsError(f"{path}: cannot be read ({error.strerror}).") from None
    with handle:
        yield TextLines(path, handle)


class TextLines:
    """The lines of a UTF-8 file, decoded one at a time so that a bad byte names its line.

    ``number`` is the number of the line read last; ``ended`` turns true once the file is read
    to its end.
    """

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path = path
        self.number = 0
        self.ended = False
        self._handle = handle

    def __iter__(self) -> Iterator[str]:
        for raw in self._handle:
            self.number += 1
            yield self._decoded(raw)
        self.ended = True

    def _decoded(self, raw: bytes) -> str:
        where = f"{self.path}:{self.number}"
        if b"\0" in raw:
            raise DocumentsError(
                f"{where}: a NUL byte (byte {raw.index(0) + 1} of the line): this is a binary "
                f"file, not JSONL, CSV or TSV text."
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DocumentsError(
                f"{where}: not UTF-8 text (byte 0x{raw[error.start]:02x} at byte "
                f"{error.start + 1} of the line); convert the file to UTF-8, e.g. "
                f"`iconv -f latin1 -t utf-8`."
            ) from None
        if self.number > 1:
            return text
        if "\r" in text.removesuffix("\n").removesuffix("\r"):
            raise DocumentsError(
                f"{where}: lines end with a lone carriage return (classic Mac line endings); "
                f"convert them to newlines, e.g. `tr '\\r' '\\n'`."
            )
        return text.removeprefix(BYTE_ORDER_MARK)


def _json_lines(lines: TextLines) -> Iterator[tuple[int, Any]]:
    for text in lines:
        if text.strip():
            yield lines.number, _json_value(f"{lines.path}:{lines.number}", text)


def _json_value(where: str, text: str) -> Any:
    hint = "JSONL holds one JSON object per line"
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DocumentsError(f"{where}: not valid JSON ({error.msg}); {hint}.") from None
    except RecursionError:
        raise DocumentsError(f"{where}: JSON nested too deeply to read; {hint}.") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise DocumentsError(f"{where}: JSON that cannot be read ({error}).") from None


def _table(lines: TextLines, kind: str) -> Iterator[tuple[int, dict[str, str]]]:
    records = _records(lines, kind)
    header = next(records, None)
    if header is None:
        raise DocumentsError(
            f"{lines.path}: empty; a {kind.upper()} file starts with a header row naming a text "
            f"column."
        )
    columns = _checked_header(lines.path, header[1])
    for line, fields in records:
        if len(fields) > len(columns):
            raise DocumentsError(
                f"{lines.path}:{line}: {len(fields)} fields, but the header names "
                f"{len(columns)}; quote a field that contains {DELIMITERS[kind]!r}."
            )
        yield line, dict(zip(columns, fields, strict=False))


def _checked_header(path: Path, columns: list[str]) -> list[str]:
    if "text" not in columns:
        raise DocumentsError(f"{path}: the header must name a text column (found: {columns}).")
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise DocumentsError(f"{path}: the header names {', '.join(repeated)} more than once.")
    return columns


def _records(lines: TextLines, kind: str) -> Iterator[tuple[int, list[str]]]:
    """The non-blank CSV/TSV records, each with the line it starts on."""
    csv.field_size_limit(sys.maxsize)
    record: list[str] = []
    reader = csv.reader(_kept(lines, record), delimiter=DELIMITERS[kind], strict=True)
    while True:
        start = reader.line_num + 1
        record.clear()
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise _malformed(lines, kind, start, record, error) from None
        if fields:
            yield start, fields


def _kept(lines: Iterable[str], kept: list[str]) -> Iterator[str]:
    for line in lines:
        kept.append(line)
        yield line


def _malformed(
    lines: TextLines, kind: str, start: int, record: list[str], error: csv.Error
) -> DocumentsError:
    """The error for a record ``csv`` refused (``record``: its lines, from line ``start``)."""
    if not lines.ended:
        return DocumentsError(
            f"{lines.path}:{lines.number}: not valid {kind.upper()} ({error}); a field that "
            f'starts with a quote must end with one, and a quote inside it is written twice ("").'
        )
    # Only a quoted field still open at the end of the file fails there; read leniently, the
    # record's fields before it say how many lines down from ``start`` it opens.
    fields = next(csv.reader(record, delimiter=DELIMITERS[kind]))
    opened = start + sum(field.count("\n") for field in fields[:-1])
    return DocumentsError(
        f"{lines.path}:{opened}: a quoted field opens here and never closes, so it would swallow "
        f"every line up to the end of the file (line {lines.number}); close the quote, or write a "
        f'quote that belongs to the text twice ("").'
    )


def _document(path: Path, line: int, row: Any) -> Document:
    where = f"{path}:{line}"
    if not isinstance(row, dict):
        raise DocumentsError(
            f'{where}: expected an object with a "text" field, found {described(row)}.'
        )
    if row.get("text") is None:
        raise DocumentsError(f'{where}: no "text" string in this record.')
    title, text = string_field(where, row, "title"), string_field(where, row, "text")
    return Document(title, text, _source(where, line, row))


def string_field(where: str, row: dict[str, Any], key: str) -> str:
    """``row[key]``, a string ("" when absent or null)."""
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DocumentsError(f'{where}: "{key}" must be a string, found {described(value)}.')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise DocumentsError(
            f'{where}: "{key}" holds an unpaired surrogate escape '
            f"(\\u{ord(value[error.start]):04x}), which is not text."
        ) from None
    return value


def _source(where: str, line: int, row: dict[str, Any]) -> str:
    """The record's ``id`` as a string; its line number when it has none."""
    value = row.get("id")
    if value is None or value == "":
        return str(line)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DocumentsError(
            f'{where}: "id" must be a string or a number, found {described(value)}.'
        )
    return string_field(where, row, "id") if isinstance(value, str) else str(value)


def described(value: Any) -> str:
    """A JSON value for a message: its kind and a shortened repr (``a list [1, 2]``)."""
    if value is None:
        return "null"
    return f"{JSON_KINDS[type(value)]} {reprlib.repr(value)}"


def _check_words(words: int) -> None:
    if words < 1:
        raise DocumentsError(
            f"passages of {words} words cannot be cut: give a positive number of words per "
            f"passage (DPR and RAG cut passages of 100), or None to keep whole documents."
        )


def split_words(text: str, words: int = 100) -> list[str]:
    """``text`` cut every ``words`` (at least 1) space-separated words (transformers' KB
    recipe)."""
    _check_words(words)
    parts = text.split(" ")
    chunks = (" ".join(parts[i : i + words]).strip() for i in range(0, len(parts), words))
    return [chunk for chunk in chunks if chunk]


def passages(documents: Iterable[Document], words: int | None) -> Iterator[Document]:
    """Documents as passages: split into ``words``-word chunks when ``words`` is given (at
    least 1, checked here rather than when the passages are read). Documents whose text is
    empty or only whitespace are left out, and once the documents are read one warning says
    how many and names the first."""
    if words is not None:
        _check_words(words)
    return _passages(documents, words)


def _passages(documents: Iterable[Document], words: int | None) -> Iterator[Document]:
    read, blank = 0, BlankDocuments()
    for document in documents:
        read += 1
        if not document.text.strip():
            blank.add(document)
            continue
        if words is None:
            yield document
            continue
        chunks = split_words(document.text, words)
        for number, chunk in enumerate(chunks):
            source = document.source_id if len(chunks) == 1 else f"{document.source_id}#{number}"
            yield Document(document.title, chunk, source)
    blank.report(read)


class BlankDocuments:
    """The documents left out for having no text: how many, and the ids of the first few."""

    SHOWN = 5

    def __init__(self) -> None:
        self.count = 0
        self.ids: list[str] = []

    def add(self, document: Document) -> None:
        self.count += 1
        if len(self.ids) < self.SHOWN:
            self.ids.append(document.source_id)

    def report(self, read: int) -> None:
        """Warn, once, that ``count`` of the ``read`` documents were left out."""
        if not self.count:
            return
        more = f" and {self.count - len(self.ids):,} more" if self.count > len(self.ids) else ""
        has, are, them = ("has", "is", "it") if self.count == 1 else ("have", "are", "them")
        log.warning(
            "%s of %s records %s no text (empty or only whitespace) and %s left out: ids %s%s "
            "(line numbers for records without an id). Give %s text, or remove %s.",
            f"{self.count:,}",
            f"{read:,}",
            has,
            are,
            ", ".join(self.ids),
            more,
            them,
            them,
        )
