"""The installed ragloom's version, the one place it is looked up."""

from __future__ import annotations

import importlib.metadata


def ragloom_version() -> str:
    """The version of the installed distribution, ``"unknown"`` when it is not installed."""
    try:
        return importlib.metadata.version("ragloom")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
