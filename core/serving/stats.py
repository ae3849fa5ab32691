"""What ``GET /metrics`` reports: requests, batch sizes, latency percentiles, the queue.

Updated from the event loop (requests) and the model thread (batches), so every change holds a
lock. Latencies are kept for the last :data:`WINDOW` requests of each endpoint.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict, deque
from typing import Any

WINDOW = 1000
"""Latencies kept per endpoint for the percentiles."""


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (not empty) at ``fraction`` (0 to 1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class Stats:
    """Counters of one server's life."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._statuses: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self._latencies: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=WINDOW))
        self._batch_questions: Counter[int] = Counter()
        self._batch_seconds = 0.0
        self._in_flight = 0
        self._for_the_model = 0

    def started(self, for_the_model: bool) -> None:
        """A request came in; ``for_the_model``: one that the model will answer."""
        with self._lock:
            self._in_flight += 1
            self._for_the_model += for_the_model

    def finished(self, endpoint: str, status: int, seconds: float, for_the_model: bool) -> None:
        """A request to ``endpoint`` (``"POST /v1/answer"``) ended with ``status``, ``seconds``
        after its arrival (its last byte sent)."""
        with self._lock:
            self._in_flight -= 1
            self._for_the_model -= for_the_model
            self._statuses[endpoint][status] += 1
            self._latencies[endpoint].append(seconds)

    def for_the_model(self) -> int:
        """Requests in flight that the model answers, from their arrival (before their body is
        read) to their last byte."""
        with self._lock:
            return self._for_the_model

    def batch(self, questions: int, seconds: float) -> None:
        """One pipeline call over ``questions`` questions took ``seconds``."""
        with self._lock:
            self._batch_questions[questions] += 1
            self._batch_seconds += seconds

    def seconds_per_question(self) -> float:
        """The mean model time per question so far (1 s before the first batch)."""
        with self._lock:
            questions = sum(size * count for size, count in self._batch_questions.items())
            return self._batch_seconds / questions if questions else 1.0

    def report(self, queue: dict[str, int]) -> dict[str, Any]:
        """The JSON ``/metrics`` returns; ``queue`` is the worker's view of its queue."""
        with self._lock:
            calls = sum(self._batch_questions.values())
            questions = sum(size * count for size, count in self._batch_questions.items())
            return {
                "uptime_s": round(time.monotonic() - self._started, 3),
                "requests": {
                    "total": sum(sum(c.values()) for c in self._statuses.values()),
                    "in_flight": self._in_flight,
                    "by_endpoint": {
                        endpoint: {str(status): n for status, n in sorted(counts.items())}
                        for endpoint, counts in sorted(self._statuses.items())
                    },
                },
                "batches": {
                    "calls": calls,
                    "questions": questions,
                    "mean_size": round(questions / calls, 3) if calls else 0.0,
                    "sizes": {str(size): n for size, n in sorted(self._batch_questions.items())},
                    "model_seconds": round(self._batch_seconds, 3),
                },
                "latency_ms": {
                    endpoint: {
                        "count": len(window),
                        **{
                            name: round(1000 * percentile(list(window), fraction), 2)
                            for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
                        },
                    }
                    for endpoint, window in sorted(self._latencies.items())
                    if window
                },
                "queue": queue,
            }
