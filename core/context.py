"""What a component is told when it is built: where the spec lives, the pipeline settings, and
its nested components."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .spec.model import PipelineSettings


@dataclass(frozen=True)
class BuildContext:
    """Passed to ``Component.from_spec``.

    ``base_dir`` is the directory of the spec file (the working directory for a spec given as a
    mapping); relative paths in a spec are relative to it. ``pipeline`` is the ``[pipeline]`` table.
    """

    base_dir: Path
    pipeline: PipelineSettings

    def resolve_path(self, path: str | Path) -> Path:
        """``path`` made absolute against the spec's directory; ``~`` is expanded, and
        ``asset:NAME`` names a packaged model (:mod:`ragloom.assets`)."""
        if isinstance(path, str) and path.startswith("asset:"):
            from .assets import resolve

            return resolve(path)
        expanded = Path(path).expanduser()
        return expanded if expanded.is_absolute() else (self.base_dir / expanded).resolve()


@dataclass(frozen=True)
class Declared:
    """A nested component as its parent receives it: resolved and validated, not yet built.

    The parent decides when and how to build it (a dense retriever loads a cached index or builds
    one from stored embeddings). ``component`` is the registered class, ``params`` its validated
    ``Params``, ``type`` the registered name.
    """

    type: str
    component: Any
    params: BaseModel
