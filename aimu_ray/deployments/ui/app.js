// aimu_ray's dashboard: reads GET /v1/models, GET /v1/cluster and GET /metrics (the routes any client may call)
// every few seconds, and sends playground requests to the OpenAI-style routes. Plain JS, no build step.
"use strict";

const REFRESH_MS = 3000;
const RATE_WINDOW_MS = 30000;          // rates and p50 are over the metrics samples of the last 30 s
const KEY_STORE = "aimu_ray.key";

const $ = (id) => document.getElementById(id);
const state = { cards: [], samples: [], busy: false, again: false, modelIds: "" };

// ---------------------------------------------------------------- HTTP

class Unauthorized extends Error {}

function apiUrl(path) {
  return new URL(path, document.baseURI).toString();     // relative: the app may sit under a route prefix
}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY_STORE);
  const headers = { ...(options.headers || {}) };
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(apiUrl(path), { ...options, headers });
  if (response.status === 401) {
    const message = await errorMessage(response);
    if (key === sessionStorage.getItem(KEY_STORE)) {      // not the answer to a key already replaced
      askForKey(key ? `The server answered 401 Unauthorized: ${message}` : "This app needs an API key.");
    }
    throw new Unauthorized(message);
  }
  if (!response.ok) throw new Error(`${response.status}: ${await errorMessage(response)}`);
  return response;
}

async function errorMessage(response) {
  const text = await response.text();
  try {
    return JSON.parse(text).error.message;
  } catch {
    return text.slice(0, 300) || response.statusText;
  }
}

async function postJson(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

// ---------------------------------------------------------------- the key

function askForKey(message) {
  $("auth-message").textContent = message || "";
  if (!$("key-panel").hidden) return;                 // already asking: keep what is being typed
  $("key-panel").hidden = false;
  $("key-input").value = "";
  $("key-input").focus();
}

function setupKey() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
    $("key-panel").hidden = true;
    $("change-key").hidden = false;
    refresh(true);
  });
  $("change-key").addEventListener("click", () => askForKey(""));
  $("change-key").hidden = !sessionStorage.getItem(KEY_STORE);
}

// ---------------------------------------------------------------- Prometheus text format

// Parses the text exposition format into [{name, labels, value}]; comments, timestamps and bad lines are skipped.
function parseMetrics(text) {
  const samples = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const sample = parseSample(line);
    if (sample) samples.push(sample);
  }
  return samples;
}

function parseSample(line) {
  const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
  if (!name) return null;
  let i = name[0].length;
  const labels = {};
  if (line[i] === "{") {
    i += 1;
    while (true) {
      while (line[i] === " " || line[i] === ",") i += 1;
      if (line[i] === "}") { i += 1; break; }
      const label = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i));
      if (!label) return null;
      i += label[0].length;
      while (line[i] === " ") i += 1;
      if (line[i] !== "=" ) return null;
      i += 1;
      while (line[i] === " ") i += 1;
      if (line[i] !== '"') return null;
      i += 1;
      let value = "";
      while (i < line.length && line[i] !== '"') {
        if (line[i] === "\\" && i + 1 < line.length) {
          const next = line[i + 1];
          value += next === "n" ? "\n" : next;
          i += 2;
        } else {
          value += line[i];
          i += 1;
        }
      }
      if (line[i] !== '"') return null;
      i += 1;
      labels[label[0]] = value;
    }
  }
  const number = line.slice(i).trim().split(/\s+/)[0];
  const value = number === "+Inf" ? Infinity : number === "-Inf" ? -Infinity : Number(number);
  if (number === undefined || number === "" || (Number.isNaN(value) && number !== "NaN")) return null;
  return { name: name[0], labels, value };
}

// Per model: counters summed over routes and statuses, the latency histogram summed over routes, and gauges.
function byModel(samples) {
  const models = {};
  const of = (name) => (models[name] ||= { requests: 0, tokens: 0, sum: 0, count: 0, buckets: {}, inFlight: 0,
                                          evictions: 0 });
  for (const { name, labels, value } of samples) {
    if (!labels.model) continue;
    const m = of(labels.model);
    if (name === "aimu_ray_requests_total") m.requests += value;
    else if (name === "aimu_ray_tokens_total" && labels.kind === "completion") m.tokens += value;
    else if (name === "aimu_ray_request_seconds_sum") m.sum += value;
    else if (name === "aimu_ray_request_seconds_count") m.count += value;
    else if (name === "aimu_ray_request_seconds_bucket") m.buckets[labels.le] = (m.buckets[labels.le] || 0) + value;
    else if (name === "aimu_ray_requests_in_flight") m.inFlight += value;
    else if (name === "aimu_ray_evictions_total") m.evictions = value;
  }
  return models;
}

// The median from the difference of two cumulative histograms, interpolated inside its bucket as Prometheus'
// histogram_quantile does; null when no request ended between them.
function median(newer, older) {
  const bounds = Object.keys(newer).map((le) => [le === "+Inf" ? Infinity : Number(le), le])
    .sort((a, b) => a[0] - b[0]);
  const counts = bounds.map(([, le]) => (newer[le] || 0) - ((older && older[le]) || 0));
  const total = counts[counts.length - 1];
  if (!total || total <= 0) return null;
  const rank = total / 2;
  let lower = 0;
  let below = 0;
  for (let i = 0; i < bounds.length; i += 1) {
    const [upper] = bounds[i];
    if (counts[i] >= rank) {
      if (upper === Infinity) return lower;
      return lower + (upper - lower) * ((rank - below) / Math.max(counts[i] - below, 1e-9));
    }
    lower = upper;
    below = counts[i];
  }
  return null;
}

function rates(model) {
  const samples = state.samples;
  if (samples.length < 2) return {};
  const newest = samples[samples.length - 1];
  const oldest = samples[0];
  const now = newest.models[model];
  if (!now) return {};
  const then = oldest.models[model] || { requests: 0, tokens: 0, sum: 0, count: 0, buckets: {} };
  const seconds = (newest.at - oldest.at) / 1000;
  if (now.requests < then.requests || now.count < then.count) return {};    // another replica answered, or a restart
  return {
    requests: (now.requests - then.requests) / seconds,
    tokens: (now.tokens - then.tokens) / seconds,
    p50: median(now.buckets, then.buckets),
  };
}

// ---------------------------------------------------------------- refresh

async function refresh(asked = false) {
  if (!$("key-panel").hidden) return;
  if (state.busy) {                    // one at a time; one asked for meanwhile (a new key) runs right after
    state.again ||= asked;
    return;
  }
  state.busy = true;
  state.again = false;
  try {
    const [models, cluster, metrics] = await Promise.allSettled([
      api("v1/models").then((r) => r.json()),
      api("v1/cluster").then((r) => r.json()),
      fetch(apiUrl("metrics")).then((r) => (r.ok ? r.text() : Promise.reject(new Error(`metrics: ${r.status}`)))),
    ]);
    if ([models, cluster].some((r) => r.status === "rejected" && r.reason instanceof Unauthorized)) return;
    if (metrics.status === "fulfilled") {
      const at = Date.now();
      state.samples.push({ at, models: byModel(parseMetrics(metrics.value)) });
      while (state.samples.length > 2 && at - state.samples[1].at >= RATE_WINDOW_MS) state.samples.shift();
    }
    if (models.status === "fulfilled") {
      state.cards = models.value.data;
      renderModels();
      renderPlaygroundChoices();
    }
    if (cluster.status === "fulfilled") renderCluster(cluster.value);
    const failed = [models, cluster, metrics].filter((r) => r.status === "rejected").map((r) => r.reason.message);
    $("status").textContent = failed.length ? `Could not read: ${failed.join("; ")}`
      : `Updated ${new Date().toLocaleTimeString()}`;
    $("status").className = failed.length ? "error" : "muted";
  } finally {
    state.busy = false;
    if (state.again) refresh();
  }
}

// ---------------------------------------------------------------- rendering

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name === "hue") node.style.setProperty("--hue", value);
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(1)} GiB`;
  return `${Math.round(n / 1024 ** 2)} MiB`;
}

// A model's colour: the golden angle apart from the one before it in the model list, so neighbours differ.
function hue(name) {
  let index = state.cards.findIndex((card) => card.id === name);
  if (index < 0) for (const c of name) index = (Math.abs(index) * 31 + c.codePointAt(0)) % 997;
  return Math.round((215 + index * 137.5) % 360);
}

function renderCluster(view) {
  $("inventory-note").textContent = view.made_up ? "made-up inventory (AIMU_RAY_FAKE_INVENTORY)"
    : "measured on each node";
  const nodes = view.nodes.map((node) => el("div", { class: "node", "data-node": node.node_id },
    el("h3", { title: node.node_id }, `node ${node.node_id.slice(0, 12)}`,
       el("span", { class: "muted" }, node.address)),
    ...node.devices.flatMap((device) => deviceRows(device))));
  $("nodes").replaceChildren(...(nodes.length ? nodes : [el("p", { class: "muted" }, "No nodes answered.")]));
  const elsewhere = view.elsewhere.map((c) => `${c.model} #${c.replica}`);
  $("elsewhere").hidden = !elsewhere.length;
  $("elsewhere").textContent = elsewhere.length
    ? `On nodes or GPUs the inventory does not show: ${elsewhere.join(", ")}` : "";
}

function deviceRows(device) {
  const total = device.total_bytes;
  const pct = (n) => `${Math.max(0, (100 * n) / total).toFixed(3)}%`;
  const segments = device.copies.map((copy) => {
    const held = Math.max(copy.reserved_bytes, copy.used_bytes || 0);
    const share = held ? (copy.used_bytes || 0) / held : 0;
    const classes = ["segment", share > 0.5 ? "mostly-used" : "",
                     (copy.used_bytes || 0) > copy.reserved_bytes ? "over" : ""];
    const segment = el("div", { class: classes.filter(Boolean).join(" "),
                                hue: hue(copy.model), "data-model": copy.model,
                                title: `${copy.model} #${copy.replica} (${copy.state}): reserved ` +
                                       `${bytes(copy.reserved_bytes)}, measured ${bytes(copy.used_bytes)}` });
    const used = el("div", { class: "used" });
    used.style.width = `${100 * Math.min(share, 1)}%`;
    segment.style.width = pct(held);
    segment.append(used, el("span", { class: "label" }, copy.model));
    return segment;
  });
  if (device.other_bytes > 0) {
    const other = el("div", { class: "segment other", title: `held by others: ${bytes(device.other_bytes)}` });
    other.style.width = pct(device.other_bytes);
    segments.push(other);
  }
  const name = device.kind === "gpu" ? `GPU ${device.index}` : "RAM";
  const rows = [el("div", { class: "device", "data-device": name },
    el("span", { class: "device-name" }, name),
    el("div", { class: "bar", role: "img",
                "aria-label": `${name}: ${bytes(device.free_bytes)} free of ${bytes(total)}` },
       ...segments),
    el("span", { class: "device-free" }, `${bytes(device.free_bytes)} free of ${bytes(total)}`))];
  if (device.copies.length) {
    rows.push(el("div", { class: "copies" }, ...device.copies.map((copy) => el("span", { hue: hue(copy.model) },
      el("span", { class: "dot" }),
      copy.used_bytes === null
        ? `${copy.model} #${copy.replica}: ${bytes(copy.reserved_bytes)} reserved, not measured yet (${copy.state})`
        : `${copy.model} #${copy.replica}: ${bytes(copy.used_bytes)} used of ${bytes(copy.reserved_bytes)} reserved` +
          (copy.used_bytes > copy.reserved_bytes ? " (more than its share)" : "")))));
  }
  return rows;
}

function fixed(value, digits, unit = "") {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : `${value.toFixed(digits)}${unit}`;
}

function latency(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(2)} s`;
}

function renderModels() {
  const latest = state.samples.length ? state.samples[state.samples.length - 1].models : {};
  const rows = state.cards.map((card) => {
    const r = rates(card.id);
    const m = latest[card.id] || {};
    const stateCell = el("span", { class: `pill state-${card.state}`, title: card.error || "" }, card.state);
    return el("tr", { "data-model": card.id },
      el("td", { class: "model-name" }, card.id),
      el("td", {}, card.modality),
      el("td", {}, stateCell),
      el("td", { class: "num" }, card.replicas === undefined ? "remote" : String(card.replicas)),
      el("td", { class: "num" }, String(m.inFlight ?? 0)),
      el("td", { class: "num" }, fixed(r.requests, 2)),
      el("td", { class: "num" }, latency(r.p50)),
      el("td", { class: "num" }, card.modality === "text" ? fixed(r.tokens, 1) : "–"),
      el("td", { class: "num" }, card.replicas === undefined ? "–" : String(m.evictions ?? 0)));
  });
  $("models").tBodies[0].replaceChildren(...rows);
}

// ---------------------------------------------------------------- playground

// One log for every kind of model: chat turns stream into it, images and clips land in it.
const conversation = [];
const SEND = { text: sendChat, image: generateImage, audio: generateAudio };
const PLACEHOLDER = { text: "Say something…", image: "Describe an image…",
                      audio: "Describe a sound or a piece of music…" };

function renderPlaygroundChoices() {
  const ids = state.cards.map((card) => `${card.id}:${card.modality}`).join(",");
  if (ids === state.modelIds) return;
  state.modelIds = ids;
  const select = $("model-select");
  const chosen = select.value;
  select.replaceChildren(...state.cards.map((card) =>
    el("option", { value: card.id }, `${card.id} (${card.modality})`)));
  if (state.cards.some((card) => card.id === chosen)) select.value = chosen;
  showOptions();
}

function chosenCard() {
  return state.cards.find((card) => card.id === $("model-select").value);
}

// The composer's options for the chosen model's kind.
function showOptions() {
  const modality = chosenCard() ? chosenCard().modality : "text";
  for (const node of document.querySelectorAll("#play-form .options > span")) {
    node.hidden = !node.classList.contains(`for-${modality}`);
  }
  $("prompt").placeholder = PLACEHOLDER[modality] || "";
  $("send").textContent = modality === "text" ? "Send" : "Generate";
}

function entry(role, ...children) {
  $("play-empty").hidden = true;
  const node = el("div", { class: `message ${role}` }, ...children);
  $("play-log").append(node);
  $("play-log").scrollTop = $("play-log").scrollHeight;
  return node;
}

function said(model, text) {
  return entry("user", el("span", { class: "who" }, `to ${model}`), el("span", { class: "content" }, text));
}

async function send(event) {
  event.preventDefault();
  const card = chosenCard();
  const prompt = $("prompt").value.trim();
  if (!card || !prompt) return;
  $("play-error").hidden = true;
  $("send").disabled = true;
  $("prompt").value = "";
  try {
    await SEND[card.modality](card.id, prompt);
  } catch (error) {
    if (!(error instanceof Unauthorized)) {
      $("play-error").textContent = error.message;
      $("play-error").hidden = false;
    }
  } finally {
    $("send").disabled = false;
  }
}

async function sendChat(model, text) {
  conversation.push({ role: "user", content: text });
  said(model, text);
  const reply = entry("assistant streaming", el("span", { class: "who" }, model), el("span", { class: "thinking" }),
                      el("span", { class: "content" }));
  reply.dataset.chunks = "0";
  try {
    const body = { model, messages: conversation, stream: true, max_tokens: Number($("max-tokens").value) || 256 };
    const response = await postJson("v1/chat/completions", body);
    conversation.push({ role: "assistant", content: await readStream(response, reply) });
  } catch (error) {
    conversation.pop();                        // the turn failed: leave it out of the next request
    reply.remove();
    throw error;
  } finally {
    reply.classList.remove("streaming");
    reply.dataset.done = "true";
  }
}

// Reads OpenAI's SSE chunks as they arrive, appending each delta to the reply; an error event ends it.
async function readStream(response, reply) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const [thinking, content] = [reply.querySelector(".thinking"), reply.querySelector(".content")];
  let buffer = "";
  while (true) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim())
        .join("\n");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = (chunk.choices && chunk.choices[0] && chunk.choices[0].delta) || {};
      if (delta.reasoning_content) thinking.textContent += delta.reasoning_content;
      if (delta.content) {
        content.textContent += delta.content;
        reply.dataset.chunks = String(Number(reply.dataset.chunks) + 1);
        $("play-log").scrollTop = $("play-log").scrollHeight;
      }
    }
    if (done) return content.textContent;
  }
}

function numberOr(id) {
  const value = $(id).value;
  return value === "" ? undefined : Number(value);
}

async function generateImage(model, prompt) {
  said(model, prompt);
  const body = { model, prompt, response_format: "b64_json", size: $("image-size").value,
                 num_inference_steps: numberOr("steps") };
  const answer = await (await postJson("v1/images/generations", body)).json();
  entry("assistant media", el("span", { class: "who" }, model), ...answer.data.map((item) => {
    const image = el("img", { alt: prompt, src: `data:image/png;base64,${item.b64_json}` });
    image.addEventListener("load", () => image.classList.toggle("small", image.naturalWidth < 256));
    return image;
  }));
}

async function generateAudio(model, prompt) {
  said(model, prompt);
  const body = { model, prompt, response_format: "b64_json", duration_s: numberOr("audio-duration"),
                 num_inference_steps: numberOr("steps") };
  const answer = await (await postJson("v1/audio/generations", body)).json();
  entry("assistant media", el("span", { class: "who" }, model), ...answer.data.map((item) =>
    el("audio", { controls: "", preload: "auto", src: `data:audio/wav;base64,${item.b64_json}` })));
}

function setupPlayground() {
  $("model-select").addEventListener("change", showOptions);
  $("play-form").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {       // Enter sends, Shift+Enter breaks the line
      event.preventDefault();
      $("play-form").requestSubmit();
    }
  });
  $("clear").addEventListener("click", () => {
    conversation.length = 0;
    $("play-log").replaceChildren($("play-empty"));
    $("play-empty").hidden = false;
  });
  showOptions();
}

setupKey();
setupPlayground();
refresh();
setInterval(() => refresh(), REFRESH_MS);
