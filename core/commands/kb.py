"""``ragloom kb build | info | import-hf | export-hf | package``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..artifacts import absolute, check_outside, claim
from ..errors import IndexFileError, RagloomError, SpecError
from ..spec import Spec
from ..spec.problems import toml_value
from .common import add_set_option, add_write_options, input_key, spec_from_args, table_lines
from .options import at_least_one


def _encoder(spec: Spec) -> tuple[Any, str]:
    from ..pipeline import Pipeline

    return Pipeline.from_spec(spec).encoder, spec.components["encoder"].type


SPLIT_WORDS = 100
"""Words per passage when ``--split-words`` is not given: DPR's and RAG's passages (why it is
the default: docs/corpus.md)."""


def split_words_option(value: int) -> int | None:
    """``--split-words``: the words per passage; None (whole documents) for 0."""
    if value < 0:
        raise SpecError(
            "--split-words",
            [
                f"{value} is not allowed: give the words per passage ({SPLIT_WORDS}, as DPR and "
                f"RAG cut them), or 0 to keep each document whole."
            ],
        )
    return value or None


def build_from_args(args: argparse.Namespace, out: Path) -> Any:
    """The KB ``args`` describe (documents, spec, encoding options), built locally or with
    ``--ray``."""
    from ..kb import build_knowledge_base, read_documents
    from ..kb.documents import passages
    from ..kb.manifest import KB_KIND

    for option in ("batch_size", "chunk_size", "num_cpus"):
        at_least_one(f"--{option.replace('_', '-')}", getattr(args, option))
    words = split_words_option(args.split_words)
    if args.flush_seconds < 0:
        raise SpecError(
            "--flush-seconds", [f"{args.flush_seconds} is negative; 0 saves after every batch."]
        )
    check_outside(out, {"input": Path(args.input), "spec": Path(args.spec)})
    claim(absolute(out), KB_KIND)  # before the encoder loads; checked again under the lock
    spec = spec_from_args(args.spec, args.set)
    # without [encoder], the KB holds passages only: for retrievers that read text (bm25)
    encoder, encoder_type = _encoder(spec) if "encoder" in spec.components else (None, "none")
    documents = passages(read_documents(Path(args.input), args.format), words)
    options: dict[str, Any] = {
        "encoder_type": encoder_type,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "source": {"input": str(args.input), "split_words": words},
        "force": args.force,
        "input_key": input_key(Path(args.input), args.format, words),
    }
    try:
        if args.ray and encoder is not None:
            from ..kb.ray_build import build_knowledge_base_on_ray

            return build_knowledge_base_on_ray(
                documents,
                encoder,
                spec.with_absolute_paths(),
                out,
                address=args.address,
                num_cpus=args.num_cpus,
                chunk_size=args.chunk_size,
                **options,
            )
        return build_knowledge_base(
            documents, encoder, out, flush_seconds=args.flush_seconds, **options
        )
    except ValueError as error:
        raise RagloomError(f"{args.input}: {error}") from None


def cmd_build(args: argparse.Namespace) -> int:
    kb = build_from_args(args, Path(args.out))
    fingerprint = kb.manifest.encoder.fingerprint
    vectors = f"dim {kb.dim}, encoder {fingerprint}" if kb.dim else "no vectors (no [encoder])"
    print(f"{kb.directory}: {len(kb)} passages, {vectors}")
    return 0


def add_encoding_options(parser: argparse.ArgumentParser) -> None:
    """The options of a KB build: input format, splitting, dtype, batching, Ray."""
    parser.add_argument("--format", choices=["jsonl", "csv", "tsv"], help="input format")
    parser.add_argument(
        "--split-words",
        type=int,
        default=SPLIT_WORDS,
        metavar="N",
        help=f"cut documents into passages of N words, as DPR and RAG do (default {SPLIT_WORDS}; "
        "0: one passage per document)",
    )
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--batch-size", type=int, default=256, help="passages per progress step")
    parser.add_argument(
        "--flush-seconds", type=float, default=5.0, help="how often progress is saved (local)"
    )
    parser.add_argument(
        "--ray", action="store_true", help="run on Ray: encoding tasks and shard index builds"
    )
    add_ray_options(parser)
    parser.add_argument(
        "--chunk-size", type=int, default=8192, help="passages per Ray task (--ray)"
    )
    add_set_option(parser)
    add_write_options(parser, force="replace a knowledge base of other passages")


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default="local",
        help='Ray cluster: "local" (start one here), "auto", or ray://HOST:PORT (--ray)',
    )
    parser.add_argument("--num-cpus", type=int, help='CPUs of a "local" Ray instance (--ray)')


def cmd_info(args: argparse.Namespace) -> int:
    from ..kb import KnowledgeBase

    kb = KnowledgeBase.open(Path(args.kb))
    m = kb.manifest
    print(f"knowledge base {kb.directory}")
    rows: list[tuple[str, object]] = [
        ("passages", m.count),
        ("dimension", m.dim),
        ("embeddings", m.embeddings_dtype),
        ("encoder", m.encoder.described()),
        ("passages sha256", m.passages_sha256),
        ("built by", f"ragloom {m.ragloom_version}"),
    ]
    print("\n".join(table_lines(rows, indent="  ")))
    problems = verify(kb) if args.verify else []
    indexes = kb.index_manifests()
    print(f"indexes ({len(indexes)})")
    built = [
        (
            str(path.relative_to(kb.directory / "indexes")),
            f"{manifest.count} vectors"
            + (f", rows {manifest.rows[0]}..{manifest.rows[1] - 1}" if manifest.rows else ""),
            f"built in {manifest.build_seconds:.1f} s",
        )
        for path, manifest in indexes
    ]
    print("\n".join(table_lines(built, indent="  ")))
    if problems:
        raise IndexFileError(
            f"{len(problems)} damaged file(s) in {kb.directory}: {'; '.join(problems)}. Rebuild "
            f"what they belong to: the knowledge base with `ragloom kb build ... --force`, an "
            f"index with `ragloom index build {kb.directory} --type TYPE`."
        )
    return 0


def verify(kb: Any) -> list[str]:
    """Check every file of ``kb`` and of its indexes against their manifests' sizes and
    checksums, printing a line for each artifact; returns the problems found."""
    from ..kb.manifest import file_problems

    artifacts = [(kb.directory, kb.manifest.files, "knowledge base")]
    artifacts += [
        (path, manifest.files, f"index {path.name}") for path, manifest in kb.index_manifests()
    ]
    problems = []
    for directory, files, what in artifacts:
        if files is None:
            print(f"  verify {what}: no checksums recorded (built by an older ragloom)")
            continue
        found = file_problems(directory, files, checksums=True)
        print(f"  verify {what}: {len(files)} files, " + ("ok" if not found else "DAMAGED"))
        problems += found
    return problems


def cmd_import_hf(args: argparse.Namespace) -> int:
    from ..kb.hf import import_hf
    from ..kb.manifest import UNVERIFIED

    index = Path(args.index) if args.index else None
    check_outside(Path(args.out), {"dataset": Path(args.passages), "index file": index})
    encoder, encoder_type = (None, UNVERIFIED)
    if args.spec:
        encoder, encoder_type = _encoder(spec_from_args(args.spec, args.set))
    kb = import_hf(
        Path(args.passages), Path(args.out), index, encoder, encoder_type, force=args.force
    )
    recorded = kb.manifest.encoder.described()
    print(f"{kb.directory}: {len(kb)} passages, dim {kb.dim}, encoder {recorded}")
    for _, manifest in kb.index_manifests():
        keys = "".join(f", {key} = {toml_value(value)}" for key, value in manifest.params.items())
        print(f'index imported; use it with [retriever.index] type = "{manifest.type}"{keys}')
    return 0


def cmd_export_hf(args: argparse.Namespace) -> int:
    from ..kb import KnowledgeBase
    from ..kb.hf import export_hf

    check_outside(Path(args.out), {"knowledge base": Path(args.kb)})
    passages, index = export_hf(KnowledgeBase.open(Path(args.kb)), Path(args.out))
    print(
        f"wrote {passages} and {index}: RagRetriever.from_pretrained(..., index_name='custom', "
        f"passages_path='{passages}', index_path='{index}')"
    )
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    import importlib.resources

    from ..kb import packaged, prebuilt

    packaged.checked_name(args.name)  # before the encoder loads
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise RagloomError(
            f"--out {args.out} is a file; give the folder to write the archive and its record "
            f"into (made if missing)."
        )
    rebuild = f"ragloom kb package {args.name}" + (f" --spec {args.spec}" if args.spec else "")
    example = importlib.resources.files("ragloom").joinpath("examples", DEFAULT_SPEC)
    with importlib.resources.as_file(example) as default:
        spec = spec_from_args(args.spec or str(default), [])
        if "encoder" not in spec.components:
            raise SpecError(
                f"{spec.source}: [encoder]",
                ["missing: the prebuilt archive holds vectors; give a spec with an [encoder]"],
            )
        encoder, encoder_type = _encoder(spec)
        out = Path(args.out) if args.out else prebuilt.FOLDER
        archive = packaged.package(args.name, encoder, encoder_type, out, rebuild)
    print(f"{archive}: the prebuilt {args.name} knowledge base for encoder {encoder.fingerprint}")
    return 0


DEFAULT_SPEC = "wikipedia.toml"
"""The spec whose [encoder] ``kb package`` encodes with unless given one: the embedded default's,
whose knowledge base the package ships."""


def add_to(commands: Any) -> None:
    kb = commands.add_parser("kb", help="build, inspect, import and export knowledge bases")
    actions = kb.add_subparsers(dest="kb_command", required=True, metavar="ACTION")

    build = actions.add_parser("build", help="encode documents into a knowledge base")
    build.add_argument("input", help="documents: .jsonl, .csv or DPR-style .tsv")
    build.add_argument(
        "--spec",
        required=True,
        help="spec whose [encoder] encodes the passages (none: passages only, for bm25)",
    )
    build.add_argument("--out", required=True, help="knowledge base directory to write")
    add_encoding_options(build)
    build.set_defaults(handler=cmd_build)

    info = actions.add_parser("info", help="what a knowledge base holds, and its indexes")
    info.add_argument("kb")
    info.add_argument(
        "--verify",
        action="store_true",
        help="check every file of the KB and its indexes against the manifests' checksums",
    )
    info.set_defaults(handler=cmd_info)

    importer = actions.add_parser(
        "import-hf", help="read a knowledge base made for transformers' RagRetriever (custom)"
    )
    importer.add_argument("passages", help="the datasets.save_to_disk directory")
    importer.add_argument("--index", help="its faiss index file (optional)")
    importer.add_argument("--out", required=True, help="knowledge base directory to write")
    importer.add_argument(
        "--spec",
        help="spec whose [encoder] made the embeddings (checked on a sample, then recorded; "
        "without it a retriever needs allow_mismatch = true)",
    )
    add_set_option(importer)
    add_write_options(importer, force="replace a knowledge base of other contents")
    importer.set_defaults(handler=cmd_import_hf)

    exporter = actions.add_parser(
        "export-hf", help="write a knowledge base for transformers' RagRetriever (custom)"
    )
    exporter.add_argument("kb")
    exporter.add_argument("--out", required=True, help="directory for passages/ and index.faiss")
    add_write_options(exporter)
    exporter.set_defaults(handler=cmd_export_hf)

    package = actions.add_parser(
        "package",
        help="build a packaged corpus into the prebuilt archive the package ships (maintainers)",
    )
    package.add_argument("name", help="the packaged corpus: wikipedia")
    package.add_argument(
        "--spec", help="spec whose [encoder] encodes it (default: the embedded default's)"
    )
    package.add_argument(
        "--out", help="folder for the archive and its record (default: the package's own)"
    )
    package.set_defaults(handler=cmd_package)
