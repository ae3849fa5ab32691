"""The ``ragloom`` command line.

Errors a user can cause (:class:`RagloomError`) print as one paragraph on stderr with exit status
1, never a traceback; so do errors of the operating system (a file that cannot be read or
written), naming the path. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from collections.abc import Sequence

from .commands import ask as ask_commands
from .commands import demo as demo_commands
from .commands import evaluate as eval_commands
from .commands import index as index_commands
from .commands import kb as kb_commands
from .commands import serve as serve_commands
from .commands import train as train_commands
from .commands.common import (
    add_set_option,
    component_lines,
    spec_from_args,
    table_lines,
    threads_line,
    use_command_threads,
)
from .commands.verbosity import RagloomParser, set_verbosity
from .errors import RagloomError, SpecError
from .locks import waiting
from .plugin_manager import get_registry
from .preflight import preflight
from .version import ragloom_version


def cmd_plugins(args: argparse.Namespace) -> int:
    """List every registered component with the distribution that registered it."""
    entries = get_registry().entries()
    if args.json:
        rows = [
            {
                "kind": e.kind,
                "name": e.name,
                "distribution": e.owner.distribution,
                "version": e.owner.version,
                "plugin": e.owner.plugin,
                "description": e.description,
                "missing": e.missing_modules(),
            }
            for e in entries
        ]
        print(json.dumps(rows, indent=2))
        return 0
    table = [("KIND", "NAME", "DISTRIBUTION", "VERSION", "DESCRIPTION")]
    for e in entries:
        needs = f"  [needs: {e.install}]" if e.missing_modules() else ""
        table.append((e.kind, e.name, e.owner.distribution, e.owner.version, e.description + needs))
    print("\n".join(table_lines(table)))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate a spec: schema, registry resolution, every component's parameters."""
    spec = spec_from_args(args.spec, args.set)
    checks = preflight(spec, get_registry())
    if checks.problems:
        raise SpecError(args.spec, checks.problems)
    print(f"{args.spec}: valid (schema 1, n_docs {spec.pipeline.n_docs})")
    print("\n".join([*component_lines(spec), threads_line(spec)]))
    print("\n".join(train_commands.settings_lines(spec)))
    for note in checks.notes:
        print(f"  {note}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = RagloomParser(
        prog="ragloom",
        description="Retrieval-Augmented Generation you can take apart.",
    )
    parser.set_defaults(verbose=False)
    parser.add_argument("--version", action="version", version=f"ragloom {ragloom_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plugins = commands.add_parser("plugins", help="list registered components and their owners")
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plugins.set_defaults(handler=cmd_plugins)

    validate = commands.add_parser("validate", help="check a spec without loading anything heavy")
    validate.add_argument("spec", help="path to a TOML spec")
    add_set_option(validate, threads=False)
    validate.set_defaults(handler=cmd_validate)

    ask_commands.add_to(commands)
    demo_commands.add_to(commands)
    eval_commands.add_to(commands)
    kb_commands.add_to(commands)
    index_commands.add_to(commands)
    serve_commands.add_to(commands)
    train_commands.add_to(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("ragloom").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    set_verbosity(args.verbose)
    try:
        with waiting(not getattr(args, "no_wait", False)):
            if "threads" in vars(args):
                use_command_threads(args)
            status: int = args.handler(args)
    except RagloomError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        logging.getLogger("ragloom").debug("operating system error", exc_info=True)
        print(f"error: {os_error_message(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: nothing half-written was left where it would be read; run the same "
            "command again to resume (builds and training) or start over.",
            file=sys.stderr,
        )
        return 130
    return status


OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free some space or write elsewhere",
    errno.EFBIG: "a file-size limit is set (ulimit -f): raise it or write elsewhere",
    errno.EACCES: "check the permissions of the path",
    errno.EPERM: "check the permissions of the path",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.ENOENT: "check the path",
    errno.EISDIR: "give a file, not a directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
}


def os_error_message(error: OSError) -> str:
    """An operating-system error as one sentence: what failed, on which path, what to do."""
    where = " -> ".join(str(name) for name in (error.filename, error.filename2) if name)
    reason = error.strerror or str(error)
    advice = OS_ADVICE.get(error.errno or 0, "")
    return f"{where + ': ' if where else ''}{reason}{'; ' + advice if advice else ''}."


if __name__ == "__main__":
    sys.exit(main())
