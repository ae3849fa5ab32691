"""Reading document files: every malformed input is a DocumentsError naming its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragloom.kb.documents import DocumentsError, passages, read_documents, split_words

BAD_INPUTS = [
    ("deep.jsonl", b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", r":1: JSON nested too"),
    ("latin1.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', r":2: not UTF-8 text \(byte 0xe9"),
    ("latin1.csv", b"id,text\n1,ok\n2,caf\xe9\n", r":3: not UTF-8 text"),
    ("binary.jsonl", bytes(range(256)), r":1: a NUL byte \(byte 1 of the line\): this is a binary"),
    ("number.jsonl", b'{"text": 5}\n', r':1: "text" must be a string, found a number 5\.'),
    ("list.jsonl", b'{"text": ["a"]}\n', r':1: "text" must be a string, found a list'),
    ("null.jsonl", b'{"text": null}\n', r':1: no "text" string in this record\.'),
    ("title.jsonl", b'{"text": "t", "title": 0}\n', r':1: "title" must be a string, found a'),
    ("id.jsonl", b'{"text": "t", "id": {"a": 1}}\n', r':1: "id" must be a string or a number'),
    ("array.jsonl", b'[{"text": "a"}]\n', r':1: expected an object with a "text" field, found a'),
    ("pretty.jsonl", b'[\n  {"text": "a"}\n]\n', r":1: not valid JSON .*one JSON object per line"),
    ("surrogate.jsonl", b'{"text": "a\\ud800"}\n', r':1: "text" holds an unpaired surrogate'),
    ("digits.jsonl", b'{"text": "t", "id": ' + b"1" * 5000 + b"}\n", r":1: JSON that cannot be"),
    ("empty.csv", b"", r"empty; a CSV file starts with a header row"),
    ("twice.csv", b"text,text\na,b\n", r"the header names text more than once"),
    ("comma.csv", b"id,text\n1,hello, world\n", r":2: 3 fields, but the header names 2; quote"),
    ("stray.csv", b'id,text\n1,"quoted" then not\n', r":2: not valid CSV \(.*\); a field that"),
    (
        "open.csv",
        b'id,text\n1,"hello\n2,world\n3,more\n',
        r":2: a quoted field opens here and never",
    ),
    ("mac.csv", b"id,text\r1,a\r2,b\r", r":1: lines end with a lone carriage return"),
    (
        "later.tsv",
        b'id\ttext\ttitle\n1\t"two\nlines"\t"open\n2\tb\tc\n',
        r":3: a quoted field opens",
    ),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_a_malformed_input_names_its_file_and_line(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DocumentsError, match=message) as raised:
        list(read_documents(path))
    assert str(raised.value).startswith(str(path))


def test_a_directory_or_a_missing_file_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(DocumentsError, match=r"dir\.jsonl: cannot be read \(Is a directory\)"):
        list(read_documents(tmp_path / "dir.jsonl"))
    with pytest.raises(DocumentsError, match=r"cannot be read \(No such file or directory\)"):
        list(read_documents(tmp_path / "missing.jsonl"))


def test_an_unknown_format_is_refused_when_called() -> None:
    with pytest.raises(DocumentsError, match=r"unknown format 'xml'"):
        read_documents(Path("never-opened.jsonl"), "xml")


def test_an_empty_jsonl_file_holds_no_documents(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n  \n")
    assert list(read_documents(path)) == []


def test_a_byte_order_mark_is_skipped_and_null_titles_are_empty(tmp_path: Path) -> None:
    csv_path, jsonl_path = tmp_path / "excel.csv", tmp_path / "bom.jsonl"
    csv_path.write_bytes("\ufeffid,text,title\r\n7,a text,\r\n".encode())
    jsonl_path.write_bytes('\ufeff{"text": "t", "title": null, "id": 3}\n'.encode())
    (csv_document,) = read_documents(csv_path)
    assert (csv_document.source_id, csv_document.text, csv_document.title) == ("7", "a text", "")
    (json_document,) = read_documents(jsonl_path)
    assert (json_document.source_id, json_document.title) == ("3", "")


def test_quoted_fields_keep_their_newlines_and_record_lines_count_them(tmp_path: Path) -> None:
    path = tmp_path / "multi.csv"
    path.write_text('text\n"one\ntwo"\n""\nthree,\n', encoding="utf-8")
    with pytest.raises(DocumentsError, match=r"multi\.csv:5: 2 fields"):
        list(read_documents(path))
    path.write_text('text\n"one\ntwo"\n\nthree\n', encoding="utf-8")
    documents = list(read_documents(path))
    assert [(d.text, d.source_id) for d in documents] == [("one\ntwo", "2"), ("three", "5")]


@pytest.mark.parametrize("words", [0, -5])
def test_split_words_must_be_positive(words: int) -> None:
    with pytest.raises(DocumentsError, match=rf"passages of {words} words cannot be cut"):
        passages([], words)
    with pytest.raises(DocumentsError, match="positive"):
        split_words("a b c", words)
