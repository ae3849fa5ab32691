"""Side-by-side measurement of index types over one knowledge base (``ragloom index compare``).

Recall@k is measured against exact search over the stored embeddings, for query vectors that
are, by default, midpoints of random pairs of stored vectors (in the corpus' distribution, never
a stored vector itself); ``--queries`` gives vectors and ``--data`` questions to encode.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import atomic
from ..context import Declared
from ..errors import RagloomError
from .knowledge_base import KnowledgeBase
from .manifest import IndexManifest

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

    from ..protocols import Index


class QueryFileError(RagloomError):
    """A ``--queries`` file that is not a float array of query vectors of the KB's dim."""


@dataclass(frozen=True)
class Measurement:
    """One index type's numbers: recall@k against exact search, speed, size; ``name`` is its
    directory in the KB (every build parameter), ``label`` its legend name."""

    name: str
    label: str
    recall: float
    qps_batch1: float
    qps_batch64: float
    build_seconds: float
    bytes_per_vector: float
    memory_bytes: int


MARKERS = "osD^vPX*h<>p"
"""One marker per index, so that the panels read in grey scale too."""
FRONT_COLOUR = "0.45"

UNPLOTTED_PARAMS = frozenset({"seed", "train_size", "threads", "ef_construction"})
"""Parameters left out of legend names: sampling, threads and build effort, which do not tell
one plotted index from another (``--param`` gives every type that has one the same value)."""


def short_name(declared: Declared) -> str:
    """The index type and its telling parameters (a faiss factory as it is): e.g.
    ``faiss-compressed IVF124,PQ96x6np nprobe=64``, ``hnsw M=32 ef=128``."""
    params = declared.params.model_dump(mode="json")
    parts = [
        str(value) if key == "factory" else f"{key}={value}"
        for key, value in params.items()
        if key not in UNPLOTTED_PARAMS
    ]
    return " ".join([declared.type, *parts])


def default_queries(kb: KnowledgeBase, count: int = 1000, seed: int = 0) -> np.ndarray:
    """Midpoints of ``count`` random pairs of two different stored vectors (drawn with
    replacement, seeded): in-distribution queries that are not themselves stored (a stored
    vector would trivially find itself)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(kb), size=count)
    second = (first + rng.integers(1, max(len(kb), 2), size=count)) % len(kb)
    midpoints = (kb.vectors(first) + kb.vectors(second)) / 2
    return np.ascontiguousarray(midpoints, dtype=np.float32)


NPY_MAGIC = b"\x93NUMPY"
NPZ_MAGIC = b"PK\x03\x04"
"""How a ``.npy`` file and an ``.npz`` archive (a zip) begin."""


def load_queries(path: Path, dim: int) -> np.ndarray:
    """The ``float32 [n, dim]`` query vectors saved in the ``.npy`` file at ``path``; anything
    else (a pickle, another shape or dim, no rows) raises :class:`QueryFileError`."""
    import numpy as np

    expected = f"Save a float array of shape [n, {dim}] with numpy.save (allow_pickle=False)."
    try:
        with path.open("rb") as file:
            start = file.read(len(NPY_MAGIC))
    except OSError as error:
        raise QueryFileError(f"--queries {path}: cannot be read ({error.strerror}).") from None
    if not start:
        raise QueryFileError(f"--queries {path}: is empty (0 bytes), not a .npy array. {expected}")
    if start != NPY_MAGIC and not start.startswith(NPZ_MAGIC):
        raise QueryFileError(
            f"--queries {path}: is not a .npy array file (it does not start with numpy's "
            f".npy header). {expected}"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        why = "it holds pickled Python objects" if "allow_pickle" in str(error) else str(error)
        raise QueryFileError(
            f"--queries {path}: cannot be read as a numpy .npy array ({why}). {expected}"
        ) from None
    except (OSError, EOFError) as error:
        raise QueryFileError(
            f"--queries {path}: cannot be read as a numpy .npy array (truncated or damaged: "
            f"{error or type(error).__name__}). {expected}"
        ) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        kind = "an .npz archive" if not isinstance(array, np.ndarray) else f"{array.dtype} values"
        raise QueryFileError(f"--queries {path}: holds {kind}, not numbers. {expected}")
    if array.ndim != 2 or array.shape[1] != dim or len(array) == 0:
        raise QueryFileError(
            f"--queries {path}: holds an array of shape {list(array.shape)}, and the knowledge "
            f"base's vectors have dim {dim}. {expected}"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def exact_neighbours(kb: KnowledgeBase, queries: np.ndarray, k: int) -> np.ndarray:
    """The true top-``k`` scores by inner product over the stored embeddings (chunked)."""
    import numpy as np

    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), 0), np.int64)
    chunk = 65_536
    for start in range(0, len(kb), chunk):
        block = np.asarray(kb.embeddings[start : start + chunk], dtype=np.float32)
        scores = queries @ block.T
        ids = np.broadcast_to(np.arange(start, start + len(block)), scores.shape)
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_ids = np.concatenate([best_ids, ids], axis=1)
        keep = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, keep, axis=1)
        best_ids = np.take_along_axis(merged_ids, keep, axis=1)
    return best_scores


def _queries_per_second(index: Index, queries: np.ndarray, k: int, batch: int) -> float:
    count = min(len(queries), 200) if batch == 1 else len(queries)
    index.search(queries[:batch], k)  # warm up
    started = time.perf_counter()
    for start in range(0, count, batch):
        index.search(queries[start : min(start + batch, count)], k)
    return count / (time.perf_counter() - started)


def recall_at_k(
    kb: KnowledgeBase, queries: np.ndarray, found: np.ndarray, truth: np.ndarray
) -> float:
    """Share of the returned ids that belong in the exact top k: an id counts when its exact
    score reaches the k-th best exact score, so ties between equal vectors are not misses."""
    import numpy as np

    scores = np.einsum("qd,qkd->qk", queries, kb.vectors(found))
    hits = (found >= 0) & (scores >= truth[:, -1:] - 1e-5)
    return float(hits.sum() / found.size)


def measure(
    kb: KnowledgeBase,
    declared: Declared,
    queries: np.ndarray,
    truth: np.ndarray,
    k: int,
) -> Measurement:
    """Load (building on first use) one index and measure it; ``truth`` holds the exact
    top-``k`` scores of each query (``exact_neighbours``)."""
    index = kb.load_index(declared)
    path = kb.index_path(declared)
    manifest = IndexManifest.read(path, "ragloom index")
    _, found = index.search(queries, k)
    recall = recall_at_k(kb, queries, found, truth)
    memory = index.memory_bytes()
    return Measurement(
        name=path.name,
        label=short_name(kb.sized(declared)),
        recall=recall,
        qps_batch1=_queries_per_second(index, queries, k, 1),
        qps_batch64=_queries_per_second(index, queries, k, 64),
        build_seconds=manifest.build_seconds,
        bytes_per_vector=memory / max(len(kb), 1),
        memory_bytes=memory,
    )


def pareto_front(points: Sequence[tuple[float, float]], larger_x_is_better: bool) -> list[int]:
    """The indexes of the points no other point beats in both ``x`` and recall (``y``, larger
    is better), in order of ``x``."""
    sign = 1.0 if larger_x_is_better else -1.0
    front = [
        i
        for i, (x, y) in enumerate(points)
        if not any(
            sign * other_x >= sign * x and other_y >= y and (other_x, other_y) != (x, y)
            for other_x, other_y in points
        )
    ]
    return sorted(front, key=lambda i: points[i][0])


def front_outline(
    points: Sequence[tuple[float, float]],
    larger_x_is_better: bool,
    x_limits: tuple[float, float],
    lowest_y: float,
) -> tuple[list[float], list[float]]:
    """The staircase that bounds what the Pareto ``points`` (in order of ``x``) dominate, out to
    the axes: to the lower left of them when a larger ``x`` is better, else to the lower right."""
    xs, ys = [point[0] for point in points], [point[1] for point in points]
    if larger_x_is_better:
        outline_x, outline_y = [x_limits[0]], [ys[0]]
        for i, x in enumerate(xs):
            outline_x += [x, x]
            outline_y += [ys[i], ys[i + 1] if i + 1 < len(ys) else lowest_y]
        return outline_x, outline_y
    outline_x, outline_y = [xs[0]], [lowest_y]
    for i, y in enumerate(ys):
        outline_x += [xs[i], xs[i + 1] if i + 1 < len(xs) else x_limits[1]]
        outline_y += [y, y]
    return outline_x, outline_y


def _panel(
    axes: Any, points: list[tuple[float, float]], larger_x_is_better: bool, label: str
) -> None:
    """One panel: a marker per index (its colour and shape by position), a log ``x`` axis, and
    which way is better."""
    for number, (x, y) in enumerate(points):
        axes.scatter(x, y, zorder=3, clip_on=False, s=70, **_style(number))
    axes.set_xscale("log")
    axes.margins(x=0.15, y=0.1)
    axes.set_xlabel(f"{label} (better →)" if larger_x_is_better else f"(← better) {label}")
    axes.grid(True, which="both", alpha=0.25)


def _label_log_axis(axes: Any) -> None:
    """Short labels (``200``, ``2k``) on the log ``x`` axis: at 1, 2 and 5 times each power of
    ten over two decades or less, at the powers alone over more, so that none overlap."""
    import math

    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    low, high = axes.get_xlim()
    subs = (1.0, 2.0, 5.0) if math.log10(high / low) <= 2 else (1.0,)
    axes.xaxis.set_major_locator(LogLocator(subs=subs))
    axes.xaxis.set_major_formatter(EngFormatter(sep=""))
    axes.xaxis.set_minor_formatter(NullFormatter())


def _draw_front(axes: Any, points: list[tuple[float, float]], larger_x_is_better: bool) -> None:
    """The panel's Pareto front as a dashed staircase to the axes' edges (limits kept)."""
    x_limits, y_limits = axes.get_xlim(), axes.get_ylim()
    front = [points[i] for i in pareto_front(points, larger_x_is_better)]
    outline = front_outline(front, larger_x_is_better, x_limits, y_limits[0])
    axes.plot(*outline, linestyle="--", color=FRONT_COLOUR, zorder=2)
    axes.set_xlim(x_limits)
    axes.set_ylim(y_limits)


def _style(number: int) -> dict[str, Any]:
    """Marker, fill and edge of the ``number``-th index, the same in both panels."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"]
    return {
        "marker": MARKERS[number % len(MARKERS)],
        "color": colours(number % colours.N),
        "edgecolors": "black",
        "linewidths": 0.6,
    }


def comparison_figure(measurements: list[Measurement], k: int, title: str) -> Figure:
    """Two panels, recall@k against queries per second (batch 64) and against memory per
    vector, both on log scales, one marker per index named in a shared legend, each panel's
    Pareto front dashed; constrained layout keeps every label inside the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    figure, (speed, size) = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True, layout="constrained")
    recalls = [m.recall for m in measurements]
    panels = (
        (speed, [m.qps_batch64 for m in measurements], True, "queries per second, batch 64"),
        (size, [m.bytes_per_vector for m in measurements], False, "memory per vector, bytes"),
    )
    for axes, xs, larger_x_is_better, label in panels:
        _panel(axes, list(zip(xs, recalls, strict=True)), larger_x_is_better, label)
    for axes, xs, larger_x_is_better, _ in panels:  # after both: the y axis is shared
        _draw_front(axes, list(zip(xs, recalls, strict=True)), larger_x_is_better)
        _label_log_axis(axes)
    speed.set_ylabel(f"recall@{k} against exact search")
    handles = [
        Line2D([], [], linestyle="", markersize=8, label=m.label, **_marker_style(number))
        for number, m in enumerate(measurements)
    ]
    handles.append(Line2D([], [], linestyle="--", color=FRONT_COLOUR, label="Pareto front"))
    figure.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    figure.suptitle(title, fontsize=10)
    return figure


def plot(measurements: list[Measurement], k: int, title: str, path: Path) -> None:
    """:func:`comparison_figure` written to ``path`` as a PNG (atomically)."""
    import matplotlib.pyplot as plt

    figure = comparison_figure(measurements, k, title)
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=150)
    plt.close(figure)
    atomic.write_bytes(path, image.getvalue())


def _marker_style(number: int) -> dict[str, Any]:
    """:func:`_style` in the keywords of a legend's ``Line2D``."""
    style = _style(number)
    return {
        "marker": style["marker"],
        "color": style["color"],
        "markeredgecolor": style["edgecolors"],
        "markeredgewidth": style["linewidths"],
    }
