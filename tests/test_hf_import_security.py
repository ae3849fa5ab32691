"""`ragloom kb import-hf` on hostile datasets directories: nothing outside the directory is read,
only the features a knowledge base uses are accepted, and unusable embeddings name their row."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pytest

from ragloom.cli import main

SECRET = "OUTSIDE-SECRET-PASSAGE"
DATA_FILE = "data-00000-of-00001.arrow"
OPENED: list[str] = []
RECORDING: list[bool] = []


def _record_opens(event: str, args: tuple[Any, ...]) -> None:
    if RECORDING and event == "open" and isinstance(args[0], str | Path):
        OPENED.append(str(args[0]))


sys.addaudithook(_record_opens)


def save_dataset(directory: Path, texts: list[str] | None = None, **columns: Any) -> Path:
    texts = texts or ["first passage", "second passage", "third passage"]
    data = {
        "title": [f"title {number}" for number in range(len(texts))],
        "text": texts,
        "embeddings": [[float(number + 1)] * 4 for number in range(len(texts))],
        **columns,
    }
    datasets.Dataset.from_dict(data).save_to_disk(str(directory))
    return directory


def edit_json(path: Path, change: Callable[[Any], None]) -> None:
    content = json.loads(path.read_text(encoding="utf-8"))
    change(content)
    path.write_text(json.dumps(content), encoding="utf-8")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A secret outside the dataset directory: a text file and a dataset's Arrow file."""
    save_dataset(tmp_path / "elsewhere", [SECRET])
    (tmp_path / "secret.txt").write_text(SECRET, encoding="utf-8")
    return tmp_path


def import_hf(capsys: pytest.CaptureFixture[str], passages: Path, out: Path) -> tuple[int, str]:
    """Run the import; returns its status, its stderr and the paths Python opened meanwhile
    (builtins.open, which PIL and ClassLabel use)."""
    capsys.readouterr()  # what saving the dataset printed
    OPENED.clear()
    RECORDING.append(True)
    try:
        status = main(["kb", "import-hf", str(passages), "--out", str(out)])
    finally:
        RECORDING.clear()
    return status, capsys.readouterr().err, list(OPENED)


def assert_refused(capsys: pytest.CaptureFixture[str], passages: Path, *message: str) -> None:
    out = passages.parent / "kb"
    status, err, opened = import_hf(capsys, passages, out)
    assert status == 1, err
    assert err.startswith("error: ") and "Traceback" not in err
    for fragment in message:
        assert fragment in err
    assert SECRET not in err
    assert not out.exists()
    assert not [path for path in opened if "secret" in path or "elsewhere" in path]


def data_files(*names: str) -> Callable[[Any], None]:
    def change(state: Any) -> None:
        state["_data_files"] = [{"filename": name} for name in names]

    return change


@pytest.mark.parametrize(
    "name",
    ["../elsewhere/" + DATA_FILE, "{root}/elsewhere/" + DATA_FILE, "..", "sub\\" + DATA_FILE, ""],
    ids=["dot-dot", "absolute", "parent", "backslash", "empty"],
)
def test_a_data_file_outside_the_directory_is_refused(
    capsys: pytest.CaptureFixture[str], outside: Path, name: str
) -> None:
    passages = save_dataset(outside / "passages")
    listed = name.format(root=outside)
    edit_json(passages / "state.json", data_files(DATA_FILE, listed))
    assert_refused(capsys, passages, f"lists the data file {listed!r}", "not the name of a file")


def test_a_symlink_out_of_the_directory_is_refused(
    capsys: pytest.CaptureFixture[str], outside: Path
) -> None:
    passages = save_dataset(outside / "passages")
    (passages / DATA_FILE).unlink()
    (passages / DATA_FILE).symlink_to(outside / "elsewhere" / DATA_FILE)
    assert_refused(capsys, passages, "outside the dataset directory; refused")


def test_metadata_files_linked_out_of_the_directory_are_refused(
    capsys: pytest.CaptureFixture[str], outside: Path
) -> None:
    passages = save_dataset(outside / "passages")
    (passages / "dataset_info.json").unlink()
    (passages / "dataset_info.json").symlink_to(outside / "secret.txt")
    assert_refused(capsys, passages, "dataset_info.json: it links to")


def test_a_listed_file_that_is_missing_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    passages = save_dataset(tmp_path / "passages")
    edit_json(passages / "state.json", data_files("data-00001-of-00002.arrow"))
    assert_refused(capsys, passages, "'data-00001-of-00002.arrow': no such file")


def image_column(secret: Path) -> pa.Array:
    """An Image column's storage (bytes, path) pointing at ``secret``, saved as plain structs."""
    storage = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    return pa.array([{"bytes": None, "path": str(secret)}] * 3, storage)


@pytest.mark.parametrize(
    ("column", "feature", "shown"),
    [
        ("image", {"_type": "Image"}, 'the column "image" is Image()'),
        ("audio", {"_type": "Audio"}, 'the column "audio" is Audio()'),
        ("image", {"bytes": {"dtype": "binary", "_type": "Value"}}, "is a nested struct"),
        ("text", {"_type": "Image"}, 'the column "text" is Image()'),
    ],
)
def test_features_that_read_files_are_refused(
    capsys: pytest.CaptureFixture[str],
    outside: Path,
    column: str,
    feature: dict[str, Any],
    shown: str,
) -> None:
    storage = {column: image_column(outside / "secret.txt")}
    passages = save_dataset(outside / "passages", **storage)

    def declare(info: Any) -> None:
        info["features"][column] = feature

    edit_json(passages / "dataset_info.json", declare)
    assert_refused(capsys, passages, "dataset_info.json", shown, "a knowledge base reads")


def test_a_class_label_reading_a_names_file_is_refused(
    capsys: pytest.CaptureFixture[str], outside: Path
) -> None:
    passages = save_dataset(outside / "passages", label=[0, 1, 0])

    def declare(info: Any) -> None:
        info["features"]["label"] = {
            "_type": "ClassLabel",
            "names_file": str(outside / "secret.txt"),
        }

    edit_json(passages / "dataset_info.json", declare)
    assert_refused(capsys, passages, 'the column "label" is ClassLabel()')


def test_features_declared_in_the_arrow_file_are_checked_too(
    capsys: pytest.CaptureFixture[str], outside: Path
) -> None:
    features = datasets.Features(
        {
            "title": datasets.Value("string"),
            "text": datasets.Value("string"),
            "embeddings": datasets.List(datasets.Value("float32")),
            "image": datasets.Image(),
        }
    )
    passages = outside / "passages"
    data = {
        "title": ["t"],
        "text": ["x"],
        "embeddings": [[1.0, 2.0]],
        "image": [{"bytes": None, "path": str(outside / "secret.txt")}],
    }
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(passages))
    edit_json(passages / "dataset_info.json", lambda info: info.update(features=None))
    assert_refused(capsys, passages, DATA_FILE, 'the column "image" is Image()')


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"title": [1, 2, 3]}, "the column \"title\" is Value('int64')"),
        ({"embeddings": [["a"], ["b"], ["c"]]}, 'the column "embeddings" is List(Value'),
        ({"embeddings": [[0.0, 1.0], [float("nan"), 1.0], [2.0, 3.0]]}, "row 1 (counting from 0)"),
        (
            {"embeddings": [[0.0], [1.0], [1e300]]},
            "of row 2 (counting from 0) hold NaN or infinity",
        ),
        (
            {"embeddings": [[0.0, 1.0], [1.0], [2.0, 3.0]]},
            "row 1 (counting from 0) has 1 embedding",
        ),
        ({"text": ["a", None, "c"]}, "row 1 (counting from 0) has no text (null)"),
    ],
    ids=["int-title", "string-embeddings", "nan", "overflow", "uneven", "null-text"],
)
def test_unusable_columns_are_refused(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    columns: dict[str, Any],
    message: str,
) -> None:
    texts = columns.pop("text", None)
    data = {"title": ["a", "b", "c"], "embeddings": [[1.0]] * 3, **columns}
    datasets.Dataset.from_dict({"text": texts or ["x", "y", "z"], **data}).save_to_disk(
        str(tmp_path / "passages")
    )
    assert_refused(capsys, tmp_path / "passages", message)


def test_empty_embeddings_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    features = datasets.Features(
        {
            "title": datasets.Value("string"),
            "text": datasets.Value("string"),
            "embeddings": datasets.List(datasets.Value("float32")),
        }
    )
    data = {"title": ["t"], "text": ["x"], "embeddings": [[]]}
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(tmp_path / "passages"))
    assert_refused(capsys, tmp_path / "passages", "the embeddings are empty")


def test_a_dataset_dict_asks_for_one_split(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    split = datasets.Dataset.from_dict({"title": ["t"], "text": ["x"], "embeddings": [[1.0]]})
    datasets.DatasetDict({"train": split}).save_to_disk(str(tmp_path / "passages"))
    assert_refused(capsys, tmp_path / "passages", "holds a DatasetDict", "train")


def test_plain_extra_columns_are_ignored_and_null_titles_read_empty(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    passages = save_dataset(
        tmp_path / "passages", title=["a", None, "c"], score=[0.5, 1.5, 2.5], url=["u", "v", "w"]
    )
    edit_json(passages / "state.json", lambda state: state.update(_format_type="torch"))
    status, err, _ = import_hf(capsys, passages, tmp_path / "kb")
    assert status == 0, err

    from ragloom.kb import KnowledgeBase

    kb = KnowledgeBase.open(tmp_path / "kb")
    stored = kb.passages.get([0, 1, 2])
    assert [(p.title, p.text) for p in stored] == [
        ("a", "first passage"),
        ("", "second passage"),
        ("c", "third passage"),
    ]
    assert kb.embeddings[2].tolist() == [3.0] * 4
