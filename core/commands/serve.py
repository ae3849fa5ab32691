"""``ragloom serve SPEC``: the spec's pipeline behind an HTTP API (docs/serving.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import MissingExtraError
from ..serving.settings import ServerSettings
from .common import add_set_option, spec_from_args

SERVER_PACKAGES = ("fastapi", "starlette", "uvicorn")

OPTIONS = {
    "host": ("--host", str),
    "port": ("--port", int),
    "max_batch": ("--max-batch", int),
    "max_wait_ms": ("--max-wait-ms", float),
    "queue_size": ("--queue-size", int),
    "timeout": ("--timeout", float),
    "max_questions": ("--max-questions", int),
    "max_question_chars": ("--max-question-chars", int),
    "max_k": ("--max-k", int),
    "max_length": ("--max-length", int),
    "max_beams": ("--max-beams", int),
}
"""Each :class:`ServerSettings` field's option and the type argparse reads it as."""


def cmd_serve(args: argparse.Namespace) -> int:
    settings = ServerSettings.from_options({field: getattr(args, field) for field in OPTIONS})
    spec = spec_from_args(args.spec, args.set)
    try:
        from ..serving.server import serve
    except ImportError as error:
        if error.name not in SERVER_PACKAGES:
            raise
        raise MissingExtraError(
            f"ragloom serve needs FastAPI and uvicorn, and {error.name} is not installed: "
            f"pip install 'ragloom[serve]'."
        ) from None
    from ..pipeline import Pipeline

    return serve(Pipeline.from_spec(spec), settings, Path(args.spec).stem)


def add_to(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="answer questions over HTTP: an OpenAI-compatible API, batched, with a page to ask",
    )
    serve.add_argument("spec", help="path to a TOML spec")
    fields = ServerSettings.model_fields
    for field, (option, kind) in OPTIONS.items():
        serve.add_argument(
            option,
            type=kind,
            default=None,
            help=f"{fields[field].description} (default {fields[field].default})",
        )
    add_set_option(serve)
    serve.set_defaults(handler=cmd_serve)
