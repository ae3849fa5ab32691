"""Reading a spec: TOML → overrides → validation → component types resolved in the registry.

Every problem found is collected and reported at once, each with its key path; the error names the
file. Component parameters are validated against the component's own ``Params`` model, so a
plugin's keys are checked like the built-ins'. Validation is strict: a value must have its key's
TOML type (``n_docs = true`` or ``n_docs = 1e8`` is refused, not read as a number).
"""

from __future__ import annotations

import json
import logging
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import MissingExtraError, SpecError, UnknownComponentError
from ..kinds import SPEC_TABLES
from ..protocols import ChecksTable, NamedSlots, Nested
from ..rag_checkpoint import CheckpointError
from ..registry import Registry
from ..suggest import listing, suggestion
from .checkpoint_types import INFERRED_TABLES, checkpoint_type
from .model import (
    SCHEMA_VERSION,
    ComponentSpec,
    GenerationSettings,
    PipelineSettings,
    Settings,
    Spec,
    TrainSettings,
)
from .overrides import Applied, apply_overrides, check_overrides, type_cli_value
from .paths import ASSET_PREFIX, absolute, path_keys
from .problems import describe, from_override, key_path, toml_value, where

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Settings)
M = TypeVar("M", bound=BaseModel)

TOP_LEVEL_KEYS = ("schema", "pipeline", "generation", "train", *SPEC_TABLES)


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed TOML file at ``path``; a missing or malformed file raises SpecError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(str(path), ["no such file. Check the path to the spec."]) from None
    except IsADirectoryError:
        raise SpecError(
            str(path), ["is a directory; a spec is a .toml file. Give the path of the file."]
        ) from None
    except OSError as error:
        raise SpecError(str(path), [f"cannot be read: {error.strerror or error}."]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise SpecError(
            str(path),
            [
                f"is not UTF-8 text: the byte 0x{data[error.start]:02x} at byte {error.start} "
                f"(line {line}) is not UTF-8. A spec is a TOML file in UTF-8; convert it, e.g. "
                f"iconv -f latin1 -t utf-8."
            ],
        ) from None
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(str(path), [f"is not valid TOML: {error}."]) from None
    except RecursionError:
        raise SpecError(str(path), [TOO_DEEP]) from None
    _check_depth(str(path), parsed)
    return parsed


MAX_DEPTH = 32
"""The deepest nesting of tables and arrays a spec may have; real specs have a few levels."""

TOO_DEEP = (
    f"nests tables or arrays more than {MAX_DEPTH} levels deep, which no spec does: a spec's "
    f"tables are a few levels deep ([retriever.index]). Check how the file was generated."
)


def _check_depth(name: str, data: Any) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` (checked without recursion)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecError(name, [TOO_DEEP])
        if isinstance(value, Mapping):
            stack.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list | tuple):
            stack.extend((child, depth + 1) for child in value)


def load_spec(
    source: str | Path | Mapping[str, Any] | Spec,
    overrides: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    name: str = "<dict>",
) -> Spec:
    """Read, override and validate a spec; raises SpecError listing every problem.

    A mapping's relative paths are relative to the working directory, and errors call it
    ``name``; a :class:`Spec` given again (to apply ``overrides``) keeps its file name and
    directory.
    """
    registry = _default_registry() if registry is None else registry
    if isinstance(source, Spec):
        name, base_dir, raw = source.source, source.base_dir, source.to_dict()
    elif isinstance(source, Mapping):
        base_dir, raw = Path.cwd(), dict(source)
        _check_depth(name, raw)
        _check_keys(name, raw)
    elif not isinstance(source, str | Path):
        decode = " Parse TOML text first: tomllib.loads(text)." if isinstance(source, bytes) else ""
        raise SpecError(
            "spec",
            [
                f"must be a path to a .toml file (str or Path), a mapping of its tables or a "
                f"Spec, not {type(source).__name__} {_short(source)}.{decode}"
            ],
        )
    else:
        path = Path(source)
        name, base_dir, raw = str(path), path.resolve().parent, read_toml(path)
    if overrides is not None:
        check_overrides(overrides)
    applied = apply_overrides(raw, overrides or {}, name)
    return _Resolver(name, base_dir, applied, registry).spec()


def _short(value: Any) -> str:
    """``repr(value)``, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_keys(name: str, raw: Mapping[Any, Any], at: tuple[str, ...] = ()) -> None:
    """Refuse a spec mapping whose keys, at any depth, are not strings (TOML keys are)."""
    for key, value in raw.items():
        if not isinstance(key, str):
            inside = f" in [{key_path(at)}]" if at else ""
            raise SpecError(
                name,
                [
                    f"the key {_short(key)}{inside} is {type(key).__name__}: a spec's keys are "
                    f"strings (table and key names, as in TOML)."
                ],
            )
        if isinstance(value, Mapping):
            _check_keys(name, value, (*at, key))


def load_component(
    kind: str,
    raw: Mapping[str, Any],
    at: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    name: str = "<dict>",
) -> ComponentSpec:
    """Validate one component table of ``kind`` (``type`` and parameters, nested tables
    included) as a spec's table at the key path ``at`` (``("retriever", "index")``; default: the
    top-level table of ``kind``) is validated.

    ``overrides`` map keys of the table (``{"nprobe": 8}``, dotted for nested tables) to values;
    errors name the table by ``at`` and each overridden key by its origin (``--param M=x``).
    Relative paths are relative to the working directory. Raises SpecError listing every problem.
    """
    registry = _default_registry() if registry is None else registry
    at = tuple(at) or (kind,)
    nested: dict[str, Any] = dict(raw)
    for part in reversed(at):
        nested = {part: nested}
    prefix = ".".join(at)
    if overrides is not None:
        check_overrides(overrides)
    applied = apply_overrides(
        nested, {f"{prefix}.{key}": value for key, value in (overrides or {}).items()}, name
    )
    table: Any = applied.data
    for part in at:
        table = table[part]
    resolver = _Resolver(name, Path.cwd(), applied, registry)
    component = resolver.component(kind, at, table)
    if resolver.problems or component is None:
        raise SpecError(name, resolver.problems)
    return component


def _default_registry() -> Registry:
    from ..plugin_manager import get_registry

    return get_registry()


class _Resolver:
    """Validates one spec, collecting problems instead of stopping at the first."""

    def __init__(self, source: str, base_dir: Path, applied: Applied, registry: Registry) -> None:
        self.source = source
        self.base_dir = base_dir
        self.data = applied.data
        self.retyped = applied.retyped
        self.overridden = applied.overridden
        self.registry = registry
        self.problems: list[str] = []
        self.pipeline: PipelineSettings | None = None
        """``[pipeline]`` once validated, for the tables that check against it."""
        self.inferred: dict[str, str] = {}
        """The tables whose type ``[pipeline] checkpoint`` gave, each with what says so."""

    def spec(self) -> Spec:
        self._check_top_level()
        pipeline = self._settings("pipeline", PipelineSettings)
        if pipeline is not None:
            self._check_assets(pipeline, ("pipeline",))
        self.pipeline = pipeline
        generation = self._settings("generation", GenerationSettings)
        train = self._settings("train", TrainSettings)
        components = {}
        for table in SPEC_TABLES:  # each resolves in the kind of its name
            raw = self._typed_by_checkpoint(table, self.data.get(table))
            if raw is not None:
                component = self.component(table, (table,), raw)
                if component is not None:
                    components[table] = component
        if self.problems or pipeline is None or generation is None or train is None:
            raise SpecError(self.source, self.problems)
        return Spec(
            pipeline, generation, components, train, self.source, self.base_dir, self.inferred
        )

    def _typed_by_checkpoint(self, table: str, raw: Any) -> Any:
        """``raw``, the spec's ``[table]`` (None when absent), with the ``type`` that
        ``[pipeline] checkpoint`` implies where the table is missing or has none
        (:mod:`ragloom.spec.checkpoint_types`). A table without a type that the checkpoint
        cannot give is a problem; a missing one stays missing (``ragloom validate`` notes why:
        the checkpoint may not be written yet)."""
        checkpoint = self.pipeline.checkpoint if self.pipeline is not None else None
        untyped = raw is None or (isinstance(raw, dict) and "type" not in raw)
        if table not in INFERRED_TABLES or checkpoint is None or not untyped:
            return raw
        try:
            found = checkpoint_type(table, Path(absolute(checkpoint, self.base_dir)))
        except CheckpointError as error:
            if raw is not None:
                self._problem(
                    f'[{table}] has no type, and [pipeline] checkpoint = "{checkpoint}" cannot '
                    f'give it: {str(error).rstrip(".")}. Declare [{table}] type = "..." '
                    f"({listing(self.registry.names(table))}), or point checkpoint at a "
                    f"directory written by a transformers RAG model's save_pretrained.",
                    ("pipeline", "checkpoint"),
                )
            return None
        self.inferred[table] = f"from [pipeline] checkpoint: {found.reason}"
        return {"type": found.type, **(raw or {})}

    def _check_top_level(self) -> None:
        for key in self.data:
            if key not in TOP_LEVEL_KEYS:
                self.problems.append(
                    f'unknown top-level key "{key}".{suggestion(key, TOP_LEVEL_KEYS)} '
                    f"Allowed: {listing(TOP_LEVEL_KEYS)}."
                )
        version = self.data.get("schema")
        if version is None:
            self.problems.append(
                f"missing the key schema = {SCHEMA_VERSION} at the top (the spec format version)."
            )
        elif version != SCHEMA_VERSION:
            self.problems.append(
                f"schema = {toml_value(version)} is not a spec version this ragloom reads; "
                f"it reads schema = {SCHEMA_VERSION}."
            )

    def _settings(self, table: str, model: type[S]) -> S | None:
        raw = self.data.get(table, {})
        if not isinstance(raw, dict):
            self.problems.append(f"{table} = {toml_value(raw)} must be a table: [{table}].")
            return None
        return self._validate(model, (table,), raw)

    def _validate(self, model: type[M], table: tuple[str, ...], raw: Mapping[str, Any]) -> M | None:
        typed = {
            key: type_cli_value(value, model.model_fields[key].annotation)
            if key in model.model_fields
            else value
            for key, value in raw.items()
        }
        try:
            # strict, as JSON: no true for 1, "5" for 5 or 1e8 for an int, while a TOML array
            # still fills a tuple and a string a Path or an Enum (as in plugins' Params)
            return model.model_validate_json(json.dumps(typed, default=str), strict=True)
        except ValidationError as error:
            self.problems.extend(describe(error, table, model, self.overridden))
            return None

    def component(self, kind: str, table: tuple[str, ...], raw: Any) -> ComponentSpec | None:
        """The component table ``raw`` of ``kind`` at key path ``table``, its nested tables
        resolved too; None (the problems recorded) when it does not validate."""
        path = key_path(table)
        if not isinstance(raw, dict):
            self.problems.append(f"{path} = {toml_value(raw)} must be a table: [{path}].")
            return None
        name = raw.get("type")
        if name is None:
            known = listing(self.registry.names(kind))
            self.problems.append(f'[{path}] needs a key type = "...", one of: {known}.')
            return None
        type_path = (*table, "type")
        if not isinstance(name, str):
            self._problem(
                f"{where(table, 'type')} = {toml_value(name)} must be a string.", type_path
            )
            return None
        try:
            component = self.registry.load(kind, name)
        except UnknownComponentError as error:
            self._problem(f'[{path}] type = "{name}": {error}', type_path)
            return None
        except MissingExtraError as error:
            self._problem(f"[{path}] {error}", type_path)
            return None
        slots: Mapping[str, str] = component.slots if isinstance(component, Nested) else {}
        named_slots: Mapping[str, str] = (
            component.named_slots if isinstance(component, NamedSlots) else {}
        )
        children = {}
        for slot, slot_kind in slots.items():
            if slot not in raw:
                self.problems.append(
                    f'[{path}] type = "{name}" needs a [{path}.{slot}] table with a {slot_kind} '
                    f"type, one of: {listing(self.registry.names(slot_kind))}."
                )
                continue
            child = self.component(slot_kind, (*table, slot), raw[slot])
            if child is not None:
                children[slot] = child
        named = {}
        for key, key_kind in named_slots.items():
            members = self._named(key_kind, (*table, key), raw.get(key), name)
            if members is not None:
                named[key] = members
        nested = {*slots, *named_slots}
        params = {key: value for key, value in raw.items() if key != "type" and key not in nested}
        params = self._drop_keys_of_previous_type(component.Params, table, name, params)
        validated = self._validate(component.Params, table, params)
        if validated is None or len(children) != len(slots) or len(named) != len(named_slots):
            return None
        self._check_assets(validated, table)
        resolved = ComponentSpec(kind, name, validated, children, named)
        if isinstance(component, ChecksTable):
            declared = resolved.declared_children(self.registry)
            found = component.check_table(validated, self.pipeline, **declared)
            for at, problem in found:
                self._problem(f"{where(table, at)} {problem}", (*table, at) if at else table)
            if found:
                return None
        return resolved

    def _named(
        self, kind: str, table: tuple[str, ...], raw: Any, parent: str
    ) -> dict[str, ComponentSpec] | None:
        """The named components of ``kind`` under ``table`` (``[retriever.members.NAME]``), in
        the order declared; None (the problems recorded) when any does not validate."""
        path = key_path(table)
        if raw is None or raw == {}:
            self.problems.append(
                f'[{key_path(table[:-1])}] type = "{parent}" needs [{path}.NAME] tables, one per '
                f"{kind}, each with a type: {listing(self.registry.names(kind))}."
            )
            return None
        if not isinstance(raw, dict):
            self.problems.append(
                f"{path} = {toml_value(raw)} must hold tables: [{path}.NAME], one per {kind}."
            )
            return None
        members = {
            member: self.component(kind, (*table, member), value) for member, value in raw.items()
        }
        if any(member is None for member in members.values()):
            return None
        return {member: spec for member, spec in members.items() if spec is not None}

    def _check_assets(self, validated: BaseModel, table: tuple[str, ...]) -> None:
        """Refuse ``asset:NAME`` path values naming no packaged model or corpus."""
        from ..assets import ASSETS, KNOWLEDGE_BASES

        known = [*ASSETS, *KNOWLEDGE_BASES]
        for key in path_keys(type(validated)):
            value = getattr(validated, key)
            if not (isinstance(value, str) and value.startswith(ASSET_PREFIX)):
                continue
            name = value.removeprefix(ASSET_PREFIX)
            if name not in known:
                self._problem(
                    f'{where(table, key)} = "{value}": no packaged model or corpus "{name}".'
                    f"{suggestion(name, known)} Packaged: {listing(known)}.",
                    (*table, key),
                )

    def _problem(self, line: str, path: tuple[str, ...]) -> None:
        """Record a problem about the key at ``path``, naming the override that set it."""
        self.problems.append(from_override(line, path, self.overridden))

    def _drop_keys_of_previous_type(
        self, model: type[BaseModel], table: tuple[str, ...], name: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """After ``--set <table>.type=...``, the file's keys the new type lacks are dropped.

        Keys set by overrides themselves are kept (and validated).
        """
        if table not in self.retyped:
            return params
        kept, dropped = {}, []
        for key, value in params.items():
            if key in model.model_fields or (*table, key) in self.overridden:
                kept[key] = value
            else:
                dropped.append(key)
        if dropped:
            log.warning(
                "%s: [%s] type overridden to %r; ignoring keys it does not take: %s",
                self.source,
                key_path(table),
                name,
                ", ".join(dropped),
            )
        return kept
