"""The declarative pipeline spec: TOML, validated with pydantic, resolved through the registry."""

from .loader import load_spec, read_toml
from .model import (
    COMPONENT_TABLES,
    SCHEMA_VERSION,
    ComponentSpec,
    GenerationSettings,
    PipelineSettings,
    Spec,
    TrainSettings,
)
from .overrides import parse_assignment
from .paths import SpecPath

__all__ = [
    "COMPONENT_TABLES",
    "SCHEMA_VERSION",
    "ComponentSpec",
    "GenerationSettings",
    "PipelineSettings",
    "Spec",
    "SpecPath",
    "TrainSettings",
    "load_spec",
    "parse_assignment",
    "read_toml",
]
