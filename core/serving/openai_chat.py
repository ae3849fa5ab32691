"""OpenAI's chat-completions format: the question from the messages, the answer as a
``chat.completion`` or as ``chat.completion.chunk`` deltas, passages as an extra field.

OpenAI clients ignore fields they do not know, so every response also carries ``passages``
(the documents the answer was read from, best first); a stream sends them in its first chunk.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..protocols import Answer, ForcesEos, Generator, Passage
from ..spec import GenerationSettings
from .schemas import BadRequest, ChatRequest, passage_json


@dataclass(frozen=True)
class TokenLayout:
    """What a generator's sequences hold besides the answer: ``start`` tokens before it, and
    with ``forced_eos`` one end token forced after an answer that reaches ``max_length``."""

    start: int = 0
    forced_eos: bool = False

    @classmethod
    def of(cls, generator: Generator) -> TokenLayout:
        forced = isinstance(generator, ForcesEos) and generator.forced_eos_token_id is not None
        return cls(len(generator.start_token_ids), forced)

    def max_length(self, answer_tokens: int) -> int:
        """The ``max_length`` that leaves room for ``answer_tokens`` tokens of answer."""
        return self.start + answer_tokens + self.forced_eos

    def finish_reason(self, answer: Answer, settings: GenerationSettings) -> str:
        """``"length"`` when the answer used every token ``max_length`` allows, else
        ``"stop"`` (an end token or a stop string ended it)."""
        used = self.start + len(answer.token_ids) + self.forced_eos
        return "length" if used >= settings.max_length else "stop"


def question_of(request: ChatRequest) -> str:
    """The text of the last user message: each question is answered on its own, from the
    passages retrieved for it; earlier turns and system messages are not read."""
    for message in reversed(request.messages):
        if message.role == "user":
            return message.content
    raise BadRequest(
        'messages holds no user message: add {"role": "user", "content": "your question"}.',
        param="messages",
    )


def chat_overrides(request: ChatRequest, layout: TokenLayout) -> dict[str, Any]:
    """The ``[generation]`` keys a chat request sets: its ragloom keys, ``stop`` (one string or
    a list), and ``max_tokens`` / ``max_completion_tokens`` (tokens of answer: ragloom's
    ``max_length`` less the generator's other tokens, ``layout``)."""
    overrides = request.generation()
    limits = [
        (name, value)
        for name, value in (
            ("max_tokens", request.max_tokens),
            ("max_completion_tokens", request.max_completion_tokens),
            ("max_length", overrides.get("max_length")),
        )
        if value is not None
    ]
    if len(limits) > 1:
        given = " and ".join(name for name, _ in limits)
        raise BadRequest(f"{given} both limit the answer's length: give one.", param=limits[1][0])
    if limits and limits[0][0] != "max_length":
        overrides["max_length"] = layout.max_length(limits[0][1])
    if isinstance(overrides.get("stop"), str):
        overrides["stop"] = [overrides["stop"]]
    return overrides


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion(model: str, answer: Answer, reason: str) -> dict[str, Any]:
    """A whole ``chat.completion``."""
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": reason,
                "logprobs": None,
            }
        ],
        "passages": [passage_json(passage) for passage in answer.passages],
    }


def chunk(
    identity: str,
    model: str,
    delta: dict[str, str],
    reason: str | None = None,
    passages: list[Passage] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``: the first has the role (and the passages), the last the
    finish reason and an empty delta."""
    body: dict[str, Any] = {
        "id": identity,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}],
    }
    if passages is not None:
        body["passages"] = [passage_json(passage) for passage in passages]
    return body
