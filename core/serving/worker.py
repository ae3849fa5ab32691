"""The model worker: the one thread that runs the pipeline, batching what comes in meanwhile.

Requests wait in one bounded queue. The thread takes the oldest; an answer or retrieval waits up
to ``max_wait_ms`` (from its arrival; not at all when no other request is on its way) for others
with the same settings, which join it in one ``Pipeline.generate`` or ``Pipeline.retrieve`` call
of at most ``max_batch`` questions (a request is never split; a larger one runs alone). Streams
(``Pipeline.stream``) are decoded a piece at a time, every running stream one piece per round,
with batches in between, so a long answer delays nobody; at most ``max_batch`` run at once, the
others wait in the queue.

The event loop never touches the pipeline: it gets a :class:`concurrent.futures.Future` per
request, or a stream's events through a callback it makes thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import RagloomError
from ..pipeline import AnswerStream, Pipeline
from ..spec.threads import use_threads
from .stats import Stats

log = logging.getLogger("ragloom.serve")

Kind = Literal["answer", "retrieve"]


class QueueFull(Exception):
    """The queue holds ``queue_size`` requests already; ``retry_after`` estimates, in whole
    seconds, when it has room again."""

    def __init__(self, size: int, retry_after: int) -> None:
        super().__init__(f"{size} requests are waiting for the model already")
        self.size = size
        self.retry_after = retry_after


@dataclass
class Job:
    """An answer or retrieval request: ``questions`` for one ``generate(**arguments)`` or
    ``retrieve(**arguments)`` call, shared with the jobs of the same ``kind`` and ``key``."""

    kind: Kind
    key: str
    questions: list[str]
    arguments: dict[str, Any]
    future: Future[list[Any]] = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


Event = tuple[str, Any]
"""What a stream tells its reader: ``("passages", list[Passage])`` first, then
``("piece", str)`` for each piece, then ``("answer", Answer)``; or ``("error", exception)``."""


@dataclass
class StreamJob:
    """A streamed answer to one question; ``deliver`` receives its events in the model thread.
    Setting ``cancelled`` (the reader went away) stops it at its next piece."""

    question: str
    arguments: dict[str, Any]
    deliver: Callable[[Event], None]
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class Running:
    """A started stream, its iterator of pieces and the model time it took so far."""

    job: StreamJob
    stream: AnswerStream
    pieces: Iterator[str]
    seconds: float


class ModelWorker:
    """Runs every pipeline call of one server in one thread (start with :meth:`start`)."""

    def __init__(
        self,
        pipeline: Pipeline,
        max_batch: int,
        max_wait_ms: float,
        queue_size: int,
        stats: Stats,
        arriving: Callable[[], int] | None = None,
    ) -> None:
        """``arriving``: how many requests for the model the server holds, those still being
        read included; a batch does not wait when all of them are in the queue already (None:
        unknown, it always waits)."""
        self.pipeline = pipeline
        self.arriving = arriving
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue_size = queue_size
        self.stats = stats
        self._ready = threading.Condition()
        self._waiting: deque[Job | StreamJob] = deque()
        self._running: list[Running] = []
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="ragloom-model", daemon=True)

    # --- the event loop's side --------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, kind: Kind, key: str, questions: list[str], **arguments: Any) -> Job:
        """Queue a request; its ``future`` gets one result per question (answers, or lists of
        passages). Raises :class:`QueueFull` when the queue is full."""
        job = Job(kind, key, questions, arguments)
        self._enqueue(job)
        return job

    def open_stream(
        self, question: str, arguments: dict[str, Any], deliver: Callable[[Event], None]
    ) -> StreamJob:
        """Queue a streamed answer; raises :class:`QueueFull` when the queue is full."""
        job = StreamJob(question, arguments, deliver)
        self._enqueue(job)
        return job

    def queue(self) -> dict[str, int]:
        """How many requests wait, how many may, and how many streams are being decoded."""
        with self._ready:
            return {
                "length": len(self._waiting),
                "capacity": self.queue_size,
                "streams": len(self._running),
            }

    def close(self) -> None:
        """Finish what is queued and running, then stop the thread. By the time a server
        closes, every request has been answered or abandoned (an abandoned one is skipped), so
        this waits for the pipeline call under way at most: torch cannot be stopped midway,
        and a process that exits under a running call aborts."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def _enqueue(self, job: Job | StreamJob) -> None:
        with self._ready:
            if self._closing:
                raise QueueFull(len(self._waiting), retry_after=1)
            if len(self._waiting) >= self.queue_size:
                questions = sum(
                    len(j.questions) if isinstance(j, Job) else 1 for j in self._waiting
                )
                wait = questions * self.stats.seconds_per_question()
                raise QueueFull(len(self._waiting), retry_after=max(1, round(wait)))
            self._waiting.append(job)
            self._ready.notify_all()

    # --- the model thread -------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        use_threads(torch.get_num_threads())  # faiss counts its threads per thread: as torch's
        # Streams are generators that decode inside their own inference_mode block and are
        # resumed in turns, so their enters and exits interleave: each exit restores the mode
        # the previous enter saw. Under an outer inference_mode every one of them restores it on.
        with torch.inference_mode():
            self._serve()

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._waiting and not self._running and not self._closing:
                    self._ready.wait()
                if self._closing and not self._waiting and not self._running:
                    return
                batch = self._take_batch()
                starting = self._take_streams()
            if batch:
                self._run_batch(batch)
            for job in starting:
                self._start_stream(job)
            self._step_streams()

    def _take_batch(self) -> list[Job]:
        """The oldest request's batch, once it is full or its wait is over (holding the lock).
        While streams run, it does not wait: their next pieces come first."""
        while True:
            first = next((job for job in self._waiting if isinstance(job, Job)), None)
            if first is None:
                return []
            if first.future.cancelled():  # its reader gave up while it waited
                self._waiting.remove(first)
                continue
            mates = [job for job in self._waiting if isinstance(job, Job) and _mates(job, first)]
            left = first.arrived + self.max_wait - time.monotonic()
            full = sum(len(job.questions) for job in mates) >= self.max_batch
            if full or left <= 0 or self._closing or self._nobody_else():
                break
            if self._running:
                return []
            self._ready.wait(left)
        batch: list[Job] = []
        size = 0
        for job in mates:
            if batch and size + len(job.questions) > self.max_batch:
                break
            self._waiting.remove(job)
            if job.future.set_running_or_notify_cancel():
                batch.append(job)
                size += len(job.questions)
        return batch

    def _nobody_else(self) -> bool:
        """Whether every request the server holds is queued or running already, so that
        waiting would gather nothing (holding the lock)."""
        held = len(self._waiting) + len(self._running)
        return self.arriving is not None and self.arriving() <= held

    def _take_streams(self) -> list[StreamJob]:
        """Queued streams to start, while fewer than ``max_batch`` run (holding the lock)."""
        starting: list[StreamJob] = []
        for job in list(self._waiting):
            if len(self._running) + len(starting) >= self.max_batch:
                break
            if isinstance(job, StreamJob):
                self._waiting.remove(job)
                if not job.cancelled.is_set():
                    starting.append(job)
        return starting

    def _run_batch(self, batch: list[Job]) -> None:
        """One pipeline call for ``batch``; if it fails, each job again alone, so that one bad
        request fails by itself."""
        questions = [question for job in batch for question in job.questions]
        try:
            results = self._call(batch[0], questions)
        except Exception as error:
            if len(batch) > 1:
                for job in batch:
                    self._run_batch([job])
                return
            if not isinstance(error, RagloomError):
                log.exception("the pipeline failed on %d questions", len(questions))
            batch[0].future.set_exception(error)
            return
        start = 0
        for job in batch:
            job.future.set_result(results[start : start + len(job.questions)])
            start += len(job.questions)

    def _call(self, job: Job, questions: list[str]) -> list[Any]:
        began = time.monotonic()
        if job.kind == "answer":
            results: list[Any] = self.pipeline.generate(questions, **job.arguments)
        else:
            results = self.pipeline.retrieve(questions, **job.arguments).passages
        self.stats.batch(len(questions), time.monotonic() - began)
        return results

    def _start_stream(self, job: StreamJob) -> None:
        """Retrieve for a stream and tell its reader the passages."""
        began = time.monotonic()
        try:
            stream = self.pipeline.stream(job.question, **job.arguments)
        except Exception as error:
            self._fail(job, error)
            return
        job.deliver(("passages", stream.passages))
        self._running.append(Running(job, stream, iter(stream), time.monotonic() - began))

    def _step_streams(self) -> None:
        """One piece of every running stream; a stream that ends counts as a call of one
        question; abandoned ones are dropped (their decoding stops)."""
        for running in list(self._running):
            job = running.job
            if job.cancelled.is_set():
                self._running.remove(running)
                continue
            began = time.monotonic()
            try:
                piece = next(running.pieces)
            except StopIteration:
                self.stats.batch(1, running.seconds + time.monotonic() - began)
                job.deliver(("answer", running.stream.answer))
            except Exception as error:
                self._fail(job, error)
            else:
                running.seconds += time.monotonic() - began
                job.deliver(("piece", piece))
                continue
            self._running.remove(running)

    def _fail(self, job: StreamJob, error: Exception) -> None:
        if not isinstance(error, RagloomError):
            log.exception("the pipeline failed streaming a question")
        job.deliver(("error", error))


def _mates(job: Job, first: Job) -> bool:
    """Whether ``job`` may share ``first``'s pipeline call."""
    return job.kind == first.kind and job.key == first.key and not job.future.cancelled()
