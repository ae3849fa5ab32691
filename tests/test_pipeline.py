"""The pipeline: validated up front, components built on first use, clear errors when absent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ragloom import MissingComponentError, Pipeline, SpecError
from ragloom.registry import Registry

SPEC = """
schema = 1
[pipeline]
n_docs = 2
[generator]
type = "toy"
path = "models/g"
"""


def test_components_are_built_lazily_and_once(
    write_spec: Callable[..., Path], toy_registry: Registry
) -> None:
    from toy_components import ToyGenerator

    before = ToyGenerator.built
    pipeline = Pipeline.from_spec(write_spec(SPEC), registry=toy_registry)
    assert ToyGenerator.built == before
    generator = pipeline.component("generator")
    assert pipeline.component("generator") is generator
    assert ToyGenerator.built == before + 1


@pytest.mark.parametrize(
    ("call", "missing"),
    [
        (lambda p: p.retrieve(["q"]), "retriever"),
        (lambda p: p.generate(["q"]), "generator"),
        (lambda p: p.loss(["q"], ["a"]), "generator"),
    ],
)
def test_methods_name_the_missing_component(
    write_spec: Callable[..., Path],
    registry: Registry,
    call: Callable[[Pipeline], object],
    missing: str,
) -> None:
    pipeline = Pipeline.from_spec(write_spec("schema = 1\n"), registry=registry)
    with pytest.raises(MissingComponentError) as excinfo:
        call(pipeline)
    message = str(excinfo.value)
    assert f"needs a {missing}, but the spec" in message
    assert f"has no [{missing}] table" in message


def test_overrides_and_to_spec_round_trip(
    write_spec: Callable[..., Path], toy_registry: Registry
) -> None:
    pipeline = Pipeline.from_spec(
        write_spec(SPEC), overrides={"pipeline.n_docs": 4}, registry=toy_registry
    )
    assert pipeline.spec.pipeline.n_docs == 4
    again = Pipeline.from_spec(write_spec(pipeline.to_spec(), "dumped.toml"), registry=toy_registry)
    assert again.spec == pipeline.spec
    retyped = Pipeline.from_spec(pipeline.spec, {"generation.num_beams": 3}, registry=toy_registry)
    assert retyped.spec.generation.num_beams == 3


def test_to_spec_written_elsewhere_names_the_same_files(tmp_path: Path, registry: Registry) -> None:
    """Relative paths are written absolute (against the spec's directory), so a copy in another
    directory does not point at another knowledge base; ``~`` and ``asset:`` names as they mean."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "spec.toml").write_text(
        'schema = 1\n[pipeline]\ncheckpoint = "models/rag"\n'
        '[encoder]\ntype = "dpr"\npassage_path = "~/ctx"\n'
        '[retriever]\ntype = "dense"\nkb = "kb/wiki"\n[retriever.index]\ntype = "faiss-exact"\n'
        '[generator]\ntype = "causal-lm"\npath = "asset:smollm2"\n',
        encoding="utf-8",
    )
    pipeline = Pipeline.from_spec(project / "spec.toml", registry=registry)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "copy.toml").write_text(pipeline.to_spec(), encoding="utf-8")
    copy = Pipeline.from_spec(tmp_path / "runs" / "copy.toml", registry=registry).spec
    resolved = project.resolve()
    assert copy.pipeline.checkpoint == str(resolved / "models" / "rag")
    assert copy.components["retriever"].params.kb == str(resolved / "kb" / "wiki")
    assert copy.components["encoder"].params.passage_path == str(Path.home() / "ctx")
    assert copy.components["generator"].params.path == "asset:smollm2"
    assert copy.with_absolute_paths() == pipeline.spec.with_absolute_paths()


def test_generation_overrides_are_validated(
    write_spec: Callable[..., Path], toy_registry: Registry
) -> None:
    pipeline = Pipeline.from_spec(write_spec(SPEC), registry=toy_registry)
    with pytest.raises(SpecError, match=r'generate\(\): \[generation\] unknown key "beams"'):
        pipeline.generate(["q"], beams=2)


def test_no_questions_no_answers(write_spec: Callable[..., Path], toy_registry: Registry) -> None:
    pipeline = Pipeline.from_spec(write_spec(SPEC), registry=toy_registry)
    assert pipeline.generate([]) == []
    with pytest.raises(TypeError, match="a list of strings, not one string"):
        pipeline.retrieve("one question")


KEYWORD_SPEC = """
schema = 1
[pipeline]
n_docs = 2
[encoder]
type = "refusing"
[retriever]
type = "toy-keywords"
passages = ["the moon landing", "a cat on a mat", "landing gear of a plane"]
"""


def test_a_retriever_that_reads_text_never_encodes_the_questions(
    write_spec: Callable[..., Path], toy_registry: Registry
) -> None:
    pipeline = Pipeline.from_spec(write_spec(KEYWORD_SPEC), registry=toy_registry)
    retrieved = pipeline.retrieve(["moon landing", "cat"])
    assert retrieved.ids.tolist() == [[0, 2], [1, 0]]
    assert [p.text for p in retrieved.passages[1]] == ["a cat on a mat", "the moon landing"]


def test_training_the_question_encoder_needs_differentiable_scores(
    write_spec: Callable[..., Path], toy_registry: Registry
) -> None:
    from ragloom.training.trainer import TrainingError, _check_gradients_reach_the_encoder

    pipeline = Pipeline.from_spec(write_spec(KEYWORD_SPEC), registry=toy_registry)
    with pytest.raises(TrainingError, match='train = \\["generator"\\], or use a dense retriever'):
        _check_gradients_reach_the_encoder(pipeline)
