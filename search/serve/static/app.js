// xmodal's search page: state in the URL, likes and dislikes as chips, results as a grid of cards; a query typed,
// a photo, or a spoken query (the microphone button: recorded here, heard by the server, searched as its text).
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { q: "", target: "image", mode: "hybrid", where: "", like: [], dislike: [], k: 24, index: "", image: null };
const MODES = ["hybrid", "vector", "lexical"]; // how a text is matched where the index has words (search/hybrid.py)
// A hit's score parts, as its details name them: a product's photo and description, a text's meaning and words.
const PARTS = { image: "image score", text: "text score", vector: "vector score", words: "word score" };
const labels = new Map(); // an item's reference (its key, e.g. sku:A12, else its row id) -> a short name, for the chips
let described = []; // what /indexes says of each index: its targets, and the fields a filter can name
const BUILT_IN = ["modality", "path", "width", "height", "size"]; // the filter's own columns (search/filters.py)
let latestSearch = 0; // answers can come back out of order: only the latest search may draw the list
// Spoken queries: what /indexes says of voice on the server, and the recording under way.
const voice = { available: false, maxSeconds: 30, recorder: null, starting: false, started: 0, ticker: 0, stopper: 0 };

function readUrl() {
  const params = new URLSearchParams(location.search);
  state.q = params.get("q") || "";
  state.target = params.get("target") || state.target;
  state.where = params.get("where") || "";
  state.mode = MODES.includes(params.get("mode")) ? params.get("mode") : "hybrid";
  state.index = params.get("index") || "";
  state.k = Number(params.get("k")) || 24;
  // Likes are kept as references: a key (sku:A12) where the item's table has an id column, so a bookmarked
  // page names the same product after its table is indexed again; else a row id.
  state.like = params.getAll("like").filter((ref) => ref.trim() !== "");
  state.dislike = params.getAll("dislike").filter((ref) => ref.trim() !== "");
}

function writeUrl(push) {
  const params = new URLSearchParams();
  if (state.q) params.set("q", state.q);
  params.set("target", state.target);
  if (state.mode !== "hybrid") params.set("mode", state.mode);
  if (state.where) params.set("where", state.where);
  if (state.index) params.set("index", state.index);
  if (state.k !== 24) params.set("k", String(state.k));
  state.like.forEach((id) => params.append("like", id));
  state.dislike.forEach((id) => params.append("dislike", id));
  const url = `${location.pathname}?${params}`;
  if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
}

function showForm() {
  $("#q").value = state.q;
  $("#where").value = state.where;
  showFilterHint();
  document.querySelectorAll("input[name=target]").forEach((radio) => { radio.checked = radio.value === state.target; });
  showMode();
  renderChips();
}

function hasQuery() {
  return Boolean(state.q || state.image || state.like.length || state.dislike.length);
}

async function call(url, options) {
  const response = await fetch(url, options);
  if (response.status === 401) {
    await signIn();
    return call(url, options);
  }
  let body = {};
  try { body = await response.json(); } catch (_) { body = { error: `the server answered ${response.status}` }; }
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  return body;
}

function signIn() {
  return new Promise((resolve) => {
    const dialog = $("#signin");
    const form = $("#signin-form");
    form.onsubmit = async (event) => {
      event.preventDefault();
      const answer = await fetch("/session", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: $("#token").value }) });
      if (answer.ok) { dialog.close(); resolve(); return; }
      $("#signin-error").textContent = "That token is not right.";
      $("#signin-error").hidden = false;
    };
    if (!dialog.open) dialog.showModal();
    $("#token").focus();
  });
}

function refinements() {
  // Everything of the page's state but its query (a text, a photo or a recording): target, filter, likes...
  const request = { target: state.target, k: state.k, like: state.like, dislike: state.dislike };
  if (hasWords()) request.mode = state.mode; // an index without words is searched by meaning alone
  if (state.where) request.where = state.where;
  if (state.index) request.index = state.index;
  return request;
}

function fitMode() {
  // Exact words rank by the words alone: a photo or liked examples need the meaning too, shown in the control.
  if (state.mode === "lexical" && (state.image || state.like.length || state.dislike.length)) {
    state.mode = "hybrid";
    showMode();
  }
}

async function search(push = true) {
  fitMode();
  writeUrl(push);
  renderChips();
  showError("");
  if (!hasQuery()) { latestSearch++; $("#results").replaceChildren(); $("#status").textContent = ""; return; }
  const request = refinements();
  if (state.q) request.text = state.q;
  $("#status").textContent = "Searching...";
  const mine = ++latestSearch;
  try {
    let body;
    if (state.image) {
      const form = new FormData();
      form.append("request", JSON.stringify(request));
      form.append("image", state.image.file, state.image.name);
      body = await call("/search/upload", { method: "POST", body: form });
    } else {
      body = await call("/search", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request) });
    }
    if (mine === latestSearch) renderHits(body);
  } catch (error) {
    if (mine !== latestSearch) return;
    $("#status").textContent = "";
    $("#results").replaceChildren();
    showError(error.message);
  }
}

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
  const aboutFilter = /filter|column/.test(message);
  $("#where").setAttribute("aria-invalid", aboutFilter ? "true" : "false");
}

function renderHits(body) {
  const list = $("#results");
  const cards = body.hits.map(renderCard);
  list.replaceChildren(...cards);
  const noun = state.target === "text" ? "text" : state.target === "product" ? "product" : "image";
  $("#status").textContent = body.count
    ? `${body.count} ${noun}${body.count === 1 ? "" : "s"} in ${body.took_ms} ms`
    : `No ${noun}s match.`;
  showTranslation(body);
}

function showTranslation(body) {
  // A query the index's model cannot read is searched in English: say what was searched.
  const line = $("#translation");
  line.textContent = body.translation
    ? `Searched as: \u201c${body.translation}\u201d (translated from ${body.language})` : "";
  line.hidden = !body.translation;
}

function hasPhoto(hit) {
  // A product's scores name the parts it holds: without an image score its photo was missing or unreadable
  // when indexed, and its path names a file that is not served. Such a product is shown by its text alone.
  // Found by its words alone (exact words), it names no part: its thumbnail is asked for, and a failure hides it.
  if (hit.modality === "product") {
    const parts = hit.scores || {};
    return Boolean(hit.path && ("image" in parts || !("text" in parts)));
  }
  return Boolean(hit.path);
}

function renderCard(hit) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  const name = hit.modality === "image" ? baseName(hit.path) : (hit.metadata.title || hit.text || "");
  labels.set(reference(hit), shorten(name, 28));
  card.dataset.rowId = hit.row_id;
  if (hasPhoto(hit)) {
    const img = card.querySelector("img");
    img.src = `/thumbnails/${hit.row_id}${state.index ? `?index=${encodeURIComponent(state.index)}` : ""}`;
    img.alt = name;
    img.onerror = () => card.classList.add("no-photo");
  } else {
    card.classList.add("no-photo");
  }
  card.querySelector(".rank").textContent = `#${hit.rank}`;
  card.querySelector(".score").textContent = `score ${hit.score.toFixed(3)}`;
  card.querySelector(".row").textContent = `row ${hit.row_id}`;
  const text = card.querySelector(".text");
  text.textContent = hit.modality === "image" ? baseName(hit.path) : hit.text;
  if (hit.path) text.title = hit.path;
  const fields = card.querySelector(".fields");
  const shown = Object.entries(hit.metadata || {}).filter(([, v]) => v !== null && v !== "").slice(0, 6);
  if (hit.scores) shown.push(...Object.entries(hit.scores).map(([part, v]) => [PARTS[part] || `${part} score`, v.toFixed(3)]));
  for (const [key, value] of shown) {
    const term = document.createElement("dt"); term.textContent = key;
    const detail = document.createElement("dd"); detail.textContent = String(value);
    fields.append(term, detail);
  }
  card.querySelector(".more").addEventListener("click", () => {
    Object.assign(state, { q: "", image: null, like: [reference(hit)], dislike: [] });
    showForm();
    search();
  });
  card.querySelector(".like").addEventListener("click", () => feedback("like", reference(hit)));
  card.querySelector(".dislike").addEventListener("click", () => feedback("dislike", reference(hit)));
  return card;
}

function reference(hit) {
  return hit.reference || String(hit.row_id);
}

function feedback(kind, ref) {
  const other = kind === "like" ? "dislike" : "like";
  state[other] = state[other].filter((x) => x !== ref);
  if (!state[kind].includes(ref)) state[kind].push(ref);
  search();
}

function renderChips() {
  const chips = [];
  if (state.image) chips.push(chip(`Photo: ${shorten(state.image.name, 24)}`, "query", () => { state.image = null; }));
  for (const ref of state.like) {
    chips.push(chip(`Liked: ${labels.get(ref) || shownReference(ref)}`, "liked", () => { state.like = state.like.filter((x) => x !== ref); }));
  }
  for (const ref of state.dislike) {
    chips.push(chip(`Disliked: ${labels.get(ref) || shownReference(ref)}`, "disliked", () => { state.dislike = state.dislike.filter((x) => x !== ref); }));
  }
  $("#chips").replaceChildren(...chips);
  $("#feedback").hidden = chips.length === 0;
}

function shownReference(ref) {
  return /^\d+$/.test(ref) ? `row ${ref}` : ref;
}

function chip(text, kind, remove) {
  const item = document.createElement("li");
  item.className = `chip ${kind}`;
  item.append(document.createTextNode(text));
  const button = document.createElement("button");
  button.type = "button";
  button.setAttribute("aria-label", `Remove ${text}`);
  button.textContent = "\u00d7";
  button.addEventListener("click", () => { remove(); search(); });
  item.append(button);
  return item;
}

function useImage(file) {
  if (!file || !file.type.startsWith("image/")) { showError("That is not an image; drop or pick a photo."); return; }
  state.image = { file, name: file.name || "pasted image" };
  state.q = "";
  $("#q").value = "";
  search();
}

function baseName(path) { return path ? path.split("/").pop() : ""; }
function shorten(text, size) { return text.length > size ? `${text.slice(0, size - 1)}\u2026` : text; }

// ---- spoken queries -----------------------------------------------------------------------------------------

function showVoice(info) {
  // From /indexes: whether the server hears spoken queries; the button is disabled, with its reason, where not.
  const button = $("#mic");
  voice.available = Boolean(info && info.available);
  voice.maxSeconds = (info && info.max_seconds) || 30;
  if (!voice.available) {
    button.disabled = true;
    const reason = (info && info.reason) || "voice search is unavailable: this server does not say why";
    voiceLine(`${reason[0].toUpperCase()}${reason.slice(1)}${/[.)]$/.test(reason) ? "" : "."}`, "off");
    return;
  }
  const missing = microphoneMissing();
  button.disabled = Boolean(missing);
  if (missing) voiceLine(missing, "off");
}

function microphoneMissing() {
  // Browsers give a microphone to https:// pages and to http://localhost only; some give none at all.
  if (!window.isSecureContext) {
    return "Voice search needs a microphone, and this browser gives none to a page over plain http: " +
      "open this page by https:// (or on the server itself, at http://localhost).";
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.MediaRecorder) {
    return "Voice search needs a microphone, and this browser gives none to pages; type the query instead.";
  }
  return "";
}

function voiceLine(message, kind = "") {
  const line = $("#voice");
  line.textContent = message;
  line.className = `voice ${kind}`.trim();
  line.hidden = !message;
}

function forgetHeard() {
  // A new query typed: what was heard before, and its note, no longer describe it (a reason voice is off stays).
  if (!voice.recorder && !$("#voice").classList.contains("off")) voiceLine("");
  showNote("");
}

function showNote(note) {
  $("#note").textContent = note || "";
  $("#note").hidden = !note;
}

function clock(seconds) {
  const whole = Math.floor(seconds);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

async function toggleRecording() {
  if (voice.recorder) { stopRecording(); return; }
  if (voice.starting || !voice.available) return;
  const missing = microphoneMissing();
  if (missing) { voiceLine(missing, "off"); return; }
  voice.starting = true;
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    voiceLine(microphoneProblem(error), "error");
    return;
  } finally {
    voice.starting = false;
  }
  const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/mp4"]
    .find((candidate) => MediaRecorder.isTypeSupported(candidate));
  const recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
  const chunks = [];
  recorder.addEventListener("dataavailable", (event) => { if (event.data.size) chunks.push(event.data); });
  recorder.addEventListener("stop", () => {
    // Pressed to stop, stopped at the limit, or ended by the browser (a microphone unplugged): sent all the same.
    if (voice.recorder === recorder) stopRecording();
    stream.getTracks().forEach((track) => track.stop());
    const kind = recorder.mimeType || type || "audio/webm";
    const recording = new Blob(chunks, { type: kind });
    if (!recording.size) { voiceLine("Nothing was recorded: press the microphone, speak, then press it again.", "error"); return; }
    searchByVoice(recording, kind.includes("mp4") ? "m4a" : kind.includes("ogg") ? "ogg" : "webm");
  });
  recorder.start();
  voice.recorder = recorder;
  voice.started = performance.now();
  showRecording(true);
  showNote("");
  voiceLine(`Recording: say what you are looking for, then press the microphone again to stop (it stops by itself ` +
    `at ${clock(voice.maxSeconds)}).`, "recording");
  voice.ticker = setInterval(tick, 250);
  // The server refuses a recording over its limit: stop a little before it.
  voice.stopper = setTimeout(stopRecording, Math.max(500, voice.maxSeconds * 1000 - 500));
}

function tick() {
  $("#mic-timer").textContent = clock((performance.now() - voice.started) / 1000);
}

function stopRecording() {
  const recorder = voice.recorder;
  if (!recorder) return;
  voice.recorder = null;
  clearInterval(voice.ticker);
  clearTimeout(voice.stopper);
  showRecording(false);
  if (recorder.state !== "inactive") recorder.stop(); // its "stop" event sends the recording
}

function showRecording(on) {
  const button = $("#mic");
  button.classList.toggle("recording", on);
  button.setAttribute("aria-pressed", on ? "true" : "false");
  button.setAttribute("aria-label", on ? "Stop recording" : "Search by voice");
  button.title = on ? "Stop recording, and search for what you said" : "Search by voice: press, speak, press again";
  if (on) $("#mic-timer").textContent = "0:00";
}

function microphoneProblem(error) {
  const name = error && error.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "The microphone was refused: allow it for this site in the browser (the icon in the address bar), " +
      "then press the microphone again.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return "No microphone was found: plug one in, or type the query instead.";
  }
  if (name === "NotReadableError") return "The microphone is in use by another program, or failed; try again.";
  return `The microphone could not be started (${(error && error.message) || name || "unknown error"}).`;
}

async function searchByVoice(recording, extension) {
  // Sent with the page's other state; the server hears it and searches its text, as if typed.
  Object.assign(state, { q: "", image: null, where: $("#where").value.trim() });
  fitMode();
  $("#q").value = "";
  renderChips();
  showError("");
  voiceLine("Hearing what you said...", "busy");
  $("#status").textContent = "Searching...";
  const mine = ++latestSearch;
  const form = new FormData();
  form.append("request", JSON.stringify(refinements()));
  form.append("audio", recording, `recording.${extension}`);
  try {
    const body = await call("/search/upload", { method: "POST", body: form });
    if (mine !== latestSearch) return;
    state.q = body.transcript.text;
    $("#q").value = state.q;
    writeUrl(true);
    renderHits(body);
    const heard = body.transcript;
    voiceLine(`Heard (${heard.language}${heard.translated ? ", translated" : ""}): \u201c${heard.text}\u201d`, "heard");
    showNote(body.note);
  } catch (error) {
    if (mine !== latestSearch) return;
    $("#status").textContent = "";
    voiceLine("");
    showError(error.message); // the list of the last search stays: press the microphone to try again
  }
}

function currentIndex() {
  return described.find((index) => index.name === state.index) || described[0];
}

function filterExample(fields, target) {
  // Two of the index's own columns where it has them (a number, then a text), else the photos' size.
  const own = Object.entries(fields || {}).filter(([name]) => !BUILT_IN.includes(name));
  const number = own.find(([name, type]) => /int|float|double|decimal/.test(type) && !/^id$|_id$/i.test(name));
  const text = own.find(([, type]) => /string|utf8/.test(type));
  const parts = [];
  if (number) parts.push(`${number[0]} < 100`);
  if (text) parts.push(`${text[0]} == '\u2026'`);
  if (!parts.length && target !== "text") parts.push("width > 500");
  return parts.length ? `e.g. ${parts.join(" and ")}` : "this index has no metadata to filter by";
}

function hasWords() {
  // From /indexes: a word index over every item, so a text can be matched by its words (hybrid, lexical).
  const index = currentIndex();
  return Boolean(index && index.words);
}

function showMode() {
  // Offered only where the index has words; the choice stays in the URL for an index that has them.
  $(".modes").hidden = !hasWords();
  document.querySelectorAll("input[name=mode]").forEach((radio) => { radio.checked = radio.value === state.mode; });
}

function showFilterHint() {
  const index = currentIndex();
  if (index) $("#where").placeholder = filterExample(index.fields[state.target], state.target);
}

async function loadIndexes() {
  try {
    const body = await call("/indexes", {});
    described = body.indexes;
    const select = $("#index");
    if (body.indexes.length > 1) {
      select.replaceChildren(...body.indexes.map((index) => new Option(index.name, index.name)));
      select.value = state.index || body.indexes[0].name;
      select.parentElement.hidden = false;
    }
    showTargets(!new URLSearchParams(location.search).get("target"));
    showVoice(body.voice);
  } catch (error) { showError(error.message); }
}

function showTargets(chooseTarget) {
  // The kinds of item the current index holds; `chooseTarget`: pick its default (products, else the first).
  const current = currentIndex();
  if (current && chooseTarget) {
    state.target = current.targets.includes("product") ? "product" : current.targets[0] || "image";
  }
  document.querySelectorAll("input[name=target]").forEach((radio) => {
    radio.disabled = current ? !current.targets.includes(radio.value) : false;
    radio.parentElement.hidden = radio.disabled;
    radio.checked = radio.value === state.target;
  });
  showMode();
  showFilterHint();
}

function wire() {
  $("#search").addEventListener("submit", (event) => {
    event.preventDefault();
    state.q = $("#q").value.trim();
    state.where = $("#where").value.trim();
    if (state.q) state.image = null;
    forgetHeard();
    search();
  });
  $("#mic").addEventListener("click", toggleRecording);
  document.querySelectorAll("input[name=target]").forEach((radio) => radio.addEventListener("change", () => {
    state.target = radio.value;
    showFilterHint();
    search();
  }));
  document.querySelectorAll("input[name=mode]").forEach((radio) => radio.addEventListener("change", () => {
    state.mode = radio.value;
    search();
  }));
  $("#index").addEventListener("change", (event) => {
    Object.assign(state, { index: event.target.value, like: [], dislike: [] });
    showTargets(!currentIndex().targets.includes(state.target));
    search();
  });
  $("#file").addEventListener("change", (event) => useImage(event.target.files[0]));
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("dragging"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    useImage(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) { event.preventDefault(); useImage(file); }
  });
  $("#clear").addEventListener("click", () => {
    Object.assign(state, { q: "", image: null, like: [], dislike: [], where: "" });
    forgetHeard();
    showForm();
    search();
  });
  window.addEventListener("popstate", () => { readUrl(); showForm(); search(false); });
}

async function start() {
  readUrl();
  wire();
  await loadIndexes();
  showForm();
  if (hasQuery()) search(false);
  $("#q").focus();
}

start();
