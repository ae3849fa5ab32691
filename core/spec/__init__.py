"""The declarative pipeline spec: TOML, validated with pydantic, resolved through the registry."""

from .devices import Device, resolve_device
from .loader import load_component, load_spec, read_toml
from .model import (
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
    "SCHEMA_VERSION",
    "ComponentSpec",
    "Device",
    "GenerationSettings",
    "PipelineSettings",
    "Spec",
    "SpecPath",
    "TrainSettings",
    "load_component",
    "load_spec",
    "parse_assignment",
    "read_toml",
    "resolve_device",
]
