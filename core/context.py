"""What a component is told when it is built: where the spec lives, the pipeline settings, and
its nested components (:class:`Declared`, from :mod:`ragloom.declared`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .assets import ASSET_PREFIX, resolve
from .declared import Declared as Declared
from .spec.paths import absolute

if TYPE_CHECKING:
    from .spec.model import PipelineSettings


@dataclass(frozen=True)
class BuildContext:
    """Passed to ``Component.from_spec``.

    ``base_dir`` is the directory of the spec file (the working directory for a spec given as a
    mapping); relative paths in a spec are relative to it. ``pipeline`` is the ``[pipeline]`` table.
    ``component(table)`` gives another component of the same pipeline; ``types`` maps each
    top-level table to its registered type.
    """

    base_dir: Path
    pipeline: PipelineSettings
    lookup: Callable[[str], Any] | None = None
    types: Mapping[str, str] = field(default_factory=dict)

    def component(self, table: str) -> Any:
        """The pipeline's component of ``[table]`` (built on first use), for components that
        need another one: a retriever that builds its knowledge base with the encoder."""
        if self.lookup is None:
            from .errors import MissingComponentError

            raise MissingComponentError(f"no pipeline to take the [{table}] component from.")
        return self.lookup(table)

    def resolve_path(self, path: str | Path) -> Path:
        """``path`` made absolute against the spec's directory; ``~`` is expanded, and
        ``asset:NAME`` names a packaged model (:mod:`ragloom.assets`)."""
        if isinstance(path, str) and path.startswith(ASSET_PREFIX):
            return resolve(path)
        return Path(absolute(str(path), self.base_dir))
