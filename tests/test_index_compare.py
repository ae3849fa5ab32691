"""`ragloom index compare` on small knowledge bases: every index type with its defaults, names
that say what was built, questions as queries, and the figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import encoder_workspace, write_documents
from ragloom.cli import main
from ragloom.kb.compare import Measurement, comparison_figure, front_outline, pareto_front
from ragloom.plugins.faiss_index import auto_factory
from ragloom.testing.random_kb import random_knowledge_base

FOUR_TYPES = "faiss-exact,faiss-compressed,faiss-hnsw-sq8,hnsw"


@pytest.fixture(scope="module")
def tiny_kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 vectors of dim 64 (the width of transformers' tiny RAG test models)."""
    out = tmp_path_factory.mktemp("compare") / "kb"
    random_knowledge_base(out, 1_000, 64)
    return out


def compare(capsys: pytest.CaptureFixture[str], *argv: str) -> list[list[str]]:
    """Run ``ragloom index compare``; the rows of its table, split into cells."""
    assert main(["index", "compare", *argv]) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    return [line.split() for line in lines if line.split()]


def test_every_index_type_with_its_defaults(
    tiny_kb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "compare.png"
    rows = compare(
        capsys, str(tiny_kb), "--types", FOUR_TYPES, "--num-queries", "100", "--plot", str(plot)
    )
    table = {row[0]: row for row in rows}
    factory = auto_factory(1_000, 64, 1_000).replace(",", ".")
    names = [
        "faiss-exact",
        f"faiss-compressed-factory{factory}-seed0-train_size262144",
        "faiss-hnsw-sq8-M128-ef_construction200",
        "hnsw-M32-ef_construction200-seed100",
    ]
    assert set(names) <= set(table), rows
    assert table["faiss-exact"][1] == "1.0000"
    assert 0.0 < float(table[names[1]][1]) < 1.0
    built = [path.name for path in (tiny_kb / "indexes").iterdir() if not path.name.startswith(".")]
    assert sorted(built) == sorted(names)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shards_are_sized_alike(tiny_kb: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every shard of a split gets the factory of the smallest shard, so they share one name."""
    command = ["index", "build", str(tiny_kb), "--type", "faiss-compressed", "--shards", "3"]
    assert main(command) == 0, capsys.readouterr().err
    factory = auto_factory(333, 64, 333)
    parent = (
        tiny_kb
        / "indexes"
        / (f"faiss-compressed-factory{factory.replace(',', '.')}-seed0-train_size262144.shards-3")
    )
    assert f"built {parent} (3 shards, 1000 vectors)" in capsys.readouterr().out
    assert all((parent / f"shard-{number}" / "manifest.json").is_file() for number in range(3))


def test_pareto_front_keeps_the_points_nothing_beats() -> None:
    points = [(10.0, 0.9), (20.0, 0.8), (5.0, 0.95), (15.0, 0.7)]
    assert pareto_front(points, larger_x_is_better=True) == [2, 0, 1]  # (15, 0.7) < (20, 0.8)
    assert pareto_front(points, larger_x_is_better=False) == [2]  # least memory, best recall
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)], larger_x_is_better=True) == [0, 1]  # ties


def test_front_outline_bounds_the_dominated_region() -> None:
    faster = front_outline([(5.0, 0.95), (20.0, 0.8)], True, (1.0, 100.0), 0.5)
    assert faster == ([1.0, 5.0, 5.0, 20.0, 20.0], [0.95, 0.95, 0.8, 0.8, 0.5])
    smaller = front_outline([(5.0, 0.8), (20.0, 0.95)], False, (1.0, 100.0), 0.5)
    assert smaller == ([5.0, 5.0, 20.0, 20.0, 100.0], [0.5, 0.8, 0.8, 0.95, 0.95])


def measurement(label: str, recall: float, qps: float, bytes_per_vector: float) -> Measurement:
    return Measurement(label, label, recall, qps, qps, 1.0, bytes_per_vector, 1)


def test_the_figure_has_two_log_panels_a_legend_and_nothing_off_the_edge() -> None:
    measurements = [
        measurement("faiss-exact", 1.0, 40.0, 3080.0),
        measurement("faiss-compressed IVF6721_HNSW128,PQ192x8np nprobe=64", 0.02, 9000.0, 217.0),
        measurement("faiss-hnsw-sq8 M=128 ef_search=128", 0.93, 5500.0, 1816.0),
        measurement("hnsw M=32 ef=128", 0.997, 6600.0, 3352.0),
    ]
    title = "200,000 vectors of dim 384; 1,000 midpoints of random pairs of stored vectors; k = 10"
    figure = comparison_figure(measurements, 10, title)
    speed, size = figure.axes
    assert speed.get_xscale() == size.get_xscale() == "log"
    assert speed.get_ylabel() == "recall@10 against exact search"
    (legend,) = figure.legends
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels == [m.label for m in measurements] + ["Pareto front"]
    assert figure.get_suptitle() == title
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    drawn = [axes.get_tightbbox(renderer) for axes in figure.axes]  # ticks and labels drawn
    drawn += [legend.get_window_extent(renderer), figure._suptitle.get_window_extent(renderer)]
    edge = figure.bbox
    for box in drawn:
        assert edge.x0 - 1 <= box.x0 and box.x1 <= edge.x1 + 1, (box, edge)
        assert edge.y0 - 1 <= box.y0 and box.y1 <= edge.y1 + 1, (box, edge)


@pytest.fixture(scope="module")
def encoded_kb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 passages encoded by a tiny random BERT (``spec.toml`` beside the KB declares it)."""
    root = encoder_workspace(tmp_path_factory.mktemp("encoded"))
    write_documents(root / "docs.jsonl", 100)
    build = ["kb", "build", str(root / "docs.jsonl"), "--spec", str(root / "spec.toml")]
    assert main([*build, "--out", str(root / "kb")]) == 0
    rows = [{"question": f"what is {word}?", "answers": [word]} for word in ("alpha", "beta")]
    (root / "qa.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root / "kb"


def test_questions_encoded_by_the_spec_are_the_queries(
    encoded_kb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = encoded_kb.parent
    data = ["--data", str(root / "qa.jsonl"), "--spec", str(root / "spec.toml")]
    plot = ["--plot", str(tmp_path / "p.png")]
    rows = compare(capsys, str(encoded_kb), "--types", "faiss-exact,hnsw", *data, *plot)
    assert (rows[0][:10]) == [
        "100",
        "vectors",
        "of",
        "dim",
        "32;",
        "2",
        "queries",
        "(2",
        "questions",
        "of",
    ]
    assert {row[0]: row[1] for row in rows}["faiss-exact"] == "1.0000"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--data", "qa.jsonl"], "--data QA.jsonl and --spec SPEC go together"),
        (["--spec", "spec.toml"], "--spec: --data QA.jsonl and --spec SPEC go together"),
        (["--data", "qa.jsonl", "--spec", "spec.toml", "--queries", "q.npy"], "not both"),
    ],
)
def test_query_options_that_contradict_each_other(
    encoded_kb: Path, options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = encoded_kb.parent
    given = [str(root / option) if option.endswith(("l", "npy")) else option for option in options]
    assert main(["index", "compare", str(encoded_kb), "--types", "faiss-exact", *given]) == 1
    assert message in capsys.readouterr().err


def test_questions_from_another_encoder_are_refused(
    tiny_kb: Path, encoded_kb: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = encoded_kb.parent
    data = ["--data", str(root / "qa.jsonl"), "--spec", str(root / "spec.toml")]
    command = ["index", "compare", str(tiny_kb), "--types", "faiss-exact", *data]
    assert main([*command, "--plot", str(tmp_path / "p.png")]) == 1
    error = capsys.readouterr().err
    assert f"knowledge base {tiny_kb} was encoded by random random-unit-64-seed0" in error
    assert not (tmp_path / "p.png").exists()
