// The ragloom serve page: asks POST /v1/chat/completions with stream: true, shows the answer
// as its chunks arrive and the passages from the first chunk. /?q=... asks on load.
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;

function setState(state) {
  document.body.dataset.state = state;
  $("submit").disabled = state === "asking" || state === "streaming";
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  setState("error");
}

function showPassages(passages) {
  const list = $("passages");
  list.replaceChildren();
  passages.forEach((passage, index) => {
    const item = document.createElement("li");
    const head = document.createElement("div");
    head.className = "passage-head";
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = `${index + 1}.`;
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = passage.title || "(untitled)";
    const score = document.createElement("span");
    score.className = "score";
    score.title = "retrieval score";
    score.textContent = passage.score.toFixed(3);
    head.append(rank, title, score);
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = passage.text;
    item.append(head, text);
    list.append(item);
  });
  $("passages-card").hidden = passages.length === 0;
}

function handle(data, started) {
  if (data === "[DONE]") {
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    if (!$("answer").textContent) $("answer").textContent = "(empty answer)";
    $("timing").textContent = `answered in ${seconds} s`;
    setState("done");
    return;
  }
  const chunk = JSON.parse(data);
  if (chunk.error) {
    showError(chunk.error.message);
    return;
  }
  if (chunk.passages) showPassages(chunk.passages);
  const delta = chunk.choices[0].delta;
  if (delta.content) {
    const answer = $("answer");
    answer.textContent += delta.content;
    answer.dataset.pieces = Number(answer.dataset.pieces || 0) + 1;
  }
  setState("streaming");
}

async function ask(question) {
  setState("asking");
  $("error").hidden = true;
  $("answer").textContent = "";
  $("answer").dataset.pieces = 0;
  $("timing").textContent = "";
  $("answer-card").hidden = false;
  $("passages-card").hidden = true;
  const started = performance.now();
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model, stream: true, messages: [{ role: "user", content: question }] }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    showError(body?.error?.message ?? `the server answered ${response.status}`);
    return;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ")) handle(line.slice(6), started);
      }
    }
  }
}

async function start() {
  try {
    const models = await (await fetch("/v1/models")).json();
    model = models.data[0].id;
    $("model").textContent = model;
    document.title = `ragloom · ${model}`;
  } catch (error) {
    showError(`cannot reach the server: ${error}`);
    return;
  }
  $("ask").addEventListener("submit", (event) => {
    event.preventDefault();
    const question = $("question").value.trim();
    if (!question) return;
    history.replaceState(null, "", `?q=${encodeURIComponent(question)}`);
    ask(question).catch((error) => showError(`the request failed: ${error}`));
  });
  const asked = new URLSearchParams(location.search).get("q");
  if (asked) {
    $("question").value = asked;
    ask(asked).catch((error) => showError(`the request failed: ${error}`));
  }
}

start();
