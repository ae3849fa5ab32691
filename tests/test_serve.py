"""``ragloom serve``: a real server on 127.0.0.1 (a free port), driven by httpx and by the
official ``openai`` client; concurrent clients, bad inputs, a full queue, a timeout, SIGTERM;
the model worker's batching; the command's errors.

Every server here is a subprocess over a tiny random RAG pipeline, bound to loopback, stopped
with SIGTERM at the end; every request has a timeout and every loop a bound.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import httpx
import openai
import pytest

from conftest import ragloom_command
from ragloom import Answer, Pipeline
from ragloom.kb.hf import import_hf
from ragloom.testing.tiny_models import (
    Size,
    corpus,
    rag_checkpoint,
    rag_spec,
    recipe_knowledge_base,
)

MODEL = "tiny"
QUESTIONS = [" ".join(line.split()[: 3 + i % 6]) for i, line in enumerate(corpus(32, seed=7))]
CLIENT_TIMEOUT = 60.0
HEAVY = {"num_beams": 8, "min_length": 200, "max_length": 200}
"""Generation keys that keep the tiny model busy for a while: 8 beams, 200 tokens forced."""
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
"""Servers and this process run torch on one thread: on 2 shared cores, two processes of two
threads each wait on each other tens of times longer than they compute."""


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass
class Server:
    """A ``ragloom serve`` subprocess and what it printed."""

    process: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)

    def stop(self) -> int:
        """SIGTERM, then the exit status (killed after 60 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key="unused", timeout=CLIENT_TIMEOUT, max_retries=0
        )


STARTED: list[subprocess.Popen[str]] = []
"""Every server this module started: the last fixture kills any a failed test left running."""


@pytest.fixture(scope="module", autouse=True)
def no_server_outlives_the_tests() -> Iterator[None]:
    yield
    for process in STARTED:
        if process.poll() is None:
            process.kill()
            process.wait()


def start_server(spec: Path, *options: str, log: Path) -> Server:
    """``ragloom serve SPEC --port 0 OPTIONS`` on loopback, once it says where it listens."""
    stderr = log.open("w", encoding="utf-8")
    process = subprocess.Popen(
        ragloom_command("serve", spec, "--port", "0", *options),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, **ONE_THREAD, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    stderr.close()
    STARTED.append(process)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    printed: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        printed.append(line)
        found = re.search(r" on (http://127\.0\.0\.1:\d+) ", line)
        if found:
            server = Server(process, found.group(1), printed)
            threading.Thread(
                target=lambda: [printed.append(line) for line in iter(lines.get, None)],
                daemon=True,
            ).start()
            return server
    process.kill()
    process.wait()
    pytest.fail(f"ragloom serve did not start:\n{''.join(printed)}\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_spec(root: Path) -> Path:
    """A tiny RAG pipeline (64-wide BART, 3 passages per question, 16 tokens) and its KB in
    ``root``; the spec's name, and so the model's, is ``tiny``."""
    checkpoint, _, context = rag_checkpoint(root, seed=1, size=Size(generator_hidden=64))
    passages, index = recipe_knowledge_base(root, context, faiss.IndexFlatIP(32))
    path = root / f"{MODEL}.toml"
    path.write_text(rag_spec(checkpoint, context, root / "kb", n_docs=3, max_length=16))
    import_hf(passages, root / "kb", index, Pipeline.from_spec(path).encoder, "dpr")
    return path


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_spec(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def pipeline(spec: Path) -> Pipeline:
    """The same pipeline in this process: what one-at-a-time answers are."""
    return Pipeline.from_spec(spec)


@pytest.fixture(scope="module")
def alone(pipeline: Pipeline) -> dict[str, Answer]:
    """Each question's answer asked alone."""
    return {question: pipeline.generate([question])[0] for question in QUESTIONS}


@pytest.fixture(scope="module")
def server(spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve-log") / "stderr.txt"
    running = start_server(spec, "--max-wait-ms", "50", "--max-batch", "32", log=log)
    yield running
    assert running.stop() == 0, log.read_text()[-3000:]


def post(server: Server, path: str, body: Any = None, **options: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=CLIENT_TIMEOUT, **options)


def get(server: Server, path: str) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", timeout=CLIENT_TIMEOUT)


def chat_body(question: str, **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": question}], **fields}


# ---------------------------------------------------------------------------------------------
# The endpoints


def test_it_binds_loopback_and_says_so(server: Server) -> None:
    said = "".join(server.lines)
    assert "loopback only" in said and "127.0.0.1" in said
    assert get(server, "/healthz").json()["status"] == "ok"
    assert get(server, "/v1/models").json()["data"][0]["id"] == MODEL
    assert [model.id for model in server.client().models.list()] == [MODEL]


def test_retrieve_returns_the_pipelines_passages(server: Server, pipeline: Pipeline) -> None:
    questions = QUESTIONS[:3]
    response = post(server, "/v1/retrieve", {"questions": questions, "k": 2})
    assert response.status_code == 200, response.text
    expected = pipeline.retrieve(questions, 2).passages
    results = response.json()["results"]
    assert [r["question"] for r in results] == questions
    for result, passages in zip(results, expected, strict=True):
        got = result["passages"]
        assert [(p["id"], p["title"], p["text"]) for p in got] == [
            (p.id, p.title, p.text) for p in passages
        ]
        assert [p["score"] for p in got] == pytest.approx([p.score for p in passages], abs=1e-4)


def test_answer_is_generate_over_the_questions(server: Server, pipeline: Pipeline) -> None:
    questions = QUESTIONS[:4]
    response = post(server, "/v1/answer", {"questions": questions, "num_beams": 2})
    assert response.status_code == 200, response.text
    answers = response.json()["answers"]
    for got, expected in zip(answers, pipeline.generate(questions, num_beams=2), strict=True):
        assert got["text"] == expected.text
        assert got["score"] == pytest.approx(expected.score, abs=1e-4)
        assert [p["id"] for p in got["passages"]] == [p.id for p in expected.passages]
        assert {"id", "title", "text", "score"} <= set(got["passages"][0])


def test_the_openai_client_gets_the_answer_and_its_passages(
    server: Server, alone: dict[str, Answer]
) -> None:
    question = QUESTIONS[0]
    completion = server.client().chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "not read"},
            {"role": "user", "content": "an earlier turn, not read"},
            {"role": "assistant", "content": "..."},
            {"role": "user", "content": question},
        ],
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == alone[question].text
    assert choice.finish_reason in ("stop", "length")
    passages = (completion.model_extra or {})["passages"]
    assert [p["id"] for p in passages] == [p.id for p in alone[question].passages]


def test_the_openai_client_streams_the_answer(server: Server, alone: dict[str, Answer]) -> None:
    question = QUESTIONS[1]
    chunks = list(
        server.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}], stream=True
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(pieces) == alone[question].text
    assert len(pieces) > 1, "greedy rag-token decoding streams piece by piece"
    assert chunks[0].choices[0].delta.role == "assistant"
    first_passages = (chunks[0].model_extra or {})["passages"]
    assert [p["id"] for p in first_passages] == [p.id for p in alone[question].passages]
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_a_message_may_be_a_list_of_text_parts(server: Server, alone: dict[str, Answer]) -> None:
    question = QUESTIONS[6]
    words = question.split(" ", 1)
    parts = [{"type": "text", "text": words[0] + " "}, {"type": "text", "text": words[1]}]
    body = {"model": MODEL, "messages": [{"role": "user", "content": parts}]}
    response = post(server, "/v1/chat/completions", body)
    assert response.json()["choices"][0]["message"]["content"] == alone[question].text


def test_the_stream_is_server_sent_events_ending_with_done(server: Server) -> None:
    with httpx.stream(
        "POST",
        f"{server.url}/v1/chat/completions",
        json=chat_body(QUESTIONS[2], stream=True),
        timeout=CLIENT_TIMEOUT,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    deltas = [json.loads(line[6:])["choices"][0]["delta"] for line in events[:-1]]
    assert deltas[0]["role"] == "assistant" and deltas[-1] == {}


def test_max_tokens_counts_answer_tokens(server: Server, pipeline: Pipeline) -> None:
    question = QUESTIONS[3]
    start = len(pipeline.generator.start_token_ids)
    (expected,) = pipeline.generate([question], max_length=start + 3 + 1)  # + BART's forced EOS
    assert len(expected.token_ids) == 3
    completion = server.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=3
    )
    assert completion.choices[0].message.content == expected.text
    assert completion.choices[0].finish_reason == "length"


def test_generation_keys_and_stop_pass_through(server: Server, pipeline: Pipeline) -> None:
    question = QUESTIONS[4]
    (expected,) = pipeline.generate([question], num_beams=3, stop=["l"])
    completion = server.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": question}],
        stop="l",
        extra_body={"num_beams": 3},
    )
    assert completion.choices[0].message.content == expected.text


@pytest.mark.parametrize("clients", [8, 32])
def test_concurrent_clients_get_what_they_would_alone(
    server: Server, alone: dict[str, Answer], clients: int
) -> None:
    """Half the clients ask plainly, half stream; the plain ones are batched together."""
    before = get(server, "/metrics").json()["batches"]["sizes"]
    barrier = threading.Barrier(clients, timeout=60)

    def ask(number: int) -> tuple[str, list[int]]:
        question = QUESTIONS[number % len(QUESTIONS)]
        client = server.client()
        barrier.wait()
        if number % 2:
            chunks = list(
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": question}], stream=True
                )
            )
            text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
            return text, [p["id"] for p in (chunks[0].model_extra or {})["passages"]]
        completion = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}]
        )
        passages = (completion.model_extra or {})["passages"]
        return completion.choices[0].message.content or "", [p["id"] for p in passages]

    with ThreadPoolExecutor(clients) as pool:
        got = list(pool.map(ask, range(clients)))
    expected = [alone[QUESTIONS[n % len(QUESTIONS)]] for n in range(clients)]
    assert got == [(a.text, [p.id for p in a.passages]) for a in expected]
    after = get(server, "/metrics").json()["batches"]["sizes"]
    grew = {size for size, count in after.items() if count > before.get(size, 0)}
    assert max(int(size) for size in grew) > 1, f"no batch formed: {after}"


BAD_REQUESTS = [
    ("malformed JSON", "/v1/answer", b'{"questions": [', 400, "not valid JSON"),
    ("not an object", "/v1/answer", b'["who?"]', 400, "JSON object"),
    ("no questions", "/v1/answer", {}, 400, '"questions" is missing'),
    ("questions not a list", "/v1/answer", {"questions": "who?"}, 400, "valid list"),
    ("question not text", "/v1/answer", {"questions": [5]}, 400, "questions[0]"),
    ("no question", "/v1/answer", {"questions": []}, 400, "at least 1"),
    ("empty question", "/v1/answer", {"questions": [" "]}, 400, "question 1 is empty"),
    ("long question", "/v1/answer", {"questions": ["x" * 2001]}, 400, "at most 2,000"),
    ("many questions", "/v1/answer", {"questions": ["who?"] * 33}, 400, "at most 32"),
    ("unknown key", "/v1/answer", {"questions": ["q"], "num_beam": 2}, 400, '"num_beams"'),
    ("spec key", "/v1/answer", {"questions": ["q"], "n_docs": 9}, 400, 'unknown field "n_docs"'),
    ("bad value", "/v1/answer", {"questions": ["q"], "num_beams": 0}, 400, "num_beams: must be"),
    ("wrong type", "/v1/answer", {"questions": ["q"], "num_beams": "2"}, 400, "valid integer"),
    ("over a limit", "/v1/answer", {"questions": ["q"], "num_beams": 9}, 400, "--max-beams"),
    ("k as text", "/v1/retrieve", {"questions": ["q"], "k": "5"}, 400, "valid integer"),
    ("k too large", "/v1/retrieve", {"questions": ["q"], "k": 101}, 400, "--max-k"),
    ("no user message", "/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "1 item"),
    (
        "only a system message",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "system", "content": "hi"}]},
        400,
        "no user message",
    ),
    (
        "bad role",
        "/v1/chat/completions",
        chat_body("q") | {"messages": [{"role": "x"}]},
        400,
        "role",
    ),
    (
        "an image",
        "/v1/chat/completions",
        chat_body("q") | {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400,
        "only text is read",
    ),
    ("unknown model", "/v1/chat/completions", chat_body("q") | {"model": "gpt-4"}, 404, MODEL),
    ("n > 1", "/v1/chat/completions", chat_body("q", n=2), 400, "n:"),
    ("sampling", "/v1/chat/completions", chat_body("q", logprobs=True), 400, '"logprobs"'),
    (
        "two lengths",
        "/v1/chat/completions",
        chat_body("q", max_tokens=2, max_length=9),
        400,
        "give one",
    ),
    ("a big body", "/v1/answer", b"[" + b" " * (2 << 20) + b"]", 413, ""),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_requests_are_refused_with_a_reason(
    server: Server, path: str, body: Any, status: int, says: str
) -> None:
    if isinstance(body, bytes):
        response = post(server, path, content=body, headers={"content-type": "application/json"})
    else:
        response = post(server, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert says in error["message"], error
    assert get(server, "/healthz").status_code == 200


def test_the_openai_client_raises_on_bad_requests(server: Server) -> None:
    client = server.client()
    with pytest.raises(openai.BadRequestError, match="num_beams"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "q"}], extra_body={"num_beam": 2}
        )
    with pytest.raises(openai.NotFoundError, match=MODEL):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "q"}])


def test_unknown_paths_and_methods_answer_json(server: Server) -> None:
    missing = get(server, "/v2/answer")
    assert missing.status_code == 404
    assert "POST /v1/answer" in missing.json()["error"]["message"]
    wrong = get(server, "/v1/answer")
    assert wrong.status_code == 405
    assert "GET" in wrong.json()["error"]["message"]


def test_metrics_count_requests_batches_latency_and_queue(server: Server) -> None:
    post(server, "/v1/answer", {"questions": QUESTIONS[:2]})
    get(server, "/healthz")
    metrics = get(server, "/metrics").json()
    assert metrics["requests"]["by_endpoint"]["POST /v1/answer"]["200"] >= 1
    assert metrics["requests"]["total"] >= 2
    assert metrics["batches"]["calls"] >= 1 and metrics["batches"]["questions"] >= 2
    latency = metrics["latency_ms"]["POST /v1/answer"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    assert metrics["queue"] == {"length": 0, "capacity": 64, "streams": 0}


def test_the_page_and_its_files_come_from_the_package(server: Server) -> None:
    page = get(server, "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    files = [page.text]
    for name in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        served = get(server, name)
        assert served.status_code == 200, name
        files.append(served.text)
    assert len(files) == 3, "the page, its script and its style"
    for text in files:
        assert not re.search(r"https?://", text), "nothing is loaded from elsewhere"


# ---------------------------------------------------------------------------------------------
# Limits: a full queue, a timeout


@pytest.fixture(scope="module")
def tight(spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that batches nothing, queues one request and waits 1 s for an answer."""
    log = tmp_path_factory.mktemp("serve-tight") / "stderr.txt"
    options = ("--max-batch", "1", "--queue-size", "1", "--timeout", "1")
    running = start_server(spec, *options, log=log)
    yield running
    assert running.stop() == 0, log.read_text()[-3000:]


def test_a_full_queue_answers_503_with_retry_after(tight: Server) -> None:
    body = {"questions": QUESTIONS[:4], **HEAVY}
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: post(tight, "/v1/answer", body), range(8)))
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 503, 504}, statuses
    busy = [response for response in responses if response.status_code == 503]
    assert busy, statuses
    assert int(busy[0].headers["retry-after"]) >= 1
    assert "--queue-size" in busy[0].json()["error"]["message"]


def test_a_late_answer_times_out_with_504(tight: Server) -> None:
    """Heavier requests until one takes longer than the server's 1 s (503: still busy)."""
    statuses = []
    for count in (4, 4, 8, 8, 16, 16, 32, 32):
        response = post(tight, "/v1/answer", {"questions": QUESTIONS[:count], **HEAVY})
        statuses.append(response.status_code)
        if response.status_code == 504:
            break
        time.sleep(0.5)
    assert response.status_code == 504, statuses
    assert "--timeout" in response.json()["error"]["message"]
    assert get(tight, "/healthz").status_code == 200


# ---------------------------------------------------------------------------------------------
# Stopping


def test_sigterm_as_soon_as_the_address_is_printed_stops_it(spec: Path, tmp_path: Path) -> None:
    """Before uvicorn has its own handlers, a SIGTERM still stops the server."""
    server = start_server(spec, log=tmp_path / "stderr.txt")
    server.process.send_signal(signal.SIGTERM)
    assert server.stop() == 0, (tmp_path / "stderr.txt").read_text()[-3000:]


def test_sigterm_finishes_the_requests_in_flight(spec: Path, tmp_path: Path) -> None:
    server = start_server(spec, log=tmp_path / "stderr.txt")
    body = {"questions": QUESTIONS[:8], "num_beams": 4, "min_length": 60, "max_length": 60}
    with ThreadPoolExecutor(2) as pool:
        answered = pool.submit(post, server, "/v1/answer", body)
        streamed = pool.submit(
            lambda: [
                chunk.choices[0].delta.content or ""
                for chunk in server.client().chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": QUESTIONS[0]}],
                    stream=True,
                    extra_body={"min_length": 60, "max_length": 60},
                )
            ]
        )
        deadline = time.monotonic() + 60
        while get(server, "/metrics").json()["requests"]["in_flight"] < 3:
            assert time.monotonic() < deadline, "the requests never arrived"
            time.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        response = answered.result(timeout=120)
        pieces = streamed.result(timeout=120)
    assert response.status_code == 200, response.text
    assert len(response.json()["answers"]) == 8
    assert len(pieces) > 1
    assert server.stop() == 0
    assert "stopped (SIGTERM)" in "".join(server.lines)
    with pytest.raises(httpx.ConnectError):
        get(server, "/healthz")


# ---------------------------------------------------------------------------------------------
# The model worker, in this process


@pytest.fixture
def worker(pipeline: Pipeline) -> Iterator[Any]:
    from ragloom.serving.stats import Stats
    from ragloom.serving.worker import ModelWorker

    running = ModelWorker(pipeline, max_batch=8, max_wait_ms=300, queue_size=16, stats=Stats())
    running.start()
    yield running
    running.close()


def settled(job: Any) -> Any:
    return job.future.result(timeout=60)


def test_requests_arriving_together_share_one_call(worker: Any, alone: dict[str, Answer]) -> None:
    jobs = [worker.submit("answer", "same", [question]) for question in QUESTIONS[:6]]
    answers = [settled(job)[0] for job in jobs]
    assert [a.token_ids for a in answers] == [alone[q].token_ids for q in QUESTIONS[:6]]
    assert worker.stats.report(worker.queue())["batches"]["sizes"] == {"6": 1}


def test_a_request_alone_does_not_wait_for_company(pipeline: Pipeline) -> None:
    from ragloom.serving.stats import Stats
    from ragloom.serving.worker import ModelWorker

    alone = ModelWorker(
        pipeline, 8, max_wait_ms=60_000, queue_size=4, stats=Stats(), arriving=lambda: 1
    )
    alone.start()
    try:
        began = time.monotonic()
        settled(alone.submit("answer", "a", QUESTIONS[:1]))
        assert time.monotonic() - began < 30, "it waited for requests that were not coming"
    finally:
        alone.close()


def test_a_batch_holds_max_batch_questions_and_one_settings(worker: Any) -> None:
    jobs = [worker.submit("answer", "a", QUESTIONS[i : i + 3]) for i in (0, 3, 6)]
    jobs.append(worker.submit("answer", "b", QUESTIONS[9:10], num_beams=2))
    jobs.append(worker.submit("retrieve", "2", QUESTIONS[:2], k=2))
    for job in jobs:
        settled(job)
    sizes = worker.stats.report(worker.queue())["batches"]["sizes"]
    assert sizes == {"1": 1, "2": 1, "3": 1, "6": 1}, "3+3, then 3; b alone; the retrieval"


def test_one_bad_request_fails_alone(worker: Any, alone: dict[str, Answer]) -> None:
    good = worker.submit("answer", "same", [QUESTIONS[0]])
    bad = worker.submit("answer", "same", ["broken \udc80 text"])
    assert settled(good)[0].text == alone[QUESTIONS[0]].text
    with pytest.raises(Exception, match="not valid text"):
        settled(bad)


def test_a_full_queue_refuses_at_once(pipeline: Pipeline) -> None:
    from ragloom.serving.stats import Stats
    from ragloom.serving.worker import ModelWorker, QueueFull

    idle = ModelWorker(pipeline, max_batch=8, max_wait_ms=0, queue_size=2, stats=Stats())
    idle.submit("answer", "a", ["one"])
    idle.submit("answer", "a", ["two"])
    with pytest.raises(QueueFull) as refused:
        idle.submit("answer", "a", ["three"])
    assert refused.value.retry_after >= 1
    assert idle.queue()["length"] == 2


def test_a_stream_tells_passages_then_pieces_then_the_answer(
    worker: Any, alone: dict[str, Answer]
) -> None:
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    question = QUESTIONS[5]
    worker.open_stream(question, {}, events.put)
    got = [events.get(timeout=60)]
    while got[-1][0] == "piece" or got[-1][0] == "passages":
        got.append(events.get(timeout=60))
    kinds = [kind for kind, _ in got]
    assert kinds[0] == "passages" and kinds[-1] == "answer" and set(kinds[1:-1]) == {"piece"}
    assert "".join(value for kind, value in got if kind == "piece") == alone[question].text
    assert got[-1][1].token_ids == alone[question].token_ids


# ---------------------------------------------------------------------------------------------
# The command's errors


def run_cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from ragloom.cli import main

    status = main(list(args))
    return status, capsys.readouterr().err


def one_paragraph(stderr: str) -> None:
    """``stderr`` ends with one paragraph ``error: ...`` (progress bars may come before)."""
    assert "Traceback" not in stderr
    error = stderr[stderr.rindex("error: ") :]
    assert "\n\n" not in error.strip() and "\r" not in error, error


def test_bad_options_are_one_paragraph(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run_cli("serve", str(spec), "--max-batch", "0", capsys=capsys)
    assert status == 1
    one_paragraph(err)
    assert "--max-batch 0: must be greater than or equal to 1" in err
    status, err = run_cli("serve", str(spec.parent / "missing.toml"), capsys=capsys)
    assert status == 1
    one_paragraph(err)


def test_a_port_in_use_is_one_paragraph(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, err = run_cli("serve", str(spec), "--port", str(port), capsys=capsys)
    assert status == 1
    one_paragraph(err)
    assert f"127.0.0.1:{port}" in err and "--port 0" in err


def test_without_the_serve_extra_it_says_what_to_install(
    spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for module in ("ragloom.serving.server", "ragloom.serving.app", "ragloom.serving.errors"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    status, err = run_cli("serve", str(spec), capsys=capsys)
    assert status == 1
    one_paragraph(err)
    assert "pip install 'ragloom[serve]'" in err


def test_a_host_beyond_loopback_is_warned_about() -> None:
    from ragloom.serving.settings import ServerSettings

    assert ServerSettings().loopback and ServerSettings(host="::1").loopback
    assert not ServerSettings(host="0.0.0.0").loopback
    assert not ServerSettings(host="example.org").loopback
