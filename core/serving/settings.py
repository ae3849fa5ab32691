"""The server's knobs: where it listens, how it batches, and what one request may ask for."""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import SpecError
from ..spec.model import MAX_K, MAX_LENGTH


class ServerSettings(BaseModel):
    """``ragloom serve`` options; each field is the option of the same name (``--max-batch``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    host: str = Field(default="127.0.0.1", min_length=1, description="the address to bind")
    port: int = Field(default=8000, ge=0, le=65535, description="the port; 0 picks a free one")
    max_batch: int = Field(
        default=16, ge=1, le=1024, description="questions per generate call (1: no batching)"
    )
    max_wait_ms: float = Field(
        default=10.0,
        ge=0,
        le=10_000,
        description="how long the first request of a batch waits for others to join it",
    )
    queue_size: int = Field(
        default=64, ge=1, le=100_000, description="requests that may wait for the model"
    )
    timeout: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="seconds a request waits for its answer (a stream: for each piece)",
    )
    max_questions: int = Field(default=32, ge=1, le=1024, description="questions per request")
    max_question_chars: int = Field(
        default=2000, ge=1, le=1_000_000, description="characters per question"
    )
    max_k: int = Field(default=100, ge=1, le=MAX_K, description="passages per question")
    max_length: int = Field(
        default=512, ge=1, le=MAX_LENGTH, description="the largest max_length a request may set"
    )
    max_beams: int = Field(
        default=8, ge=1, le=256, description="the largest num_beams a request may set"
    )

    @property
    def loopback(self) -> bool:
        """Whether ``host`` is a loopback address, reachable from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to any interface

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ServerSettings:
        """Settings from command-line values (None: not given); errors name the option."""
        given = {name: value for name, value in options.items() if value is not None}
        try:
            return cls.model_validate(given)
        except ValidationError as error:
            problems = [
                f"--{str(item['loc'][0]).replace('_', '-')} {item['input']!r}: "
                f"{item['msg'].replace('Input should be', 'must be')}."
                for item in error.errors()
            ]
            raise SpecError("ragloom serve", problems) from None
