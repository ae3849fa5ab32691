"""The page at ``/`` in a real browser: Debian's ``chromium``, headless, driven over the DevTools
protocol. It asks on load from ``/?q=...`` (and from the form), the answer streams in, the
passages show with titles and scores; the DOM is read once the answer is done and a screenshot is
checked and kept as ``page.png`` in the test's tmp_path (the CI artifact).

``.ci/run`` installs chromium with apt-get when it is missing; without it these tests skip.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from PIL import Image
from test_serve import QUESTIONS, Server, build_spec, post, start_server
from websockets.sync.client import ClientConnection, connect

CHROMIUM = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH: .ci/run installs Debian's with `apt-get install chromium`",
)

WIDTH, HEIGHT = 1000, 1100
BACKGROUND = (0xF4, 0xF6, 0xF8)
CARD = (0xFF, 0xFF, 0xFF)
SHOWN = """JSON.stringify({
  state: document.body.dataset.state,
  error: document.getElementById("error").textContent,
  answer: document.getElementById("answer").textContent,
  pieces: Number(document.getElementById("answer").dataset.pieces),
  titles: [...document.querySelectorAll("#passages .title")].map((e) => e.textContent),
  scores: [...document.querySelectorAll("#passages .score")].map((e) => e.textContent),
  texts: [...document.querySelectorAll("#passages .text")].map((e) => e.textContent),
  query: location.search,
})"""
"""What the page shows, read from its DOM."""


def launch(executable: str, profile: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a headless Chromium; returns it and the DevTools websocket of a new blank page
    (on a loopback port the browser picks and writes into its profile)."""
    with (profile.parent / "chromium.log").open("w") as log:
        process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",  # tests run as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not port_file.is_file() or not port_file.read_text().strip():
        assert process.poll() is None, "chromium exited at start"
        assert time.monotonic() < deadline, "chromium opened no DevTools port"
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    page = httpx.put(f"http://127.0.0.1:{port}/json/new?about:blank", timeout=30).json()
    return process, page["webSocketDebuggerUrl"]


class Browser:
    """One page of a headless Chromium, driven over the DevTools protocol."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are skipped)."""
        number = next(self.ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def shown_once(self, condition: str, timeout: float = 60) -> dict[str, Any]:
        """What the page shows once ``condition`` (JavaScript) holds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.evaluate(condition):
                    break
            except RuntimeError:  # the page was between documents
                pass
            assert time.monotonic() < deadline, f"the page never got to {condition}"
            time.sleep(0.05)
        shown: dict[str, Any] = json.loads(self.evaluate(SHOWN))
        return shown

    def screenshot(self, path: Path) -> Image.Image:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return Image.open(io.BytesIO(path.read_bytes())).convert("RGB")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    spec = build_spec(tmp_path_factory.mktemp("serve-page"))
    running = start_server(spec, log=spec.parent / "stderr.txt")
    yield running
    assert running.stop() == 0


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    assert CHROMIUM is not None
    process, url = launch(CHROMIUM, tmp_path / "profile")
    try:
        with connect(url, max_size=None, open_timeout=30) as socket:
            yield Browser(socket)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def answered(server: Server, question: str) -> dict[str, Any]:
    response = post(server, "/v1/answer", {"questions": [question]})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()["answers"][0]
    return answer


def white_bands(image: Image.Image) -> int:
    """Stretches of rows whose middle pixel is card white: the cards, top to bottom."""
    column = [image.getpixel((WIDTH // 2, y)) for y in range(image.height)]
    return sum(1 for y, pixel in enumerate(column) if pixel == CARD and column[y - 1] != CARD)


DONE = "['done', 'error'].includes(document.body.dataset.state)"


def test_the_page_streams_the_answer_and_shows_the_passages(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    question = QUESTIONS[0]
    expected = answered(server, question)
    browser.call("Page.navigate", url=f"{server.url}/?q={quote(question)}")
    shown = browser.shown_once(DONE)
    assert shown["state"] == "done", shown["error"]
    assert shown["answer"] == (expected["text"] or "(empty answer)")
    assert shown["pieces"] > 1, "the answer came in pieces"
    assert shown["titles"] == [p["title"] for p in expected["passages"]]
    assert shown["texts"] == [p["text"] for p in expected["passages"]]
    for score, passage in zip(shown["scores"], expected["passages"], strict=True):
        assert float(score) == pytest.approx(passage["score"], abs=6e-4)

    image = browser.screenshot(tmp_path / "page.png")
    (tmp_path / "page.html").write_text(browser.evaluate("document.documentElement.outerHTML"))
    assert image.width == WIDTH
    assert image.getpixel((5, image.height - 5)) == BACKGROUND
    cards = white_bands(image)
    assert cards >= 1 + len(expected["passages"]), f"the answer and passage cards: {cards}"


def test_the_form_asks_and_keeps_the_question_in_the_address(
    server: Server, browser: Browser
) -> None:
    browser.call("Page.navigate", url=server.url)
    browser.shown_once("document.getElementById('model').textContent === 'tiny'")
    question = QUESTIONS[1]
    browser.evaluate(
        f"document.getElementById('question').value = {json.dumps(question)};"
        "document.getElementById('submit').click();"
    )
    shown = browser.shown_once(DONE)
    assert shown["state"] == "done", shown["error"]
    assert shown["answer"] == (answered(server, question)["text"] or "(empty answer)")
    assert shown["query"] == f"?q={quote(question)}"


def test_a_refused_question_shows_the_servers_reason(server: Server, browser: Browser) -> None:
    browser.call("Page.navigate", url=f"{server.url}/?q={'x' * 2001}")
    shown = browser.shown_once(DONE)
    assert shown["state"] == "error"
    assert "at most 2,000 are allowed" in shown["error"]
