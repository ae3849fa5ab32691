"""Checks ``ragloom validate`` makes beyond the schema, before any model or index loads.

Components opt in with two optional class methods:

- an encoder's ``fingerprint_from_spec(params, context) -> str`` (from files, no model loaded);
- a retriever's ``preflight(params, context, encoder_fingerprint, **children)`` returning notes
  (sizes, memory estimates) and problems (an encoder that does not match the knowledge base).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .context import BuildContext, Declared
from .errors import RagloomError
from .registry import Registry
from .spec import Spec


@dataclass
class Preflight:
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def preflight(spec: Spec, registry: Registry) -> Preflight:
    """Notes and problems found from the spec's files without loading models or indexes."""
    result = Preflight()
    context = BuildContext(spec.base_dir, spec.pipeline)
    fingerprint = None
    encoder = spec.components.get("encoder")
    if encoder is not None:
        component = registry.load("encoder", encoder.type)
        compute = getattr(component, "fingerprint_from_spec", None)
        if compute is not None:
            try:
                fingerprint = compute(encoder.params, context)
                result.notes.append(f"[encoder] fingerprint {fingerprint}")
            except RagloomError as error:
                result.notes.append(f"[encoder] not checked: {error}")
    retriever = spec.components.get("retriever")
    if retriever is not None:
        component = registry.load("retriever", retriever.type)
        check = getattr(component, "preflight", None)
        if check is not None:
            children = {
                key: Declared(child.type, registry.load(child.kind, child.type), child.params)
                for key, child in retriever.children.items()
            }
            notes, problems = check(retriever.params, context, fingerprint, **children)
            result.notes.extend(notes)
            result.problems.extend(problems)
    return result
