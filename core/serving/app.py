"""The endpoints: OpenAI's chat completions and model list, ragloom's batched answer and
retrieve calls, health, metrics, and the page at ``/``.

Handlers check a request (400 before it waits for anything), hand it to the
:class:`ModelWorker` and await its future (or, for a stream, its events) for at most
``--timeout`` seconds: the event loop never runs the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import RagloomError
from ..pipeline import Pipeline
from ..protocols import Passage
from ..spec import GenerationSettings
from ..version import ragloom_version
from . import errors
from .errors import RequestTimeout, error_body
from .openai_chat import (
    TokenLayout,
    chat_overrides,
    chunk,
    completion,
    completion_id,
    question_of,
)
from .schemas import (
    AnswerRequest,
    BadRequest,
    ChatRequest,
    RetrieveRequest,
    check_questions,
    generation_settings,
    passage_json,
)
from .settings import ServerSettings
from .stats import Stats
from .worker import Event, Job, ModelWorker, StreamJob

MODEL_PATHS = frozenset({"/v1/chat/completions", "/v1/answer", "/v1/retrieve"})
"""The endpoints whose requests go to the model worker."""

MIN_BODY_BYTES = 1 << 20
"""Request bodies may hold at least 1 MiB (more when the question limits need it)."""


def body_limit(settings: ServerSettings) -> int:
    """The largest body accepted: room for the most questions at the most characters, each
    character escaped as JSON escapes it (6 bytes, e.g. ``\\u00e9``), and 64 KiB for the rest;
    at least 1 MiB."""
    return max(MIN_BODY_BYTES, 6 * settings.max_questions * settings.max_question_chars + 65536)


class Metered:
    """ASGI wrapper counting each request by endpoint and status, timed to its last byte."""

    def __init__(self, app: ASGIApp, stats: Stats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began, status = time.monotonic(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        for_the_model = scope["method"] == "POST" and scope["path"] in MODEL_PATHS
        self.stats.started(for_the_model)
        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None)
            if path is None:
                path = "/static" if scope["path"].startswith("/static/") else "other"
            endpoint = f"{scope['method']} {path}"
            self.stats.finished(endpoint, status, time.monotonic() - began, for_the_model)


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event carrying ``data`` (JSON, or the text ``[DONE]``)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n"


def create_app(
    pipeline: Pipeline, settings: ServerSettings, name: str, layout: TokenLayout
) -> ASGIApp:
    """The server of ``pipeline`` under the model name ``name``; ``layout`` tells how many of
    its generator's tokens are not answer (what ``max_tokens`` adds to). The FastAPI app is
    wrapped so that the metrics and the JSON errors see every response, the body limit's too."""
    stats = Stats()
    worker = ModelWorker(
        pipeline,
        settings.max_batch,
        settings.max_wait_ms,
        settings.queue_size,
        stats,
        arriving=stats.for_the_model,
    )
    spec = pipeline.spec

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        yield
        await asyncio.to_thread(worker.close)

    app = FastAPI(
        title=f"ragloom serve: {name}",
        version=ragloom_version(),
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN; /openapi.json stays
        redoc_url=None,
        max_body_size=body_limit(settings),
    )
    errors.install(app)
    app.mount("/static", StaticFiles(packages=[("ragloom", "static")]), name="static")

    async def answered(job: Job) -> list[Any]:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job.future), settings.timeout)
        except TimeoutError:
            raise RequestTimeout(settings.timeout) from None

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return (resources.files("ragloom") / "static" / "index.html").read_text(encoding="utf-8")

    @app.get("/healthz")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name, "queue": worker.queue()}

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return stats.report(worker.queue())

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": name, "object": "model", "created": 0, "owned_by": "ragloom"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/retrieve")
    async def retrieve(body: RetrieveRequest) -> dict[str, Any]:
        check_questions(body.questions, settings)
        k = spec.pipeline.n_docs if body.k is None else body.k
        if not 1 <= k <= settings.max_k:
            raise BadRequest(
                f"k = {k}: passages per question go from 1 to {settings.max_k} on this server "
                f"(ragloom serve --max-k).",
                param="k",
            )
        found = await answered(worker.submit("retrieve", str(k), body.questions, k=k))
        return {
            "model": name,
            "k": k,
            "results": [
                {"question": question, "passages": [passage_json(p) for p in passages]}
                for question, passages in zip(body.questions, found, strict=True)
            ],
        }

    @app.post("/v1/answer")
    async def answer(body: AnswerRequest) -> dict[str, Any]:
        check_questions(body.questions, settings)
        generation = generation_settings(spec.generation, body.generation(), settings)
        job = worker.submit(
            "answer", generation.model_dump_json(), body.questions, **generation.model_dump()
        )
        answers = await answered(job)
        return {
            "model": name,
            "answers": [
                {
                    "question": question,
                    "text": answer.text,
                    "score": round(answer.score, 6),
                    "passages": [passage_json(p) for p in answer.passages],
                }
                for question, answer in zip(body.questions, answers, strict=True)
            ],
        }

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest) -> dict[str, Any] | StreamingResponse:
        if body.model != name:
            raise BadRequest(
                f'no model "{body.model}": this server serves "{name}" (GET /v1/models).',
                status=404,
                param="model",
            )
        question = question_of(body)
        check_questions([question], settings)
        generation = generation_settings(spec.generation, chat_overrides(body, layout), settings)
        if body.stream:
            return await streamed(question, generation)
        job = worker.submit(
            "answer", generation.model_dump_json(), [question], **generation.model_dump()
        )
        (reply,) = await answered(job)
        return completion(name, reply, layout.finish_reason(reply, generation))

    async def streamed(question: str, generation: GenerationSettings) -> StreamingResponse:
        """The answer as server-sent chunks. The request fails as a whole (4xx/5xx) until the
        passages are known; after that, an error is sent as an ``{"error": ...}`` event."""
        events: asyncio.Queue[Event] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def deliver(event: Event) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody reads any more
                loop.call_soon_threadsafe(events.put_nowait, event)

        job = worker.open_stream(question, generation.model_dump(), deliver)
        try:
            kind, value = await next_event(events)
        except BaseException:
            job.cancelled.set()
            raise
        if kind == "error":
            raise value
        return StreamingResponse(
            chunks(events, job, value, generation),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def next_event(events: asyncio.Queue[Event]) -> Event:
        try:
            return await asyncio.wait_for(events.get(), settings.timeout)
        except TimeoutError:
            raise RequestTimeout(settings.timeout) from None

    async def chunks(
        events: asyncio.Queue[Event],
        job: StreamJob,
        passages: list[Passage],
        generation: GenerationSettings,
    ) -> AsyncIterator[str]:
        identity = completion_id()
        try:
            yield sse(
                chunk(identity, name, {"role": "assistant", "content": ""}, passages=passages)
            )
            while True:
                try:
                    kind, value = await next_event(events)
                except RequestTimeout as error:
                    yield sse(error_body(504, str(error)))
                    return
                if kind == "piece":
                    yield sse(chunk(identity, name, {"content": value}))
                elif kind == "answer":
                    reason = layout.finish_reason(value, generation)
                    yield sse(chunk(identity, name, {}, reason=reason))
                    yield sse("[DONE]")
                    return
                else:
                    status = 400 if isinstance(value, RagloomError) else 500
                    yield sse(error_body(status, str(value)))
                    return
        finally:
            job.cancelled.set()

    return Metered(errors.JsonTooLarge(app, body_limit(settings)), stats)
