"""Request bodies (pydantic, strict: ``"5"`` is not a number) and the JSON of passages.

``POST /v1/answer`` and ``POST /v1/chat/completions`` take the keys of ``[generation]``
(:class:`ragloom.spec.GenerationSettings`) beside their own fields, and nothing else: a request
can change how an answer is decoded, never which pipeline answers it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..protocols import Passage
from ..spec import GenerationSettings
from ..suggest import listing, suggestion
from .settings import ServerSettings

GENERATION_KEYS = tuple(GenerationSettings.model_fields)


class BadRequest(Exception):
    """A request the server refuses: ``status`` (4xx), what is wrong, and the field (``param``)."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param


class Body(BaseModel):
    """A request body: values strictly typed, fields other than its own and ``extra_keys``
    refused with the list of those it takes."""

    model_config = ConfigDict(extra="allow", strict=True)
    extra_keys: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _known_fields(self) -> Body:
        known = [*type(self).model_fields, *self.extra_keys]
        for key in self.model_extra or {}:
            if key not in self.extra_keys:
                raise ValueError(
                    f'unknown field "{key}".{suggestion(key, known)} Fields: {listing(known, 30)}'
                )
        return self


class WithGeneration(Body):
    """A body that may also hold ``[generation]`` keys, gathered in :meth:`generation`."""

    extra_keys = GENERATION_KEYS

    def generation(self) -> dict[str, Any]:
        """The ``[generation]`` keys this body sets."""
        return dict(self.model_extra or {})


class AnswerRequest(WithGeneration):
    """``POST /v1/answer``: questions, and the generation keys to decode them with."""

    questions: list[str] = Field(min_length=1)


class RetrieveRequest(Body):
    """``POST /v1/retrieve``: questions and how many passages for each."""

    questions: list[str] = Field(min_length=1)
    k: int | None = None


class ChatMessage(Body):
    """One message of a chat: its role and its text, given as a string or as OpenAI's list of
    ``{"type": "text", "text": ...}`` parts (other message fields are accepted and not read)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str = ""

    @field_validator("content", mode="before")
    @classmethod
    def _text(cls, content: Any) -> Any:
        if content is None:
            return ""
        if isinstance(content, list):
            for number, part in enumerate(content):
                if not (
                    isinstance(part, dict)
                    and part.get("type") == "text"
                    and isinstance(part.get("text"), str)
                ):
                    raise ValueError(
                        f'part {number} is not {{"type": "text", "text": "..."}}: only text is read'
                    )
            return "".join(part["text"] for part in content)
        if not isinstance(content, str):
            raise ValueError(
                f"must be text or a list of text parts, not {json_type(content)} {content!r:.40}"
            )
        return content


class ChatRequest(WithGeneration):
    """``POST /v1/chat/completions``, OpenAI's fields that apply to ragloom. ``temperature``,
    ``top_p``, ``seed`` and ``user`` are accepted and change nothing: decoding is greedy or
    beam search, never sampling."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1, le=1)
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    user: str | None = None


def check_questions(questions: list[str], limits: ServerSettings) -> None:
    """Refuse too many questions, an empty or over-long one, and text that is not Unicode."""
    if len(questions) > limits.max_questions:
        raise BadRequest(
            f"{len(questions)} questions in one request, at most {limits.max_questions} are "
            f"allowed: send them in several requests.",
            param="questions",
        )
    for number, question in enumerate(questions, start=1):
        if not question.strip():
            raise BadRequest(f"question {number} is empty: ask something.", param="questions")
        if len(question) > limits.max_question_chars:
            raise BadRequest(
                f"question {number} has {len(question):,} characters, at most "
                f"{limits.max_question_chars:,} are allowed: shorten it.",
                param="questions",
            )
        try:
            question.encode("utf-8")
        except UnicodeEncodeError as error:
            raise BadRequest(
                f"question {number} is not valid text: character {error.start + 1} is a lone "
                f"surrogate (half of a UTF-16 pair); send UTF-8 text.",
                param="questions",
            ) from None


def generation_settings(
    base: GenerationSettings, overrides: dict[str, Any], limits: ServerSettings
) -> GenerationSettings:
    """``base`` (the spec's ``[generation]``) with a request's ``overrides``, within the
    server's limits on ``num_beams`` and ``max_length``."""
    try:
        settings = GenerationSettings.model_validate({**base.model_dump(), **overrides})
    except ValidationError as error:
        items = error.errors()
        message = " ".join(problem(item, field_path(item["loc"])) for item in items)
        raise BadRequest(message, param=field_path(items[0]["loc"]) or None) from None
    if "num_beams" in overrides and settings.num_beams > limits.max_beams:
        raise BadRequest(
            f"num_beams = {settings.num_beams}: this server allows at most {limits.max_beams} "
            f"(ragloom serve --max-beams).",
            param="num_beams",
        )
    if "max_length" in overrides and settings.max_length > limits.max_length:
        raise BadRequest(
            f"max_length = {settings.max_length}: this server allows at most "
            f"{limits.max_length} (ragloom serve --max-length).",
            param="max_length",
        )
    return settings


def json_type(value: Any) -> str:
    """What ``value`` is called in JSON: ``null``, ``string``, ``array``, ..."""
    names = {type(None): "null", bool: "boolean", str: "string", list: "array", dict: "object"}
    return names.get(type(value), "number" if isinstance(value, int | float) else "value")


def field_path(location: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "messages", 0, "role")`` → ``messages[0].role``."""
    path = ""
    for part in location[1:] if location and location[0] == "body" else location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def problem(item: Any, path: str) -> str:
    """One pydantic error ``item`` about the field at ``path``, as a sentence."""
    message = str(item["msg"]).removeprefix("Value error, ").replace("Input should be", "must be")
    if item["type"] == "value_error":
        return f"{path}: {message}." if path else f"{message.removesuffix('.')}."
    if item["type"] == "missing":
        return f'the required field "{path}" is missing.'
    shown = repr(item["input"])
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{path}: {message} (got {shown})."


def passage_json(passage: Passage) -> dict[str, Any]:
    """A passage as the API returns it."""
    return {
        "id": passage.id,
        "title": passage.title,
        "text": passage.text,
        "score": round(float(passage.score), 6),
    }
