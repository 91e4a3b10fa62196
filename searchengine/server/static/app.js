// searchengine's page: plain JavaScript, no build step. Everything goes through the
// JSON API (/api/...); images are fetched by catalog id only.
"use strict";

const PAGE_SIZE = 24;
const TOKEN_COOKIE = "searchengine_token";
const $ = (id) => document.getElementById(id);

const state = {
  request: null, // {kind: "search"|"similar"|"upload", ...} of the results on screen
  offset: 0,
  results: [],
  controller: null, // AbortController of the request in flight
  focused: 0, // index of the card that holds the grid's tab stop
  opened: null, // result shown in the viewer
};

// ---------------------------------------------------------------- API and token

function takeTokenFromUrl() {
  // http://HOST:PORT/#token=T: the fragment never reaches the server or its logs.
  const match = location.hash.match(/token=([^&]+)/);
  if (!match) return;
  setToken(decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search);
}

function setToken(token) {
  document.cookie = `${TOKEN_COOKIE}=${encodeURIComponent(token)}; path=/; SameSite=Strict`;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { credentials: "same-origin", ...options });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "The server cannot be reached. Is `searchengine serve` still running?");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    const message = (body && body.error) || `The server answered ${response.status}.`;
    if (response.status === 401) askForToken();
    throw new ApiError(response.status, message);
  }
  return body;
}

function askForToken() {
  const dialog = $("token-dialog");
  if (!dialog.open) dialog.showModal();
}

$("token-form").addEventListener("submit", () => {
  setToken($("token").value.trim());
  $("token").value = "";
  loadCollection();
  if (state.request) run(state.request, 0);
});

// ---------------------------------------------------------------- messages

let progressTimer = null;

function busy(on, text) {
  const grid = $("results");
  grid.setAttribute("aria-busy", on ? "true" : "false");
  clearTimeout(progressTimer);
  if (on) {
    // Show progress only when a query is slow enough to notice: no flicker.
    progressTimer = setTimeout(() => { $("progress").hidden = false; }, 150);
    say(text);
  } else {
    $("progress").hidden = true;
  }
}

function say(text) {
  $("message").textContent = text;
  if (text) $("error").textContent = "";
}

function fail(text) {
  $("error").textContent = text;
  $("message").textContent = "";
}

// ---------------------------------------------------------------- collection

async function loadCollection() {
  try {
    const status = await api("/api/status");
    $("collection").textContent =
      `${status.name}: ${status.images} photos · ${status.model}`;
    const folders = await api("/api/folders");
    const select = $("folder");
    select.length = 1;
    for (const folder of folders.folders) select.add(new Option(folder, folder));
  } catch (err) {
    $("collection").textContent = "";
    if (err.status !== 401) fail(err.message);
  }
}

// ---------------------------------------------------------------- searching

function searchRequest() {
  return {
    kind: "search",
    q: $("q").value.trim(),
    folder: $("folder").value,
    after: $("after").value,
    before: $("before").value,
    rerank: $("rerank").checked,
    caption: $("captions").checked,
  };
}

function describe(request) {
  if (request.kind === "search") return `“${request.q}”`;
  if (request.kind === "similar") return `photos like ${request.name}`;
  if (request.kind === "part") return `photos like a part of ${request.name}`;
  return `photos like ${request.file.name}`;
}

async function fetchPage(request, offset, signal) {
  const params = new URLSearchParams({ k: PAGE_SIZE, offset });
  if (request.kind === "search") {
    params.set("q", request.q);
    for (const key of ["folder", "after", "before"]) {
      if (request[key]) params.set(key, request[key]);
    }
    if (request.rerank) params.set("rerank", "true");
    if (request.caption) params.set("caption", "true");
    return api(`/api/search?${params}`, { signal });
  }
  if (request.kind === "similar") {
    return api(`/api/images/${request.id}/similar?${params}`, { signal });
  }
  if (request.kind === "part") {
    params.set("box", request.box.join(","));
    return api(`/api/images/${request.id}/similar-part?${params}`, { signal });
  }
  const form = new FormData();
  form.append("file", request.file);
  return api(`/api/similar?${params}`, { method: "POST", body: form, signal });
}

async function run(request, offset) {
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  const started = performance.now();
  busy(true, offset ? "Loading more…" : `Searching for ${describe(request)}…`);
  try {
    const page = await fetchPage(request, offset, controller.signal);
    state.request = request;
    state.offset = offset;
    if (offset === 0) state.results = [];
    state.results.push(...page.results);
    render(offset);
    $("more").hidden = !page.has_more;
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    if (state.results.length === 0) {
      say(`Nothing matches ${describe(request)}. Try other words, or clear the filters.`);
    } else {
      const more = page.has_more ? "" : " (all)";
      say(`${state.results.length} photos${more} for ${describe(request)}, in ${seconds} s.`);
    }
    if (request.kind === "search") {
      history.replaceState(null, "", `?q=${encodeURIComponent(request.q)}`);
    }
    return true;
  } catch (err) {
    if (err.name === "AbortError") return false;
    fail(`Search failed: ${err.message}`);
    return false;
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      busy(false);
    }
  }
}

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const request = searchRequest();
  if (!request.q) {
    fail("Type what the photo shows, e.g. “a dog on a beach”.");
    return;
  }
  run(request, 0);
});

$("upload").addEventListener("change", () => {
  const file = $("upload").files[0];
  if (file) run({ kind: "upload", file }, 0);
});

$("more").addEventListener("click", async () => {
  const next = state.results.length;
  if (await run(state.request, state.offset + PAGE_SIZE)) focusCard(next);
});

// ---------------------------------------------------------------- the grid

function formatScore(value) {
  return value.toFixed(3);
}

function card(result, index) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "card";
  button.dataset.index = String(index);
  button.tabIndex = -1;
  const img = document.createElement("img");
  img.src = result.thumbnail;
  img.alt = result.caption || result.name;
  img.loading = "lazy";
  img.decoding = "async";
  const label = document.createElement("span");
  label.className = "label";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = result.name;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = formatScore(result.score);
  score.title = "score";
  label.append(name, score);
  button.append(img, label);
  if (result.caption) {
    const caption = document.createElement("span");
    caption.className = "caption";
    caption.textContent = result.caption;
    button.append(caption);
  }
  button.setAttribute("aria-label", `${result.name}, score ${formatScore(result.score)}`);
  button.addEventListener("click", () => openViewer(index));
  button.addEventListener("focus", () => setTabStop(index));
  item.append(button);
  return item;
}

function render(from) {
  const grid = $("results");
  if (from === 0) grid.replaceChildren();
  const fragment = document.createDocumentFragment();
  state.results.slice(from).forEach((r, i) => fragment.append(card(r, from + i)));
  grid.append(fragment);
  setTabStop(from === 0 ? 0 : state.focused);
}

function cards() {
  return Array.from($("results").querySelectorAll(".card"));
}

function setTabStop(index) {
  // Roving tab index: the grid is one Tab stop; arrow keys move inside it.
  const all = cards();
  if (!all.length) return;
  state.focused = Math.max(0, Math.min(index, all.length - 1));
  all.forEach((c, i) => { c.tabIndex = i === state.focused ? 0 : -1; });
}

function focusCard(index) {
  const all = cards();
  if (!all.length) return;
  setTabStop(index);
  all[state.focused].focus();
}

function columns() {
  const all = cards();
  if (all.length < 2) return 1;
  const top = all[0].getBoundingClientRect().top;
  const n = all.findIndex((c) => c.getBoundingClientRect().top > top + 1);
  return n === -1 ? all.length : n;
}

$("results").addEventListener("keydown", (event) => {
  const moves = {
    ArrowRight: 1,
    ArrowLeft: -1,
    ArrowDown: columns(),
    ArrowUp: -columns(),
    Home: -Infinity,
    End: Infinity,
  };
  if (!(event.key in moves)) return;
  event.preventDefault();
  const target = state.focused + moves[event.key];
  if (event.key === "ArrowUp" && target < 0) {
    $("q").focus();
    return;
  }
  focusCard(Number.isFinite(target) ? target : target < 0 ? 0 : cards().length - 1);
});

$("q").addEventListener("keydown", (event) => {
  if (event.key === "ArrowDown" && cards().length) {
    event.preventDefault();
    focusCard(state.focused);
  }
});

document.addEventListener("keydown", (event) => {
  const typing = event.target.closest("input, select, textarea, dialog");
  if (event.key === "/" && !typing) {
    event.preventDefault();
    $("q").focus();
    $("q").select();
  }
});

// ---------------------------------------------------------------- the viewer

function formatDate(seconds) {
  return new Date(seconds * 1000).toLocaleString(undefined, {
    dateStyle: "medium",
    timeStyle: "short",
  });
}

async function openViewer(index) {
  const result = state.results[index];
  state.opened = { result, index };
  $("viewer-img").src = result.preview;
  $("viewer-img").alt = result.caption || result.name;
  $("viewer-title").textContent = result.name;
  $("viewer-path").textContent = result.path;
  $("viewer-score").textContent = `${formatScore(result.score)} (cosine ${formatScore(result.cosine)})`;
  $("viewer-size").textContent = result.width ? `${result.width} × ${result.height}` : "–";
  $("viewer-date").textContent = result.taken_at ? formatDate(result.taken_at) : "…";
  $("viewer-caption").textContent = result.caption || "–";
  $("caption-btn").hidden = Boolean(result.caption);
  $("original").href = result.file;
  resetWhere(result);
  $("viewer").showModal();
  $("similar-btn").focus();
  if (!result.taken_at) {
    try {
      const info = await api(`/api/images/${result.id}`);
      if (state.opened && state.opened.result === result) {
        $("viewer-date").textContent = `${formatDate(info.modified)} (file date)`;
      }
    } catch (err) {
      $("viewer-date").textContent = "–";
    }
  }
}

$("viewer").addEventListener("close", () => {
  // Back to where the keyboard was: the card that was opened.
  if (state.opened) focusCard(state.opened.index);
});

$("close-btn").addEventListener("click", () => $("viewer").close());

$("similar-btn").addEventListener("click", async () => {
  const { result } = state.opened;
  state.opened = null;
  $("viewer").close();
  if (await run({ kind: "similar", id: result.id, name: result.name }, 0)) focusCard(0);
});

$("caption-btn").addEventListener("click", async () => {
  const { result } = state.opened;
  const button = $("caption-btn");
  button.disabled = true;
  $("viewer-caption").textContent = "Describing…";
  try {
    const body = await api(`/api/images/${result.id}/caption`);
    result.caption = body.caption;
    $("viewer-caption").textContent = body.caption;
    button.hidden = true;
  } catch (err) {
    $("viewer-caption").textContent = `No caption: ${err.message}`;
  } finally {
    button.disabled = false;
  }
});

// ---------------------------------------------------------------- where is it? / a part

// "Where is it?" lays the current query's CLIPSeg heatmap over the photo; dragging
// over the photo picks a part, and "More like this part" searches by it (FALIP).
const part = { box: null, start: null, drawn: null };

function resetWhere(result) {
  part.box = part.start = part.drawn = null;
  $("part-box").hidden = true;
  $("part-btn").disabled = true;
  $("viewer-where").textContent = "–";
  $("part-help").textContent = "Drag over the photo to pick a part of it.";
  const query = state.request && state.request.kind === "search" ? state.request.q : "";
  $("where-btn").hidden = !query;
  $("where-btn").setAttribute("aria-pressed", "false");
  $("viewer-img").dataset.preview = result.preview;
}

$("where-btn").addEventListener("click", async () => {
  const { result } = state.opened;
  const img = $("viewer-img");
  const button = $("where-btn");
  if (button.getAttribute("aria-pressed") === "true") {
    img.src = img.dataset.preview;
    button.setAttribute("aria-pressed", "false");
    return;
  }
  const q = state.request.q;
  button.disabled = true;
  $("viewer-where").textContent = "Looking…";
  try {
    const body = await api(`/api/images/${result.id}/where?q=${encodeURIComponent(q)}`);
    if (!state.opened || state.opened.result !== result) return;
    const peak = body.score.toFixed(2);
    $("viewer-where").textContent = body.found
      ? `“${body.text}” found (peak ${peak}), box ${body.box.join(", ")}`
      : `“${body.text}” not found (peak ${peak})`;
    img.src = body.overlay;
    button.setAttribute("aria-pressed", "true");
  } catch (err) {
    $("viewer-where").textContent = `Cannot tell: ${err.message}`;
  } finally {
    button.disabled = false;
  }
});

function stagePoint(event) {
  const rect = $("viewer-img").getBoundingClientRect();
  const x = Math.min(Math.max(event.clientX - rect.left, 0), rect.width);
  const y = Math.min(Math.max(event.clientY - rect.top, 0), rect.height);
  return { x, y, rect };
}

$("viewer-stage").addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  part.start = stagePoint(event);
  $("viewer-stage").setPointerCapture(event.pointerId);
});

$("viewer-stage").addEventListener("pointermove", (event) => {
  if (!part.start) return;
  const now = stagePoint(event);
  const box = $("part-box");
  const left = Math.min(part.start.x, now.x);
  const top = Math.min(part.start.y, now.y);
  const width = Math.abs(now.x - part.start.x);
  const height = Math.abs(now.y - part.start.y);
  part.drawn = { left, top, width, height, rect: now.rect };
  Object.assign(box.style, {
    left: `${left}px`,
    top: `${top}px`,
    width: `${part.drawn.width}px`,
    height: `${part.drawn.height}px`,
  });
  box.hidden = false;
});

$("viewer-stage").addEventListener("pointerup", () => {
  part.start = null;
  const drawn = part.drawn;
  const result = state.opened && state.opened.result;
  if (!drawn || !result || drawn.width < 4 || drawn.height < 4) {
    $("part-box").hidden = true;
    $("part-btn").disabled = true;
    return;
  }
  // Screen pixels of the shown preview into pixels of the upright original.
  const sx = (result.width || drawn.rect.width) / drawn.rect.width;
  const sy = (result.height || drawn.rect.height) / drawn.rect.height;
  part.box = [
    Math.round(drawn.left * sx),
    Math.round(drawn.top * sy),
    Math.round((drawn.left + drawn.width) * sx),
    Math.round((drawn.top + drawn.height) * sy),
  ];
  $("part-btn").disabled = false;
  $("part-help").textContent = `Part ${part.box.join(", ")} chosen.`;
});

$("part-btn").addEventListener("click", async () => {
  const { result } = state.opened;
  const box = part.box;
  state.opened = null;
  $("viewer").close();
  if (await run({ kind: "part", id: result.id, name: result.name, box }, 0)) focusCard(0);
});

// ---------------------------------------------------------------- start

takeTokenFromUrl();
loadCollection();
const initial = new URLSearchParams(location.search).get("q");
if (initial) {
  $("q").value = initial;
  run(searchRequest(), 0);
}
$("q").focus();
