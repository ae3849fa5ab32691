"""``--verbose``, which every ``ragloom`` command takes: without it the libraries that load
models and datasets print no progress bars ("Loading weights", "Writing model shards", "Saving
the dataset"), which say nothing about the run; ragloom's own progress (eval, kb build) stays."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

QUIET_LIBRARIES = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}
"""The environment that turns off the progress bars of transformers and huggingface_hub (both
read the first) and datasets; each library reads it when first imported."""

DEBUG_LIBRARIES = ("bm25s",)
"""Libraries that set their own logger's level to DEBUG when imported ("Building index from
IDs")."""


def informative(record: logging.LogRecord) -> bool:
    """A logging filter: INFO and above pass."""
    return record.levelno >= logging.INFO


VERBOSE_HELP = (
    "show the progress bars of transformers, huggingface_hub and datasets (hidden by default) "
    "and ragloom's debug messages, such as the traceback of an operating-system error"
)


class RagloomParser(argparse.ArgumentParser):
    """An argument parser that takes ``--verbose``, as does every parser made from it by
    ``add_subparsers`` (argparse makes subparsers of the parent's class): ``ragloom --verbose
    ask ...`` and ``ragloom ask ... --verbose`` mean the same."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # a subparser leaves the value alone unless given: the top-level default stands
        self.add_argument(
            "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
        )


def set_verbosity(verbose: bool) -> None:
    """Before any model library is imported: their progress bars off unless ``verbose``
    (a variable set in the environment already is left as it is); with ``verbose``, ragloom's
    debug messages on. Without it the libraries that set their logger to DEBUG
    (:data:`DEBUG_LIBRARIES`) print nothing below INFO."""
    if verbose:
        logging.getLogger("ragloom").setLevel(logging.DEBUG)
        return
    for name in DEBUG_LIBRARIES:
        library = logging.getLogger(name)
        if informative not in library.filters:
            library.addFilter(informative)
    for name, value in QUIET_LIBRARIES.items():
        os.environ.setdefault(name, value)
