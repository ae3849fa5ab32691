"""What several commands share: spec loading with ``--set``, ``--threads``, and table printing."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..spec import Spec, load_spec, parse_assignment
from ..spec.threads import resolve_threads, use_threads
from .options import at_least_one


def add_set_option(parser: argparse.ArgumentParser, threads: bool = True) -> None:
    """``--set KEY.PATH=VALUE``, overriding a key of the spec the command loads, and with
    ``threads`` (every command that runs a pipeline) ``--threads N``."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a spec key, e.g. --set retriever.index.type=hnsw (repeatable)",
    )
    if threads:
        add_threads_option(parser)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N``, which :func:`use_command_threads` applies before the command runs."""
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="threads of torch and faiss; overrides [pipeline] threads (default: [pipeline] "
        "threads, else OMP_NUM_THREADS, else the CPUs this process may use: its affinity, "
        "capped by a container's CPU quota). On a machine others keep busy, use fewer",
    )


def use_command_threads(args: argparse.Namespace) -> None:
    """Set the threads of a command with ``--threads`` before it works: ``--threads``, else
    the default (:func:`ragloom.spec.threads.default_threads`; a spec's ``[pipeline] threads``
    takes over when its pipeline builds). ``--threads`` also overrides ``[pipeline] threads`` of
    the spec the command loads, so that its pipeline keeps the count (and records it)."""
    at_least_one("--threads", args.threads)
    use_threads(resolve_threads(args.threads, "--threads").count)
    if args.threads is not None and "set" in vars(args):
        args.set = [*args.set, f"pipeline.threads={args.threads}"]


def add_write_options(parser: argparse.ArgumentParser, force: str | None = None) -> None:
    """``--no-wait`` for every command that writes an artifact; ``--force`` where replacing an
    artifact of other data must be asked for (``force`` says what it allows)."""
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="fail at once if another ragloom process is writing the same output",
    )
    if force:
        parser.add_argument("--force", action="store_true", help=force)


def input_key(path: Path, *settings: Any) -> list[Any]:
    """What identifies an input file for resuming: its absolute path, size, modification time
    and the settings it is read with."""
    try:
        stat = path.stat()
    except OSError:
        return [str(path), *settings]  # the reader says what is wrong with the path
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns, *settings]


def overrides(
    assignments: Sequence[str], option: str = "--set", example: str = ""
) -> dict[str, Any]:
    """``KEY=VALUE`` texts given to ``option`` as a mapping; errors name ``option`` and show
    ``example`` (default: a spec key path)."""
    shown = {"example": example} if example else {}
    return dict(parse_assignment(text, option, **shown) for text in assignments)


def spec_from_args(path: str, assignments: Sequence[str]) -> Spec:
    return load_spec(Path(path), overrides(assignments))


def component_lines(spec: Spec) -> list[str]:
    """``[table]  type`` for every component of ``spec``, nested ones indented by path; a type
    the spec left to ``[pipeline] checkpoint`` says where it came from."""
    rows: list[tuple[str, str, str]] = []
    for table, component in spec.components.items():
        rows.append((f"[{table}]", component.type, spec.inferred.get(table, "")))
        rows.extend(
            (f"[{'.'.join((table, *path))}]", child.type, "") for path, child in component.nested()
        )
    return [line.rstrip() for line in table_lines(rows, indent="  ")]


def threads_line(spec: Spec, indent: str = "  ") -> str:
    """The threads a command running ``spec`` starts with, and where the count comes from."""
    threads = resolve_threads(spec.pipeline.threads)
    source = "" if spec.pipeline.threads is not None else f" ({threads.source})"
    return f"{indent}[pipeline] threads {threads.count}{source}"


def table_lines(rows: Sequence[Sequence[Any]], indent: str = "") -> list[str]:
    """Rows as left-aligned columns (the last column is not padded)."""
    cells = [[str(cell) for cell in row] for row in rows]
    if not cells:
        return []
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]) - 1)]
    return [
        indent + "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
        for row in cells
    ]
