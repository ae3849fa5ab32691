"""Errors a user can cause, each with a message that says what, where and what to do.

Every exception here is a :class:`RagloomError`; its ``str()`` is the whole message. The CLI
prints it and exits with status 1, without a traceback. Anything else escaping the CLI is a bug.
"""

from __future__ import annotations

from collections.abc import Sequence


class RagloomError(Exception):
    """Base class of the errors a user can cause and fix."""


class SpecError(RagloomError):
    """A spec that cannot be read or does not validate.

    ``source`` names the file (or ``<dict>`` for a spec given as a mapping); ``problems`` holds
    one line per problem, each naming its key path.
    """

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"{source}: {self.problems[0]}"
        else:
            listed = "\n".join(f"  - {problem}" for problem in self.problems)
            message = f"{source}: {len(self.problems)} problems\n{listed}"
        super().__init__(message)


class UnknownComponentError(RagloomError):
    """A component name that no built-in or installed plugin registered."""


class DuplicateComponentError(RagloomError):
    """Two registrations of one (kind, name) pair."""


class MissingExtraError(RagloomError):
    """A registered component whose optional dependencies are not installed."""


class PluginLoadError(RagloomError):
    """A plugin (an entry point in the ``ragloom`` group) that failed to import or register."""


class MissingComponentError(RagloomError):
    """A pipeline method called on a pipeline whose spec lacks a component it needs."""


class IndexFileError(RagloomError):
    """A saved index or knowledge base that is missing, truncated, corrupt or of another kind."""


class IndexBuildError(RagloomError):
    """An index that cannot be built with the given parameters and data."""


class ParameterError(RagloomError, ValueError):
    """A parameter that validated alone but cannot work with what it meets at run time."""


class MismatchError(RagloomError):
    """A knowledge base or index used with an encoder or passages other than its own."""


class LockedError(RagloomError):
    """An artifact another writer holds, met with waiting turned off (``--no-wait``)."""


class ArtifactError(RagloomError):
    """An output path ragloom will not write: a user's directory or file, a symbolic link, an
    input of the same command, or an artifact of other data without ``--force``."""


class WriteError(RagloomError):
    """A write that failed for lack of space or a file-size limit, or was refused by the
    file system; nothing half-written is left where it would be read."""


class QuestionError(RagloomError, TypeError, ValueError):
    """Questions that are not a list of valid text: one string, a non-string item, or a string
    with a lone surrogate (a byte that was not UTF-8)."""
