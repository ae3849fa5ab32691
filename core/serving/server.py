"""The ``ragloom serve`` process: warm the pipeline up, bind the socket, run uvicorn, stop on
SIGTERM or Ctrl-C once the requests in flight are answered.

The models and the index load before the socket is bound, so the first request is not slow and
a client never connects to a server that cannot answer. Binding here (not in uvicorn) makes a
port in use a one-paragraph error and lets ``--port 0`` print the port the system chose.
"""

from __future__ import annotations

import errno
import math
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from ..errors import RagloomError
from ..pipeline import Pipeline
from .app import create_app
from .openai_chat import TokenLayout
from .settings import ServerSettings

GRACE_S = 5
"""Seconds beyond ``--timeout`` that stopping waits for requests in flight."""


class BindError(RagloomError):
    """The address or port given to ``ragloom serve`` cannot be listened on."""


def warm_up(pipeline: Pipeline) -> TokenLayout:
    """Build every component of the spec and search once, so that the index is loaded; returns
    where the generator's answers sit in its sequences (nothing else without a generator)."""
    for table in pipeline.spec.components:
        pipeline.component(table, "ragloom serve")
    if "retriever" in pipeline.spec.components:
        pipeline.retrieve(["warm-up"], 1)
    if "generator" in pipeline.spec.components:
        return TokenLayout.of(pipeline.generator)
    return TokenLayout()


BACKLOG = 2048
"""Connections the system holds before they are accepted (uvicorn's own default)."""


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port``: a client that connects once the address is
    printed waits in its backlog until uvicorn accepts, instead of being refused."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
    except socket.gaierror as error:
        raise BindError(
            f"--host {host}: not an address this machine can resolve ({error.strerror}); give an "
            f"IP address such as 127.0.0.1."
        ) from None
    sock = socket.socket(family, kind, protocol)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        advice = {
            errno.EADDRINUSE: "another program listens there: stop it, or choose another --port "
            "(--port 0 picks a free one)",
            errno.EADDRNOTAVAIL: "it is not an address of this machine: give one of its own, "
            "or 127.0.0.1",
            errno.EACCES: "ports below 1024 need administrator rights: choose a port above 1024",
        }.get(error.errno or 0, "choose another --host or --port")
        raise BindError(f"cannot listen on {host}:{port}: {error.strerror}; {advice}.") from None
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def stop_signals(server: uvicorn.Server) -> Iterator[list[int]]:
    """SIGINT and SIGTERM recorded instead of ending the process: uvicorn handles them while it
    runs (a graceful stop), then raises the signal it got again, which lands here. One that
    comes before uvicorn has its handlers (the address is printed first) tells ``server`` to
    stop as soon as it has started."""
    caught: list[int] = []
    handled = (signal.SIGINT, signal.SIGTERM)

    def stop(number: int, _: Any) -> None:
        caught.append(number)
        server.should_exit = True

    previous = {number: signal.signal(number, stop) for number in handled}
    try:
        yield caught
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def serve(pipeline: Pipeline, settings: ServerSettings, name: str) -> int:
    """Serve ``pipeline`` as model ``name`` until SIGTERM or Ctrl-C; returns the exit status."""
    print(f"ragloom serve: loading {name} ...", flush=True)
    layout = warm_up(pipeline)
    sock = bind(settings.host, settings.port)
    app = create_app(pipeline, settings, name, layout)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.timeout) + GRACE_S,
    )
    address = url(sock)
    if settings.loopback:
        reach = (
            "loopback only: no other machine can connect; --host 0.0.0.0 would serve every "
            "network, without authentication"
        )
    else:
        reach = "every machine that can reach this address can ask"
        print(
            f"warning: ragloom serve listens on {settings.host}, not on loopback, and has no "
            f"authentication: anyone who reaches {address} can use it. Put it behind a proxy that "
            f"checks who asks, or serve on --host 127.0.0.1.",
            file=sys.stderr,
            flush=True,
        )
    print(f"ragloom serve: {name} on {address} ({reach})", flush=True)
    print(f"  page {address}/  ·  OpenAI base_url {address}/v1  ·  Ctrl-C stops", flush=True)
    server = uvicorn.Server(config)
    with stop_signals(server) as caught:
        server.run(sockets=[sock])
    how = signal.Signals(caught[0]).name if caught else "shut down"
    print(f"ragloom serve: stopped ({how}) after answering the requests in flight.", flush=True)
    return 0
