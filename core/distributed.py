"""Joining a Ray cluster: the one place ragloom calls ``ray.init``.

``address``: ``"local"`` starts a Ray instance inside this process (``num_cpus`` caps it);
``"auto"`` joins the cluster this machine belongs to (``ray start``); ``"ray://HOST:10001"`` a
remote one. A process that already called ``ray.init`` keeps its instance.
"""

from __future__ import annotations

import logging


def connect(address: str, num_cpus: int | None = None) -> None:
    """Join (or start) the Ray instance ``address`` names, once per process."""
    import ray

    if ray.is_initialized():
        return
    if address == "local":
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    else:
        ray.init(address=address, logging_level=logging.WARNING)
