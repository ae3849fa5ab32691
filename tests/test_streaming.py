"""Stop strings and streaming, through the pipeline and ``ragloom ask --stream``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ragloom import Pipeline, SpecError
from ragloom.testing.tiny_models import causal_lm_dir

QUESTIONS = ["who wrote animal farm", "paris capital of france", "what runs through paris"]


@pytest.fixture(scope="module")
def spec(tiny_rag: Callable[..., Path]) -> Path:
    """rag-token over three passages, beside a tiny causal LM in ``streaming-lm/``."""
    path = tiny_rag("streaming", n_docs=3, max_length=16)
    causal_lm_dir(path.parent / "streaming-lm", seed=5, chat=False)
    return path


def causal(spec: Path, marginalizer: str) -> dict[str, object]:
    return {
        "generator": {"type": "causal-lm", "path": str(spec.parent / "streaming-lm")},
        "marginalizer.type": marginalizer,
    }


READERS = {
    "rag-token": {},
    "fusion": {"marginalizer.type": "fusion"},
    "rag-sequence": {"marginalizer.type": "rag-sequence"},
    "beam": {"generation.num_beams": 3},
}


@pytest.mark.parametrize("reader", READERS)
def test_streamed_pieces_join_to_the_answer(spec: Path, reader: str) -> None:
    pipeline = Pipeline.from_spec(spec, READERS[reader])
    for question in QUESTIONS:
        (expected,) = pipeline.generate([question])
        stream = pipeline.stream(question)
        assert [p.id for p in stream.passages] == [p.id for p in expected.passages]
        pieces = list(stream)
        assert "".join(pieces) == expected.text
        assert stream.answer.token_ids == expected.token_ids
        assert stream.answer.score == pytest.approx(expected.score, abs=1e-4)
        if reader in ("rag-sequence", "beam"):
            assert len(pieces) <= 1, "known only at the end: one piece"


def test_greedy_rag_token_streams_piece_by_piece(spec: Path) -> None:
    pipeline = Pipeline.from_spec(spec)
    counts = [len(list(pipeline.stream(question))) for question in QUESTIONS]
    assert max(counts) > 1


def test_the_answer_is_not_known_before_the_stream_is_read(spec: Path) -> None:
    stream = Pipeline.from_spec(spec).stream(QUESTIONS[0])
    with pytest.raises(Exception, match="read the stream to its end first"):
        stream.answer  # noqa: B018


def stop_inside(text: str) -> str:
    """A stop string found inside ``text``: its second word, or its middle character (never
    U+FFFD: random tokens decode to half characters, which a stop string should not be)."""
    words = text.split()
    if len(words) > 1 and "\ufffd" not in words[1]:
        return f" {words[1]}"
    characters = [c for c in text if c != "\ufffd" and not c.isspace()] or ["x"]
    return characters[len(characters) // 2]


@pytest.mark.parametrize("overrides", [{}, {"marginalizer.type": "fusion"}])
def test_a_stop_string_ends_greedy_answers_where_it_appears(
    spec: Path, overrides: dict[str, str]
) -> None:
    pipeline = Pipeline.from_spec(spec, overrides)
    for question in QUESTIONS:
        (free,) = pipeline.generate([question])
        stop = stop_inside(free.text)
        if stop not in free.text:
            continue  # nothing to stop at in this answer
        (stopped,) = pipeline.generate([question], stop=[stop])
        assert stopped.text == free.text[: free.text.index(stop)].rstrip()
        assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]
        assert stop in pipeline.generator.decode(stopped.token_ids), "it ends at the stop"
        before = pipeline.generator.decode(stopped.token_ids[:-1])
        assert stop not in before, "and not a token later"
        streamed = pipeline.stream(question, stop=[stop])
        assert "".join(streamed) == stopped.text


@pytest.mark.parametrize("reader", ["rag-token", "rag-sequence", "fusion"])
def test_stop_strings_in_beam_search_and_causal_lms(spec: Path, reader: str) -> None:
    pipeline = Pipeline.from_spec(spec, causal(spec, reader))
    for beams in (1, 3):
        free = pipeline.generate(QUESTIONS, num_beams=beams, max_length=10)
        stop = [stop_inside(answer.text) for answer in free if answer.text.strip()][:2]
        for answer in pipeline.generate(QUESTIONS, num_beams=beams, max_length=10, stop=stop):
            assert not any(s in answer.text for s in stop)


def test_empty_stop_strings_are_refused(spec: Path) -> None:
    with pytest.raises(SpecError, match="empty"):
        Pipeline.from_spec(spec).generate(QUESTIONS[:1], stop=["\n", ""])


def test_ask_streams_through_the_cli(spec: Path) -> None:
    (answer,) = Pipeline.from_spec(spec).generate(QUESTIONS[:1])
    result = subprocess.run(
        [sys.executable, "-m", "ragloom.cli", "ask", str(spec), QUESTIONS[0], "--stream"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(answer.text) and (
        f"[log-probability {answer.score:.2f} under rag-token]" in result.stdout
    )
