"""The manifests of a knowledge base and of each index built from it."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .. import atomic
from ..errors import IndexFileError

MANIFEST_FILE = "manifest.json"

M = TypeVar("M", bound="Manifest")


def ragloom_version() -> str:
    try:
        return importlib.metadata.version("ragloom")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Manifest(BaseModel):
    """A JSON manifest file, written atomically and read with clear errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def write(self, directory: Path) -> None:
        atomic.write_text(directory / MANIFEST_FILE, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls: type[M], directory: Path, what: str) -> M:
        path = directory / MANIFEST_FILE
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IndexFileError(
                f"{directory} is not a {what}: it has no {MANIFEST_FILE}."
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise IndexFileError(f"{path} is corrupt ({error}).") from None
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            fields = ", ".join(".".join(map(str, e["loc"])) for e in error.errors())
            raise IndexFileError(
                f"{path} is not a valid {what} manifest (problems at: {fields}). It was written "
                f"by another version or edited by hand; build it again."
            ) from None


class EncoderRecord(BaseModel):
    """Which encoder made the embeddings: its registered type and its fingerprint."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    fingerprint: str


class KBManifest(Manifest):
    format: Literal["ragloom-kb"] = "ragloom-kb"
    version: Literal[1] = 1
    ragloom_version: str
    count: int
    dim: int
    embeddings_dtype: Literal["float32", "float16"]
    encoder: EncoderRecord
    passages_sha256: str
    source: dict[str, Any] = {}


class IndexManifest(Manifest):
    type: str
    params: dict[str, Any]
    dim: int
    metric: str
    count: int
    encoder_fingerprint: str
    passages_sha256: str
    build_seconds: float
    ragloom_version: str
    rows: list[int] | None = None  # [start, stop) for a shard's index
