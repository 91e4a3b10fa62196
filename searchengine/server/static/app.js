// searchengine's page: plain JavaScript, no build step. Everything goes through the
// JSON API (/api/...); images are fetched by catalog id only.
//
// A search on screen is a *request*: {kind, ...}. Each kind (KINDS below) says how to
// fetch a page of it, how to name it in the status line, and how it is written in the
// address bar, so back/forward and shared links show the same results. A new kind of
// search is one more entry there.
"use strict";

const PAGE_SIZE = 24;
const MAX_QUERY = 2000; // the API's bound; longer text is refused, never cut silently
const SHOWN_QUERY = 60; // characters of a query repeated in the status line
const $ = (id) => document.getElementById(id);

const state = {
  request: null, // the request whose results are on screen
  offset: 0,
  results: [],
  page: null, // the last page's answer (ranked_by, weak_below, notice)
  controller: null, // AbortController of the request in flight
  focused: 0, // index of the card that holds the grid's tab stop
  opened: null, // result shown in the viewer
};
// Uploaded files by history entry: a file cannot be written into the address bar.
const uploads = new Map();
let uploadCount = 0;

// ---------------------------------------------------------------- API and token

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter; // seconds, from Retry-After on a 503
  }
}

// An address on the server ("/api/...", as the API gives them) as this page asks for
// it: relative to the page, so that the page works at the root of a host and under the
// path a reverse proxy serves it at ("https://host/photos/") alike.
function here(path) {
  return path.replace(/^\/+/, "");
}

// What an error answer without the server's own JSON body means: something in front of
// the server (a reverse proxy) answered instead of it.
function answeredInstead(status) {
  if (status === 413) {
    return (
      "The photo is larger than the proxy in front of the server accepts " +
      "(nginx: raise client_max_body_size)."
    );
  }
  if (status === 502 || status === 504) {
    return (
      "The server cannot be reached: the proxy in front of it answered " +
      `${status}: is \`searchengine serve\` still running?`
    );
  }
  return `The server answered ${status}.`;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(here(path), { credentials: "same-origin", ...options });
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
    const message = (body && body.error) || answeredInstead(response.status);
    if (response.status === 401) askForToken();
    const retry = Number(response.headers.get("Retry-After")) || null;
    throw new ApiError(response.status, message, retry);
  }
  return body;
}

async function useToken(token) {
  // The server keeps the token in an HttpOnly, SameSite=Strict cookie: no script on
  // this page can read it back, and no other site's page can make the browser send it.
  await api("/api/session", { method: "POST", headers: { Authorization: `Bearer ${token}` } });
}

async function takeTokenFromUrl() {
  // http://HOST:PORT/#token=T: the fragment never reaches the server or its logs.
  const match = location.hash.match(/token=([^&]+)/);
  if (!match) return;
  history.replaceState(history.state, "", location.pathname + location.search);
  try {
    await useToken(decodeURIComponent(match[1]));
  } catch (err) {
    fail(err.message);
  }
}

function askForToken() {
  const dialog = $("token-dialog");
  if (!dialog.open) dialog.showModal();
}

$("token-form").addEventListener("submit", async () => {
  const token = $("token").value.trim();
  $("token").value = "";
  try {
    await useToken(token);
  } catch (err) {
    return; // a wrong token: the 401 opened the dialog again
  }
  loadCollection();
  if (state.request) run(state.request, 0, { push: false });
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

function shorten(text, most) {
  return text.length > most ? `${text.slice(0, most - 1).trimEnd()}…` : text;
}

// ---------------------------------------------------------------- collection

function modelNotes(models) {
  // Models that are not ready, said plainly: "captions: loading (12 s)".
  const uses = { search: "search", rerank: "rerank", caption: "captions", where: "where is it?" };
  return (models || [])
    .filter((m) => m.state === "loading" || m.state === "failed")
    .map((m) => {
      if (m.state === "loading") return `${uses[m.role]}: loading`;
      return `${uses[m.role]}: unavailable, retried in ${Math.ceil(m.retry_in || 0)} s`;
    });
}

async function showStatus() {
  // The header: the collection, and any model that is not ready, until it settles.
  const status = await api("/api/status");
  const notes = modelNotes(status.models);
  $("collection").textContent = [
    `${status.name}: ${status.images} photos · ${status.model}`,
    ...notes,
  ].join(" · ");
  if (!notes.length) return;
  const loading = status.models.some((m) => m.state === "loading");
  setTimeout(() => showStatus().catch(() => {}), loading ? 5000 : 30000);
}

async function loadCollection() {
  try {
    await showStatus();
    const folders = await api("/api/folders");
    const select = $("folder");
    const chosen = select.value;
    select.length = 1;
    for (const folder of folders.folders) select.add(new Option(folder, folder));
    select.value = chosen;
  } catch (err) {
    $("collection").textContent = "";
    if (err.status !== 401) fail(err.message);
  }
}

// ---------------------------------------------------------------- kinds of search

const FILTERS = ["folder", "after", "before"];

const KINDS = {
  search: {
    fetch(request, params, signal) {
      params.set("q", request.q);
      for (const key of FILTERS) if (request[key]) params.set(key, request[key]);
      if (request.rerank) params.set("rerank", "true");
      if (request.caption) params.set("caption", "true");
      return api(`/api/search?${params}`, { signal });
    },
    describe: (request) => `“${shorten(request.q, SHOWN_QUERY)}”`,
    url(request) {
      const params = new URLSearchParams({ q: request.q });
      for (const key of FILTERS) if (request[key]) params.set(key, request[key]);
      if (request.rerank) params.set("rerank", "1");
      if (request.caption) params.set("caption", "1");
      return params;
    },
  },
  similar: {
    fetch: (request, params, signal) =>
      api(`/api/images/${request.id}/similar?${params}`, { signal }),
    describe: (request) => `photos like ${request.name || `#${request.id}`}`,
    url: (request) => new URLSearchParams({ like: String(request.id) }),
  },
  part: {
    // More like a part of a photo: the part travels as a box in the photo's pixels.
    fetch(request, params, signal) {
      params.set("box", request.box.join(","));
      return api(`/api/images/${request.id}/similar-part?${params}`, { signal });
    },
    describe: (request) => `photos like a part of ${request.name || `#${request.id}`}`,
    url: (request) => new URLSearchParams({ like: String(request.id), part: request.box.join(",") }),
  },
  upload: {
    fetch(request, params, signal) {
      const form = new FormData();
      form.append("file", request.file);
      return api(`/api/similar?${params}`, { method: "POST", body: form, signal });
    },
    describe: (request) => `photos like ${shorten(request.file.name, SHOWN_QUERY)}`,
    url: () => new URLSearchParams(), // a file has no address: the entry keeps it
  },
};

function requestFromUrl(search, entry) {
  // The request an address (and its history entry) stands for, or null.
  const params = new URLSearchParams(search);
  const like = params.get("like");
  if (like && /^[1-9][0-9]{0,17}$/.test(like)) {
    const box = (params.get("part") || "").split(",").map(Number);
    if (box.length === 4 && box.every((v) => Number.isInteger(v) && v >= 0)) {
      return { kind: "part", id: Number(like), name: entry && entry.name, box };
    }
    return { kind: "similar", id: Number(like), name: entry && entry.name };
  }
  const q = params.get("q");
  if (q) {
    const request = { kind: "search", q, rerank: params.has("rerank"), caption: params.has("caption") };
    for (const key of FILTERS) request[key] = params.get(key) || "";
    return request;
  }
  if (entry && uploads.has(entry.upload)) return { kind: "upload", file: uploads.get(entry.upload) };
  return null;
}

function showInForm(request) {
  // The form says what is on screen: the query and filters of a search, or nothing.
  const search = request && request.kind === "search" ? request : { q: "", rerank: false, caption: false };
  $("q").value = search.q;
  for (const key of FILTERS) $(key).value = search[key] || "";
  $("rerank").checked = Boolean(search.rerank);
  $("captions").checked = Boolean(search.caption);
}

function searchRequest() {
  const request = {
    kind: "search",
    q: $("q").value.trim(),
    rerank: $("rerank").checked,
    caption: $("captions").checked,
  };
  for (const key of FILTERS) request[key] = $(key).value;
  return request;
}

function remember(request, push) {
  // A new search is a new history entry; paging and reruns are not.
  const params = KINDS[request.kind].url(request).toString();
  const address = location.pathname + (params ? `?${params}` : "");
  // The history entry keeps what the address cannot: an upload, a photo's name.
  const entry = request.kind === "upload" ? { upload: request.upload } : { name: request.name };
  if (push) history.pushState(entry, "", address);
  else history.replaceState(entry, "", address);
}

// ---------------------------------------------------------------- searching

function scoreName(page) {
  return page && page.ranked_by === "clip_score" ? "CLIPScore (0 to 2.5)" : "cosine (-1 to 1)";
}

function scoreKind(page) {
  return page && page.ranked_by === "clip_score" ? "CLIPScore" : "cosine";
}

function summary(request, page, seconds) {
  const what = KINDS[request.kind].describe(request);
  if (state.results.length === 0) {
    return `Nothing matches ${what}. Try other words, or clear the filters.`;
  }
  const more = page.has_more ? "" : " (all)";
  const parts = [`${state.results.length} photos${more} for ${what} in ${seconds} s, ranked by ${scoreName(page)}.`];
  const best = state.results[0];
  if (best.weak) {
    parts.push(
      `None matches well (best cosine ${formatScore(best.cosine)}; a real match here ` +
      `reaches ${formatScore(page.weak_below)}). These are the closest.`,
    );
  }
  if (page.notice) parts.push(`(${page.notice}.)`);
  return parts.join(" ");
}

async function run(request, offset, { push = true } = {}) {
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  const started = performance.now();
  const kind = KINDS[request.kind];
  busy(true, offset ? "Loading more…" : `Searching for ${kind.describe(request)}…`);
  try {
    const params = new URLSearchParams({ k: PAGE_SIZE, offset });
    const page = await kind.fetch(request, params, controller.signal);
    state.request = request;
    state.offset = offset;
    state.page = page;
    if (offset === 0) {
      state.results = [];
      remember(request, push);
      showInForm(request);
    }
    state.results.push(...page.results);
    render(offset);
    $("more").hidden = !page.has_more;
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    say(summary(request, page, seconds));
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
  if (request.q.length > MAX_QUERY) {
    fail(`The query is ${request.q.length} characters long; keep it under ${MAX_QUERY}.`);
    return;
  }
  run(request, 0);
});

$("upload").addEventListener("change", () => {
  const input = $("upload");
  const file = input.files[0];
  input.value = ""; // so that choosing the same file again is a change too
  if (!file) return;
  uploadCount += 1;
  uploads.set(uploadCount, file);
  run({ kind: "upload", file, upload: uploadCount }, 0);
});

$("more").addEventListener("click", async () => {
  const next = state.results.length;
  if (await run(state.request, state.offset + PAGE_SIZE)) focusCard(next);
});

window.addEventListener("popstate", (event) => {
  const request = requestFromUrl(location.search, event.state);
  if (request) {
    run(request, 0, { push: false });
    return;
  }
  if (state.controller) state.controller.abort();
  state.request = null;
  state.results = [];
  render(0);
  showInForm(null);
  $("more").hidden = true;
  say(event.state && event.state.upload ? "Choose the photo again to search like it." : "");
});

// ---------------------------------------------------------------- the grid

function formatScore(value) {
  return value.toFixed(3);
}

function card(result, index) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = result.weak ? "card weak" : "card";
  button.dataset.index = String(index);
  button.tabIndex = -1;
  const img = document.createElement("img");
  img.src = here(result.thumbnail);
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
  score.title = scoreName(state.page) + (result.weak ? ": a weak match" : "");
  label.append(name, score);
  button.append(img, label);
  if (result.caption) {
    const caption = document.createElement("span");
    caption.className = "caption";
    caption.textContent = result.caption;
    button.append(caption);
  }
  const weak = result.weak ? ", weak match" : "";
  button.setAttribute("aria-label", `${result.name}, ${scoreKind(state.page)} ${formatScore(result.score)}${weak}`);
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

function scoreText(result) {
  const parts = [];
  if (state.page && state.page.ranked_by === "clip_score") {
    parts.push(`CLIPScore ${formatScore(result.score)} of 2.5`, `cosine ${formatScore(result.cosine)}`);
  } else {
    parts.push(`cosine ${formatScore(result.cosine)}`);
    if (result.clip_score !== null) parts.push(`CLIPScore ${formatScore(result.clip_score)} of 2.5`);
  }
  if (result.weak) parts.push("a weak match");
  return parts.join(" · ");
}

async function openViewer(index) {
  const result = state.results[index];
  state.opened = { result, index };
  $("viewer-img").src = here(result.preview);
  $("viewer-img").alt = result.caption || result.name;
  $("viewer-title").textContent = result.name;
  $("viewer-path").textContent = result.path;
  $("viewer-score").textContent = scoreText(result);
  $("viewer-size").textContent = result.width ? `${result.width} × ${result.height}` : "–";
  $("viewer-date").textContent = result.taken_at ? formatDate(result.taken_at) : "…";
  $("viewer-caption").textContent = result.caption || "–";
  $("caption-btn").hidden = Boolean(result.caption);
  $("original").href = here(result.file);
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

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function describeImage(result) {
  // While the captioning model loads the server answers 503 with Retry-After: wait
  // that long and ask again, a few times; a model that failed says when it retries.
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await api(`/api/images/${result.id}/caption`);
    } catch (err) {
      const soon = err.status === 503 && err.retryAfter && err.retryAfter <= 10;
      if (!soon || attempt >= 24) throw err;
      if (state.opened && state.opened.result === result) {
        $("viewer-caption").textContent = `${err.message} Trying again in ${err.retryAfter} s…`;
      }
      await sleep(err.retryAfter * 1000);
    }
  }
}

$("caption-btn").addEventListener("click", async () => {
  const { result } = state.opened;
  const button = $("caption-btn");
  button.disabled = true;
  $("viewer-caption").textContent = "Describing…";
  try {
    const body = await describeImage(result);
    result.caption = body.caption;
    if (state.opened && state.opened.result === result) {
      $("viewer-caption").textContent = body.caption;
      button.hidden = true;
    }
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
  $("viewer-img").dataset.preview = here(result.preview);
}

async function locateIn(result, q) {
  // As for captions: while the CLIPSeg model loads the server answers 503 with
  // Retry-After; wait that long and ask again, a few times.
  const path = `/api/images/${result.id}/where?q=${encodeURIComponent(q)}`;
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await api(path);
    } catch (err) {
      const soon = err.status === 503 && err.retryAfter && err.retryAfter <= 10;
      if (!soon || attempt >= 24) throw err;
      if (state.opened && state.opened.result === result) {
        $("viewer-where").textContent = `${err.message} Trying again in ${err.retryAfter} s…`;
      }
      await sleep(err.retryAfter * 1000);
    }
  }
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
    const body = await locateIn(result, q);
    if (!state.opened || state.opened.result !== result) return;
    const peak = body.score.toFixed(2);
    $("viewer-where").textContent = body.found
      ? `“${body.text}” found (peak ${peak}), box ${body.box.join(", ")}`
      : `“${body.text}” not found (peak ${peak})`;
    img.src = here(body.overlay);
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

async function start() {
  await takeTokenFromUrl();
  loadCollection();
  const request = requestFromUrl(location.search, history.state);
  if (request) run(request, 0, { push: false });
  $("q").focus();
}

start();
