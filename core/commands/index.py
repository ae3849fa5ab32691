"""``ragloom index build`` and ``ragloom index compare``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..artifacts import check_outside, claim_file
from ..context import Declared
from ..errors import SpecError
from ..plugin_manager import get_registry
from ..spec import load_component
from ..spec.overrides import CliText
from .common import overrides, table_lines
from .kb import add_encoding_options, build_from_args
from .options import at_least_one, passages_per_question

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INDEX_TABLE = ("retriever", "index")
"""Where a spec declares the index these commands build: errors name keys by this table."""


def declared_index(
    type_name: str, assignments: Sequence[str], only_known: bool = False
) -> Declared:
    """An index declared on the command line (``--type``, ``--param KEY=VALUE``), validated as a
    spec's ``[retriever.index]`` is.

    With ``only_known``, parameters the type does not take are left out instead of refused.
    """
    registry = get_registry()
    given = {
        key: CliText(value, f"--param {key}={value}")
        for key, value in overrides(assignments, "--param", "KEY=VALUE, e.g. M=32").items()
    }
    if only_known:
        fields = registry.load("index", type_name).Params.model_fields
        given = {key: value for key, value in given.items() if key in fields}
    table = {"type": type_name}
    index = load_component("index", table, INDEX_TABLE, given, registry, f"--type {type_name}")
    return index.declared(registry)


def cmd_build(args: argparse.Namespace) -> int:
    from ..kb import KnowledgeBase

    at_least_one("--shards", args.shards)
    if args.ray and not (args.shards or args.input):
        raise SpecError(
            "--ray", ["runs shard builds (--shards N) and encoding (--input); give one of them."]
        )
    if args.input:
        if not args.spec:
            raise SpecError("--input", ["encoding documents needs --spec (its [encoder])."])
        build_from_args(args, Path(args.kb))
    kb = KnowledgeBase.open(Path(args.kb))
    declared = declared_index(args.type, args.param)
    if args.shards is None:
        kb.build_index(declared)
        print(f"built {kb.index_path(declared)} ({len(kb)} vectors)")
        return 0
    if args.ray:
        from ..kb.ray_build import build_shard_indexes_on_ray

        build_shard_indexes_on_ray(kb, declared, args.shards, args.address, args.num_cpus)
    else:
        for shard in kb.unbuilt_shards(declared, args.shards):
            kb.build_index(declared, shard=shard)
    parent = kb.index_path(declared, kb.shards(args.shards)[0]).parent
    print(f"built {parent} ({args.shards} shards, {len(kb)} vectors)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..kb import KnowledgeBase
    from ..kb.compare import default_queries, exact_neighbours, load_queries, measure, plot

    passages_per_question("-k", args.k)
    at_least_one("--num-queries", args.num_queries)
    plot_path = Path(args.plot)
    queries_file = Path(args.queries) if args.queries else None
    check_outside(plot_path, {"knowledge base": Path(args.kb), "queries": queries_file}, "--plot")
    claim_file(plot_path, "PNG plot", PNG_SIGNATURE)
    kb = KnowledgeBase.open(Path(args.kb))
    if args.k > len(kb):
        raise SpecError(
            "-k", [f"{args.k} neighbours is more than the {len(kb)} vectors of {args.kb} hold."]
        )
    types = [name.strip() for name in args.types.split(",") if name.strip()]
    if not types:
        raise SpecError("--types", ["name at least one index type, e.g. faiss-exact,hnsw."])
    declared = [declared_index(name, args.param, only_known=True) for name in types]
    if args.queries:
        queries = load_queries(Path(args.queries), kb.dim)
    else:
        queries = default_queries(kb, args.num_queries)
    truth = exact_neighbours(kb, queries, args.k)
    rows: list[tuple[Any, ...]] = [
        ("INDEX", f"RECALL@{args.k}", "QPS@1", "QPS@64", "BUILD s", "B/VECTOR", "MEMORY MB")
    ]
    measurements = []
    for item in declared:
        m = measure(kb, item, queries, truth, args.k)
        measurements.append(m)
        rows.append(
            (
                m.name,
                f"{m.recall:.4f}",
                f"{m.qps_batch1:.0f}",
                f"{m.qps_batch64:.0f}",
                f"{m.build_seconds:.1f}",
                f"{m.bytes_per_vector:.0f}",
                f"{m.memory_bytes / 2**20:.1f}",
            )
        )
    print(f"{len(kb)} vectors of dim {kb.dim}; {len(queries)} queries; k = {args.k}")
    print("\n".join(table_lines(rows)))
    plot(measurements, args.k, plot_path)
    print(f"plot: {args.plot}")
    return 0


def add_to(commands: Any) -> None:
    index = commands.add_parser("index", help="build and compare indexes of a knowledge base")
    actions = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")

    build = actions.add_parser("build", help="build (or rebuild) one index of a KB")
    build.add_argument("kb", help="knowledge base directory")
    build.add_argument("--type", required=True, help="index type, e.g. faiss-compressed")
    build.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="index parameter"
    )
    build.add_argument(
        "--shards", type=int, help="build one index per shard of N (the ray-sharded retriever's)"
    )
    build.add_argument(
        "--input", help="first encode these documents into the KB (.jsonl, .csv, .tsv)"
    )
    build.add_argument("--spec", help="with --input: the spec whose [encoder] encodes them")
    add_encoding_options(build)
    build.set_defaults(handler=cmd_build)

    compare = actions.add_parser(
        "compare", help="recall, speed and size of several index types, side by side"
    )
    compare.add_argument("kb", help="knowledge base directory")
    compare.add_argument("--types", required=True, help="comma-separated index types")
    compare.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="parameter applied to every type that has it",
    )
    compare.add_argument("--queries", help=".npy float32 [n, dim] query vectors")
    compare.add_argument("--num-queries", type=int, default=1000, help="default query count")
    compare.add_argument("-k", type=int, default=10, help="neighbours per query")
    compare.add_argument("--plot", default="index-compare.png", help="PNG to write")
    compare.set_defaults(handler=cmd_compare)
