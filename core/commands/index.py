"""``ragloom index build`` and ``ragloom index compare``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifacts import check_outside, claim_file
from ..context import Declared
from ..errors import SpecError
from ..plugin_manager import get_registry
from ..spec import load_component, load_spec
from ..spec.overrides import CliText
from .common import add_threads_option, overrides, table_lines
from .kb import add_encoding_options, build_from_args
from .options import at_least_one, passages_per_question

if TYPE_CHECKING:
    import numpy as np

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


def question_vectors(
    kb: Any, data: Path, spec_path: Path, threads: int | None = None
) -> np.ndarray:
    """The questions of the QA file ``data`` encoded by the ``[encoder]`` of the spec at
    ``spec_path``, which must be the encoder of ``kb``'s passages (or the spec's retriever must
    allow a mismatch); ``threads`` (``--threads``) overrides its ``[pipeline] threads``."""
    import torch

    from ..evaluation import read_qa
    from ..pipeline import Pipeline

    questions = [item.question for item in read_qa(data)]
    spec = load_spec(spec_path, {"pipeline.threads": threads} if threads else None)
    if "encoder" not in spec.components:
        raise SpecError(
            str(spec_path),
            ["has no [encoder] to encode the --data questions: give the spec that built the KB."],
        )
    retriever = spec.components.get("retriever")
    allow_mismatch = retriever is not None and bool(
        getattr(retriever.params, "allow_mismatch", False)
    )
    encoder = Pipeline.from_spec(spec).encoder
    kb.check_encoder(encoder.fingerprint, allow_mismatch)
    with torch.inference_mode():
        vectors: np.ndarray = encoder.encode_queries(questions).to(torch.float32).numpy()
    return vectors


def compare_queries(args: argparse.Namespace, kb: Any) -> tuple[np.ndarray, str]:
    """The query vectors ``args`` choose and what they are, for the table and the plot."""
    from ..kb.compare import default_queries, load_queries

    if args.data:
        vectors = question_vectors(kb, Path(args.data), Path(args.spec), args.threads)
        return vectors, f"{len(vectors):,} questions of {Path(args.data).name}"
    if args.queries:
        vectors = load_queries(Path(args.queries), kb.dim)
        return vectors, f"{len(vectors):,} query vectors of {Path(args.queries).name}"
    vectors = default_queries(kb, args.num_queries)
    return vectors, f"{len(vectors):,} midpoints of random pairs of stored vectors"


def check_query_options(args: argparse.Namespace) -> None:
    """Refuse query options that contradict each other before anything loads."""
    at_least_one("--num-queries", args.num_queries)
    if args.data and args.queries:
        raise SpecError(
            "--data", ["give questions (--data) or query vectors (--queries), not both."]
        )
    if bool(args.data) != bool(args.spec):
        raise SpecError(
            "--data" if args.data else "--spec",
            [
                "--data QA.jsonl and --spec SPEC go together (the spec's [encoder] encodes the "
                "questions): give both."
            ],
        )


def cmd_compare(args: argparse.Namespace) -> int:
    from ..kb import KnowledgeBase
    from ..kb.compare import exact_neighbours, measure, plot

    passages_per_question("-k", args.k)
    check_query_options(args)
    plot_path = Path(args.plot)
    inputs = {"queries": args.queries, "QA file": args.data, "spec": args.spec}
    check_outside(
        plot_path,
        {"knowledge base": Path(args.kb)}
        | {name: Path(value) if value else None for name, value in inputs.items()},
        "--plot",
    )
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
    queries, source = compare_queries(args, kb)
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
    print(f"{len(kb)} vectors of dim {kb.dim}; {len(queries)} queries ({source}); k = {args.k}")
    print("\n".join(table_lines(rows)))
    title = f"{len(kb):,} vectors of dim {kb.dim}; {source}; k = {args.k}"
    plot(measurements, args.k, title, plot_path)
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
    compare.add_argument(
        "--data", help="QA .jsonl file: its questions, encoded by --spec's [encoder], as queries"
    )
    compare.add_argument("--spec", help="with --data: the spec whose [encoder] encodes them")
    compare.add_argument(
        "--num-queries",
        type=int,
        default=1000,
        help="without --queries or --data: this many midpoints of random pairs of stored vectors",
    )
    compare.add_argument("-k", type=int, default=10, help="neighbours per query")
    compare.add_argument("--plot", default="index-compare.png", help="PNG to write")
    add_threads_option(compare)
    compare.set_defaults(handler=cmd_compare)
