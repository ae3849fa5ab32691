"""Serving throughput: ``ragloom serve`` on loopback with batching on and off, at 1, 8 and 32
concurrent clients.

For each mode (on: ``--max-batch 16 --max-wait-ms 20``, the default batch; off:
``--max-batch 1``) a server is started on 127.0.0.1 (a free port) over the spec, by default the
embedded one (examples/wikipedia.toml: all-MiniLM-L6-v2 retrieval, SmolLM2-135M-Instruct
answers), and asked once to warm up. Then at each level, C client threads share a fixed number
of requests (``POST /v1/chat/completions``, one question of data/wikipedia_qa.jsonl each, not
streamed), each client sending its next request when the last is answered. Printed per level:
requests per second, p50 and p90 latency, the mean batch size the server reported, and the
throughput of batching on over off; and whether every answer was the same in both modes.

Bounded: a fixed number of requests per level, a per-request timeout and an overall deadline;
nothing but 127.0.0.1 is contacted.

    python benchmarks/serve.py [--spec examples/wikipedia.toml | --tiny] [--levels 1,8,32]
                               [--requests 8,32,64] [--deadline 1800]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from ragloom.commands.common import table_lines

REPO = Path(__file__).resolve().parent.parent
MODES = {"on": ["--max-batch", "16", "--max-wait-ms", "20"], "off": ["--max-batch", "1"]}
REQUEST_TIMEOUT = 600.0


class Server:
    """A ``ragloom serve`` subprocess on 127.0.0.1, stopped with SIGTERM."""

    def __init__(self, spec: Path, options: list[str], log: Path) -> None:
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "ragloom.cli", "serve", str(spec), "--port", "0"),
                    *("--timeout", str(REQUEST_TIMEOUT), "--queue-size", "256", *options),
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        assert self.process.stdout is not None
        for line in self.process.stdout:  # ends when the process does
            found = re.search(r" on (http://127\.0\.0\.1:\d+) ", line)
            if found:
                self.url = found.group(1)
                threading.Thread(target=self.process.stdout.read, daemon=True).start()
                return
        raise SystemExit(f"ragloom serve did not start: see {log}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)


def tiny_spec(root: Path) -> Path:
    """The tests' tiny random pipeline (64-wide BART, 3 passages of a 120-passage KB, 16
    tokens), where the model's time per call is small and fixed costs weigh."""
    import faiss

    from ragloom import Pipeline
    from ragloom.kb.hf import import_hf
    from ragloom.testing.tiny_models import Size, rag_checkpoint, rag_spec, recipe_knowledge_base

    checkpoint, _, context = rag_checkpoint(root, seed=1, size=Size(generator_hidden=64))
    passages, index = recipe_knowledge_base(root, context, faiss.IndexFlatIP(32))
    path = root / "tiny.toml"
    path.write_text(rag_spec(checkpoint, context, root / "kb", n_docs=3, max_length=16))
    import_hf(passages, root / "kb", index, Pipeline.from_spec(path).encoder, "dpr")
    return path


def ask(client: httpx.Client, url: str, model: str, question: str) -> tuple[str, float]:
    """One chat completion: the answer and the seconds it took."""
    began = time.perf_counter()
    response = client.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": question}]},
        timeout=REQUEST_TIMEOUT,
    )
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"], time.perf_counter() - began


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True)
class Level:
    """What one level measured."""

    answers: list[str]
    rps: float
    p50: float
    p90: float
    batch: float  # mean questions per pipeline call


def level(url: str, model: str, questions: list[str], clients: int, deadline: float) -> Level:
    """``len(questions)`` requests shared by ``clients`` threads, one at a time each."""
    pending = iter(enumerate(questions))
    lock = threading.Lock()
    answers: dict[int, str] = {}
    latencies: list[float] = []

    def client() -> None:
        with httpx.Client() as http:
            while time.monotonic() < deadline:
                with lock:
                    number, question = next(pending, (-1, ""))
                if number < 0:
                    return
                text, seconds = ask(http, url, model, question)
                with lock:
                    answers[number] = text
                    latencies.append(seconds)

    before = httpx.get(f"{url}/metrics", timeout=30).json()["batches"]
    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    elapsed = time.perf_counter() - began
    if len(answers) < len(questions):
        raise SystemExit(f"the deadline passed at {clients} clients: raise --deadline")
    after = httpx.get(f"{url}/metrics", timeout=30).json()["batches"]
    calls = after["calls"] - before["calls"]
    return Level(
        [answers[n] for n in range(len(questions))],
        len(questions) / elapsed,
        percentile(latencies, 0.5),
        percentile(latencies, 0.9),
        (after["questions"] - before["questions"]) / calls if calls else 0.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(REPO / "examples" / "wikipedia.toml"))
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny pipeline instead")
    parser.add_argument("--levels", default="1,8,32", help="concurrent clients per level")
    parser.add_argument("--requests", default="8,32,64", help="requests per level")
    parser.add_argument("--deadline", type=float, default=1800.0, help="seconds for everything")
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]
    counts = [int(n) for n in args.requests.split(",")]
    if len(counts) != len(levels):
        raise SystemExit("--requests needs one count per level")
    with (REPO / "data" / "wikipedia_qa.jsonl").open(encoding="utf-8") as lines:
        pool = [json.loads(line)["question"] for line in lines]
    deadline = time.monotonic() + args.deadline
    results: dict[str, dict[int, Level]] = {}
    with tempfile.TemporaryDirectory(prefix="ragloom-serve-bench-") as scratch:
        spec = tiny_spec(Path(scratch)) if args.tiny else Path(args.spec)
        model = spec.stem  # the name ragloom serve gives the spec's pipeline
        for mode, options in MODES.items():
            server = Server(spec, options, Path(scratch) / f"{mode}.log")
            try:
                with httpx.Client() as http:
                    ask(http, server.url, model, pool[-1])  # the first call's one-time costs
                results[mode] = {}
                start = 0
                for clients, count in zip(levels, counts, strict=True):
                    questions = [pool[(start + i) % len(pool)] for i in range(count)]
                    start += count
                    measured = level(server.url, model, questions, clients, deadline)
                    results[mode][clients] = measured
                    print(
                        f"batching {mode}, {clients} clients: {measured.rps:.2f} req/s", flush=True
                    )
            finally:
                server.stop()
    rows = [("clients", "requests", "batching", "req/s", "p50 s", "p90 s", "mean batch", "on/off")]
    for clients, count in zip(levels, counts, strict=True):
        on, off = results["on"][clients], results["off"][clients]
        for mode, shown in (("on", on), ("off", off)):
            ratio = f"{on.rps / off.rps:.2f}x" if mode == "on" else ""
            rows.append(
                (
                    clients,
                    count,
                    mode,
                    f"{shown.rps:.2f}",
                    f"{shown.p50:.2f}",
                    f"{shown.p90:.2f}",
                    f"{shown.batch:.1f}",
                    ratio,
                )
            )
    print("\n".join(table_lines(rows)))
    same = sum(
        a == b
        for clients in levels
        for a, b in zip(
            results["on"][clients].answers, results["off"][clients].answers, strict=True
        )
    )
    print(f"answers the same with batching on and off: {same} of {sum(counts)}")


if __name__ == "__main__":
    main()
