"""What verification costs: checking sizes when a KB opens, checksums before an index loads, and
``kb info --verify``, measured side by side with loading the same files, then scaled by bytes to
1M and 21M passages (docs/reliability.md).

A random KB of ``--count`` 768-d float32 vectors and its faiss-exact index are written to a
temporary directory. Each step is timed with the files in the page cache (the usual case right
after a build) and, where this process may drop the cache (root on Linux), read cold from disk.
Checksumming reads every byte once, so its cost scales with the bytes of an artifact; the table
uses the measured rate on the artifact sizes of 1M and 21M passages (100-word passages: about
600 bytes of text each; the index sizes of docs/scale.md).

    python benchmarks/verify.py [--count 200000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ragloom.commands.common import table_lines
from ragloom.commands.index import declared_index
from ragloom.kb import KnowledgeBase
from ragloom.kb.knowledge_base import INDEX_SUBDIR
from ragloom.kb.manifest import IndexManifest, file_problems
from ragloom.testing.random_kb import random_knowledge_base

DIM = 768
SIZES = {"1M": 1_000_000, "21M": 21_015_324}
TEXT_BYTES = 600  # a 100-word passage with its title, in the Arrow file
INDEX_BYTES = {  # bytes per vector of each index type at DIM 768 (docs/scale.md)
    "faiss-exact": DIM * 4 + 8,
    "faiss-compressed (IVF-PQ128)": 128 + 8 + 8,
    "faiss-hnsw-sq8": DIM + 32 * 2 * 4 + 8,
    "hnsw (M 32)": DIM * 4 + 32 * 2 * 4 + 16,
}


def drop_caches() -> bool:
    """Empty the page cache (root on Linux only); False where this process may not."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "kb"
        kb = random_knowledge_base(out, args.count, DIM)
        declared = declared_index("faiss-exact", [])
        kb.build_index(declared, progress=False)
        index_dir = kb.index_path(declared)
        manifest = IndexManifest.read(index_dir, "ragloom index")
        kb_bytes = sum(record.size for record in (kb.manifest.files or {}).values())
        index_bytes = sum(record.size for record in (manifest.files or {}).values())
        steps = {
            "open KB (sizes)": (lambda: KnowledgeBase.open(out), 0),
            "verify KB (checksums)": (
                lambda: file_problems(out, kb.manifest.files or {}, checksums=True),
                kb_bytes,
            ),
            "verify index (checksums)": (
                lambda: file_problems(index_dir, manifest.files or {}, checksums=True),
                index_bytes,
            ),
            "load index (faiss)": (
                lambda: declared.component.load(index_dir / INDEX_SUBDIR),
                index_bytes,
            ),
        }
        header = ("STEP", "BYTES", "WARM s", "WARM GiB/s", "COLD s", "COLD GiB/s")
        rows: list[tuple[object, ...]] = [header]
        seconds: dict[str, tuple[float, float]] = {}
        for name, (step, size) in steps.items():
            step()
            warm = min(timed(step) for _ in range(3))
            cold = timed(step) if drop_caches() else float("nan")
            seconds[name] = (warm, cold)
            rates = [f"{size / t / 2**30:.2f}" if size else "-" for t in (warm, cold)]
            rows.append((name, size, f"{warm:.3f}", rates[0], f"{cold:.3f}", rates[1]))
        print(f"{args.count} vectors of dim {DIM}, faiss-exact index; {os.cpu_count()} CPUs")
        print("\n".join(table_lines(rows)))
        verify, load = seconds["verify index (checksums)"], seconds["load index (faiss)"]
        print(
            f"\nverifying an index before loading it adds {verify[0] / load[0]:.0%} to the load "
            f"with the files cached, {verify[1] / load[1]:.0%} read from disk"
        )
        warm_rate, cold_rate = (index_bytes / t for t in verify)
        scaled: list[tuple[object, ...]] = [
            ("ARTIFACT", *(f"{name}: GiB, warm s, cold s" for name in SIZES))
        ]
        per_vector = {"KB (passages + embeddings)": TEXT_BYTES + DIM * 4, **INDEX_BYTES}
        for name, size in per_vector.items():
            cells = []
            for count in SIZES.values():
                total = count * size
                cells.append(
                    f"{total / 2**30:.1f}, {total / warm_rate:.1f}, {total / cold_rate:.0f}"
                )
            scaled.append((name, *cells))
        print("\n".join(table_lines(scaled)))
        subprocess.run(["du", "-sh", str(out)], check=False)


if __name__ == "__main__":
    main()
