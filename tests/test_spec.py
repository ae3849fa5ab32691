"""The spec: reading, validation messages, overrides, and the round trip."""

from __future__ import annotations

import enum
import logging
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from ragloom import SpecError, load_spec
from ragloom.registry import Registry
from ragloom.spec import parse_assignment

WriteSpec = Callable[..., Path]

VALID = """
schema = 1
[pipeline]
n_docs = 3

[retriever]
type = "toy"
kb = "kb/wiki"
[retriever.index]
type = "faiss-exact"

[generator]
type = "toy"
path = "models/bart"
attention = "eager"

[generation]
num_beams = 4
"""


def problems(excinfo: pytest.ExceptionInfo[SpecError]) -> str:
    return str(excinfo.value)


def test_a_valid_spec_resolves_every_component(
    write_spec: WriteSpec, toy_registry: Registry
) -> None:
    spec = load_spec(write_spec(VALID), registry=toy_registry)
    assert spec.pipeline.n_docs == 3
    assert spec.generation.num_beams == 4 and spec.generation.max_length == 50
    retriever = spec.components["retriever"]
    assert retriever.type == "toy" and retriever.params.kb == "kb/wiki"
    assert retriever.children["index"].type == "faiss-exact"
    assert spec.components["generator"].params.attention == "eager"


def test_malformed_toml_names_file_line_and_column(
    write_spec: WriteSpec, registry: Registry
) -> None:
    path = write_spec("schema = 1\n[pipeline]\nn_docs = = 3\n")
    with pytest.raises(SpecError) as excinfo:
        load_spec(path, registry=registry)
    message = problems(excinfo)
    assert str(path) in message
    assert "is not valid TOML" in message and "line 3" in message and "column" in message


def test_missing_file_is_named(tmp_path: Path, registry: Registry) -> None:
    with pytest.raises(SpecError, match=r"nope\.toml: no such file"):
        load_spec(tmp_path / "nope.toml", registry=registry)


def test_unknown_keys_get_a_suggestion_and_the_allowed_keys(
    write_spec: WriteSpec, registry: Registry
) -> None:
    path = write_spec("schema = 1\n[pipline]\nx = 1\n[pipeline]\nn_doc = 3\n")
    with pytest.raises(SpecError) as excinfo:
        load_spec(path, registry=registry)
    message = problems(excinfo)
    assert "2 problems" in message
    assert 'unknown top-level key "pipline". Did you mean "pipeline"?' in message
    assert (
        '[pipeline] unknown key "n_doc". Did you mean "n_docs"? Allowed keys: checkpoint, n_docs, '
        "threads." in message
    )


def test_wrong_type_names_key_path_and_value(write_spec: WriteSpec, registry: Registry) -> None:
    path = write_spec('schema = 1\n[pipeline]\nn_docs = "five"\n')
    with pytest.raises(SpecError) as excinfo:
        load_spec(path, registry=registry)
    assert '[pipeline] n_docs = "five": must be a whole number, e.g. 5' in problems(excinfo)


def test_out_of_range_value(write_spec: WriteSpec, registry: Registry) -> None:
    path = write_spec("schema = 1\n[generation]\nnum_beams = 0\n")
    with pytest.raises(
        SpecError, match=r"\[generation\] num_beams = 0: Input should be greater than or equal to 1"
    ):
        load_spec(path, registry=registry)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("repetition_penalty = 0.0", "repetition_penalty = 0.0: Input should be greater than 0"),
        ("repetition_penalty = nan", "repetition_penalty = nan: Input should be a finite number"),
        ("no_repeat_ngram_size = -1", "no_repeat_ngram_size = -1: Input should be greater than"),
        ('stop = ["x", ""]', "stop string 2 is empty, and an empty string would end every"),
        (f'stop = ["{"x" * 65}"]', "stop string 1 has 65 characters, at most 64 are allowed"),
        (f"stop = {['s'] * 17}".replace("'", '"'), "17 stop strings, at most 16 are allowed"),
        ('stop = "Question:"', 'stop = "Question:": must be a list, e.g. ["a", "b"]'),
    ],
)
def test_decoding_controls_are_checked(
    write_spec: WriteSpec, registry: Registry, line: str, message: str
) -> None:
    with pytest.raises(SpecError) as excinfo:
        load_spec(write_spec(f"schema = 1\n[generation]\n{line}\n"), registry=registry)
    key = line.split()[0]
    assert f"[generation] {key} = " in problems(excinfo) and message in problems(excinfo)


def test_decoding_controls_are_read(write_spec: WriteSpec, registry: Registry) -> None:
    text = "schema = 1\n[generation]\nrepetition_penalty = 2\nno_repeat_ngram_size = 3\n"
    text += f'stop = ["\\n", "{"x" * 64}"]\n'
    generation = load_spec(write_spec(text), registry=registry).generation
    assert generation.repetition_penalty == 2.0 and generation.no_repeat_ngram_size == 3
    assert generation.stop == ["\n", "x" * 64]


def test_misspelled_component_name_suggests_the_registered_one(
    write_spec: WriteSpec, toy_registry: Registry
) -> None:
    path = write_spec(VALID.replace('type = "faiss-exact"', 'type = "faiss_exact"'))
    with pytest.raises(SpecError) as excinfo:
        load_spec(path, registry=toy_registry)
    message = problems(excinfo)
    assert (
        '[retriever.index] type = "faiss_exact": "faiss_exact" is not a registered index type.'
        in message
    )
    assert 'Did you mean "faiss-exact"?' in message
    assert (
        "Registered index types: faiss-compressed, faiss-exact, faiss-hnsw, faiss-hnsw-sq8, hnsw, "
        "needs-missing." in message
    )
    assert "`ragloom plugins` lists what is registered" in message


def test_literal_choice_lists_allowed_values(write_spec: WriteSpec, toy_registry: Registry) -> None:
    path = write_spec(VALID.replace('attention = "eager"', 'attention = "flsh"'))
    with pytest.raises(SpecError) as excinfo:
        load_spec(path, registry=toy_registry)
    assert (
        '[generator] attention = "flsh" is not allowed. Did you mean "flash"? '
        "Allowed values: eager, flash, sdpa." in problems(excinfo)
    )


def test_a_plugins_own_keys_are_validated(write_spec: WriteSpec, toy_registry: Registry) -> None:
    path = write_spec(VALID.replace('kb = "kb/wiki"', 'kb = "kb/wiki"\ncahce = true'))
    with pytest.raises(
        SpecError, match=r'\[retriever\] unknown key "cahce". Did you mean "cache"\?'
    ):
        load_spec(path, registry=toy_registry)


def test_missing_extra_names_the_install_command(
    write_spec: WriteSpec, toy_registry: Registry
) -> None:
    path = write_spec(VALID.replace('type = "faiss-exact"', 'type = "needs-missing"'))
    with pytest.raises(SpecError) as excinfo:
        load_spec(path, registry=toy_registry)
    assert (
        '[retriever.index] index "needs-missing" needs no_such_module_anywhere, which is not '
        "installed. Install it with: pip install 'ragloom[nothing]'" in problems(excinfo)
    )


def test_missing_slot_and_missing_type(write_spec: WriteSpec, toy_registry: Registry) -> None:
    path = write_spec('schema = 1\n[retriever]\ntype = "toy"\nkb = "x"\n[generator]\npath = "p"\n')
    with pytest.raises(SpecError) as excinfo:
        load_spec(path, registry=toy_registry)
    message = problems(excinfo)
    assert '[retriever] type = "toy" needs a [retriever.index] table with a index type' in message
    assert '[generator] needs a key type = "...", one of: bart, causal-lm, toy.' in message


def test_schema_version_is_required_and_checked(write_spec: WriteSpec, registry: Registry) -> None:
    with pytest.raises(SpecError, match="missing the key schema = 1"):
        load_spec(write_spec("[pipeline]\nn_docs = 2\n"), registry=registry)
    with pytest.raises(SpecError, match="schema = 2 is not a spec version this ragloom reads"):
        load_spec(write_spec("schema = 2\n"), registry=registry)


def test_python_overrides_keep_their_values(write_spec: WriteSpec, toy_registry: Registry) -> None:
    spec = load_spec(
        write_spec(VALID),
        {"pipeline.n_docs": 9, "generator.layers": [1, 2]},
        registry=toy_registry,
    )
    assert spec.pipeline.n_docs == 9
    assert spec.components["generator"].params.layers == [1, 2]


def test_cli_overrides_are_typed_by_the_schema(
    write_spec: WriteSpec, toy_registry: Registry
) -> None:
    overrides = dict(
        parse_assignment(text)
        for text in [
            "pipeline.n_docs=7",
            "retriever.cache=true",
            "generator.path=2024",
            "generator.temperature=0.5",
            "generator.layers=[1, 2]",
        ]
    )
    spec = load_spec(write_spec(VALID), overrides, registry=toy_registry)
    generator = spec.components["generator"].params
    assert spec.pipeline.n_docs == 7
    assert spec.components["retriever"].params.cache is True
    assert generator.path == "2024"
    assert generator.temperature == 0.5
    assert generator.layers == [1, 2]


def test_cli_override_with_a_bad_value_is_reported(
    write_spec: WriteSpec, toy_registry: Registry
) -> None:
    overrides = dict([parse_assignment("pipeline.n_docs=many")])
    with pytest.raises(SpecError, match=r'\[pipeline\] n_docs = "many": must be a whole number'):
        load_spec(write_spec(VALID), overrides, registry=toy_registry)


def test_malformed_assignment() -> None:
    with pytest.raises(SpecError, match=r'"n_docs" is not an override: write KEY.PATH=VALUE'):
        parse_assignment("n_docs")


def test_override_through_a_value_is_an_error(
    write_spec: WriteSpec, toy_registry: Registry
) -> None:
    with pytest.raises(SpecError, match=r"pipeline.n_docs is a value, not a table"):
        load_spec(write_spec(VALID), {"pipeline.n_docs.x": 1}, registry=toy_registry)


def test_retyping_drops_the_old_types_keys_loudly(
    write_spec: WriteSpec,
    register: Callable[..., None],
    toy_registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from toy_components import BareGenerator, ToyGenerator

    register("generator", "other", ToyGenerator)
    with caplog.at_level(logging.WARNING):
        spec = load_spec(
            write_spec(
                VALID.replace('attention = "eager"', 'attention = "eager"\ntemperature = 2.0')
            ),
            {"generator.type": "other", "generator.attention": "flash"},
            registry=toy_registry,
        )
    generator = spec.components["generator"]
    assert generator.type == "other"
    assert generator.params.attention == "flash"
    assert generator.params.temperature == 2.0
    assert "ignoring" not in caplog.text  # ToyGenerator takes every key of the file

    register("generator", "bare", BareGenerator)
    with caplog.at_level(logging.WARNING):
        spec = load_spec(write_spec(VALID), {"generator.type": "bare"}, registry=toy_registry)
    assert spec.components["generator"].type == "bare"
    assert "ignoring keys it does not take: path, attention" in caplog.text


def test_round_trip(write_spec: WriteSpec, toy_registry: Registry) -> None:
    spec = load_spec(write_spec(VALID), registry=toy_registry)
    text = spec.to_toml()
    again = load_spec(write_spec(text, "again.toml"), registry=toy_registry)
    assert again == spec
    assert tomllib.loads(text)["generation"] == {
        "num_beams": 4,
        "max_length": 50,
        "min_length": 0,
        "length_penalty": 1.0,
        "early_stopping": False,
        "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "stop": [],
    }


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_docs=st.integers(1, 100),
    num_beams=st.integers(1, 16),
    cache=st.booleans(),
    path=st.text(min_size=1, max_size=30).filter(lambda text: "\x00" not in text),
    attention=st.sampled_from(["eager", "sdpa", "flash"]),
    temperature=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
    layers=st.lists(st.integers(-(2**31), 2**31), max_size=4),
    checkpoint=st.one_of(st.none(), st.text(max_size=20).filter(lambda t: "\x00" not in t)),
)
def test_round_trip_property(
    toy_registry: Registry,
    n_docs: int,
    num_beams: int,
    cache: bool,
    path: str,
    attention: str,
    temperature: float,
    layers: list[int],
    checkpoint: str | None,
) -> None:
    data = {
        "schema": 1,
        "pipeline": {
            "n_docs": n_docs,
            **({"checkpoint": checkpoint} if checkpoint is not None else {}),
        },
        "retriever": {"type": "toy", "kb": path, "cache": cache, "index": {"type": "faiss-exact"}},
        "generator": {
            "type": "toy",
            "path": path,
            "attention": attention,
            "temperature": temperature,
            "layers": layers,
        },
        "generation": {"num_beams": num_beams},
    }
    spec = load_spec(data, registry=toy_registry)
    assert load_spec(tomllib.loads(spec.to_toml()), registry=toy_registry) == spec


class Mode(enum.Enum):
    FAST = "fast"


class RicherGenerator:
    """A plugin component whose keys are a tuple, a Path, an Enum and an int."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        sizes: tuple[int, ...] = ()
        where: Path = Path(".")
        mode: Mode = Mode.FAST
        count: int = 1


def test_strict_types_still_read_a_plugins_tuples_paths_and_enums(
    write_spec: WriteSpec, toy_registry: Registry, register: Any
) -> None:
    """Strictness refuses true for an int, "5" for 5 and 1e8 for an int, but TOML has no tuple,
    Path or Enum: its arrays and strings fill them, as they did before."""
    register("generator", "richer", RicherGenerator)
    text = VALID.replace('type = "toy"\npath', 'type = "richer"\npath').replace(
        'path = "models/bart"\nattention = "eager"',
        'sizes = [1, 2]\nwhere = "a/b"\nmode = "fast"\ncount = 3',
    )
    params = load_spec(write_spec(text), registry=toy_registry).components["generator"].params
    assert (params.sizes, params.where, params.mode, params.count) == (
        (1, 2),
        Path("a/b"),
        Mode.FAST,
        3,
    )
    for bad in ("true", '"5"', "1e8"):
        with pytest.raises(SpecError, match=r"\[generator\] count"):
            load_spec(
                write_spec(text.replace("count = 3", f"count = {bad}")), registry=toy_registry
            )


def write_rag_config(directory: Path, question_encoder: str, generator: dict[str, Any]) -> Path:
    """A RAG checkpoint's config.json alone (the types come from it; no weights are read)."""
    import json

    directory.mkdir(parents=True)
    config = {
        "model_type": "rag",
        "question_encoder": {"model_type": question_encoder},
        "generator": generator,
    }
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return directory


def test_a_rag_checkpoint_gives_the_types_of_encoder_and_generator(
    write_spec: WriteSpec, registry: Registry
) -> None:
    checkpoint = write_rag_config(
        write_spec("").parent / "rag", "dpr", {"model_type": "bart", "is_encoder_decoder": True}
    )
    spec = load_spec(
        write_spec(
            f'schema = 1\n[pipeline]\ncheckpoint = "{checkpoint.name}"\n[encoder]\n'
            'pooling = "mean"\n'
        ),
        registry=registry,
    )
    assert {table: c.type for table, c in spec.components.items()} == {
        "encoder": "dpr",
        "generator": "bart",
    }
    assert spec.components["encoder"].params.pooling == "mean"  # its other keys kept
    assert spec.inferred == {
        "encoder": "from [pipeline] checkpoint: its question encoder is DPR",
        "generator": "from [pipeline] checkpoint: its generator is bart, an encoder-decoder",
    }
    dumped = tomllib.loads(spec.to_toml())
    assert (dumped["encoder"]["type"], dumped["generator"]["type"]) == ("dpr", "bart")
    declared = load_spec(dumped, registry=registry)
    assert declared.inferred == {} and declared.components == spec.components


def test_a_causal_generator_and_a_question_encoder_of_unknown_pooling(
    write_spec: WriteSpec, registry: Registry
) -> None:
    from ragloom.preflight import preflight

    llama = {"model_type": "llama", "is_encoder_decoder": False, "num_attention_heads": 2}
    llama |= {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 300}
    checkpoint = write_rag_config(write_spec("").parent / "rag", "bert", llama)
    spec = load_spec(
        write_spec(f'schema = 1\n[pipeline]\ncheckpoint = "{checkpoint}"\n'), registry=registry
    )
    assert {table: c.type for table, c in spec.components.items()} == {"generator": "causal-lm"}
    assert spec.inferred["generator"].endswith("its generator is llama, not an encoder-decoder")
    assert (
        "[encoder] not declared, and [pipeline] checkpoint cannot give its type: its question "
        "encoder is 'bert', not DPR, and its config does not say how its vectors are pooled"
    ) in preflight(spec, registry).notes
    with pytest.raises(SpecError) as excinfo:
        load_spec(
            write_spec(f'schema = 1\n[pipeline]\ncheckpoint = "{checkpoint}"\n[encoder]\n'),
            registry=registry,
        )
    assert problems(excinfo).endswith(
        f'[encoder] has no type, and [pipeline] checkpoint = "{checkpoint}" cannot give it: its '
        "question encoder is 'bert', not DPR, and its config does not say how its vectors are "
        'pooled. Declare [encoder] type = "..." (dpr, hf-mean-pool), or point checkpoint at a '
        "directory written by a transformers RAG model's save_pretrained."
    )


def test_a_checkpoint_that_cannot_give_types(write_spec: WriteSpec, registry: Registry) -> None:
    """A spec without the tables stays valid (the checkpoint may be written later); a table
    without a type cannot be checked, and the override that set the checkpoint is named."""
    path = write_spec(
        'schema = 1\n[pipeline]\ncheckpoint = "later"\n[generator]\ndtype = "float32"\n'
    )
    with pytest.raises(SpecError) as excinfo:
        load_spec(path, registry=registry)
    assert f"cannot give it: {path.parent / 'later'} holds no config.json. Declare" in problems(
        excinfo
    )
    with pytest.raises(SpecError) as excinfo:
        bart = path.parent / "bart"
        bart.mkdir()
        (bart / "config.json").write_text('{"model_type": "bart"}', encoding="utf-8")
        load_spec(path, {"pipeline.checkpoint": str(bart)}, registry=registry)
    assert 'is not a RAG config (model_type "rag")' in problems(excinfo)
    assert 'from override "pipeline.checkpoint"' in problems(excinfo)
    bare = load_spec(
        write_spec('schema = 1\n[pipeline]\ncheckpoint = "later"\n'), registry=registry
    )
    assert bare.components == {} and bare.inferred == {}
