// The Ai-semble web console: reads the facade's /console/api and /v1 endpoints with the key the user gives
// (kept in sessionStorage, sent as the Authorization header, never in a URL) and builds every element with
// textContent: nothing a model or a caller names is ever parsed as markup.
"use strict";

const KEY_SLOT = "aisemble.console.key";
const REFRESH_MS = { models: 2000, routing: 3000, jobs: 5000 };
const $ = (id) => document.getElementById(id);

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

function row(cells, attrs) {
  const tr = el("tr", null, attrs);
  for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

function notice(text) {
  $("notice").textContent = text || "";
}

function headers(extra) {
  const key = sessionStorage.getItem(KEY_SLOT);
  const all = Object.assign({}, extra || {});
  if (key) all.Authorization = "Bearer " + key;
  return all;
}

// A fetch with the key; a failure becomes an Error carrying OpenAI's error message from the body.
async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const response = await fetch(path, opts);
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (_ignored) { /* not JSON */ }
    if (response.status === 401 || response.status === 403) showKeyNeeded(message);
    throw new Error(message);
  }
  return response;
}

function showKeyNeeded(message) {
  $("key-state").textContent = "key needed";
  $("api-key").focus();
  notice(message);
}

// Server-sent events from a fetch body: calls onData(parsed JSON) per `data:` event until [DONE].
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        const parsed = JSON.parse(data);
        if (parsed.error) throw new Error(parsed.error.message);
        onData(parsed);
      }
    }
  }
}

const fixed = (value, digits) => (value === null || value === undefined ? "-" : Number(value).toFixed(digits));
const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "-");

// ---- models -------------------------------------------------------------------------------------------------
let knownModels = [];

async function refreshModels() {
  const body = await (await api("/console/api/models")).json();
  knownModels = body.models;
  const rows = body.models.map((m) => {
    const health = el("td", m.health, { class: "health " + m.health.replace(" ", "-") });
    return row(
      [el("td", m.name), m.task, m.provider, health, m.requests, m.errors, fixed(m.latency_p50_ms, 1),
        fixed(m.latency_p95_ms, 1), m.tokens_per_second ? fixed(m.tokens_per_second, 1) : "-", fixed(m.cost_total, 6)],
      { "data-model": m.name },
    );
  });
  $("models-body").replaceChildren(...rows);
  $("models-updated").textContent =
    "updated " + new Date().toLocaleTimeString() + " from " + body.replicas + " of " + body.replicas_total + " gateway(s)";
  fillPicker($("chat-model"), "text-generation");
  fillPicker($("detect-model"), "object-detection");
}

function fillPicker(select, task) {
  const wanted = ["auto", ...knownModels.filter((m) => m.task === task).map((m) => m.name)];
  const have = Array.from(select.options).map((o) => o.value);
  if (wanted.join("\n") === have.join("\n")) return;
  const chosen = select.value;
  select.replaceChildren(...wanted.map((name) => el("option", name, { value: name })));
  if (wanted.includes(chosen)) select.value = chosen;
}

// ---- routing decisions --------------------------------------------------------------------------------------
async function refreshRouting() {
  const body = await (await api("/console/api/decisions?limit=50")).json();
  const rows = body.decisions.map((d) => {
    const reason = el("td");
    reason.append(el("span", d.selection.reason));
    const verdicts = el("details");
    verdicts.append(el("summary", d.candidates.length + " candidates"));
    const list = el("ul");
    for (const c of d.candidates) {
      list.append(el("li", c.model + (c.eligible ? " (score " + fixed(c.score, 3) + "): " : " (ineligible): ") + c.reason));
    }
    verdicts.append(list);
    reason.append(verdicts);
    const call = d.method.split("/").pop() + " · " + d.task;
    return row([clock(d.time), call, el("td", d.selection.model), d.domain + " (" + d.domain_source + ")",
      d.language || "-", reason]);
  });
  $("routing-body").replaceChildren(...rows);
  $("routing-updated").textContent = body.decisions.length + " shown, updated " + new Date().toLocaleTimeString();
}

// ---- fine-tuning jobs and their loss ------------------------------------------------------------------------
let followed = null; // { id, controller, train: [[step, loss]], validation: [[step, loss]] }

async function refreshJobs() {
  const body = await (await api("/console/api/jobs")).json();
  const rows = body.jobs.map((j) => {
    const link = el("button", j.job_id, { type: "button", class: "link" });
    link.addEventListener("click", () => follow(j.job_id));
    const id = el("td");
    id.append(link);
    const progress = j.total_steps ? j.step + "/" + j.total_steps + " (" + Math.round(j.fraction * 100) + "%)" : "-";
    return row([id, j.state, j.base_model, j.registered_model_name || j.result_model_name || "-", progress],
      { "data-job": j.job_id });
  });
  $("jobs-body").replaceChildren(...rows);
  $("jobs-updated").textContent = body.jobs.length + " job(s), updated " + new Date().toLocaleTimeString();
  if (!followed && body.jobs.length) follow(body.jobs[0].job_id);
}

async function follow(jobId) {
  if (followed) followed.controller.abort();
  const job = { id: jobId, controller: new AbortController(), train: [], validation: [], state: "" };
  followed = job;
  $("loss-caption").textContent = "Job " + jobId + ": waiting for its events";
  drawLoss(job);
  try {
    const response = await api("/console/api/jobs/" + encodeURIComponent(jobId) + "/events",
      { signal: job.controller.signal });
    await readEvents(response, (event) => {
      if (event.kind === "progress" && event.train_loss !== null) job.train.push([event.step, event.train_loss]);
      if (event.kind === "evaluation") job.validation.push([event.step, event.validation_loss]);
      if (event.kind === "state_change") {
        job.state = event.state;
        refreshJobs().catch((error) => notice("jobs: " + error.message));
      }
      drawLoss(job);
    });
  } catch (error) {
    if (error.name !== "AbortError") notice("job " + jobId + ": " + error.message);
  }
}

function drawLoss(job) {
  const chart = $("loss-chart");
  const [width, height, pad] = [600, 300, 40];
  const points = job.train.concat(job.validation);
  const parts = [];
  parts.push(svg("rect", { x: pad, y: 10, width: width - pad - 10, height: height - pad - 10, class: "frame" }));
  if (points.length) {
    const maxStep = Math.max(1, ...points.map((p) => p[0]));
    const maxLoss = Math.max(...points.map((p) => p[1])) * 1.05 || 1;
    const x = (step) => pad + (step / maxStep) * (width - pad - 10);
    const y = (loss) => height - pad - (loss / maxLoss) * (height - pad - 20);
    for (const [series, cls] of [[job.train, "train"], [job.validation, "validation"]]) {
      if (!series.length) continue;
      parts.push(svg("polyline", { points: series.map((p) => x(p[0]) + "," + y(p[1])).join(" "), class: cls }));
      for (const p of series) parts.push(svg("circle", { cx: x(p[0]), cy: y(p[1]), r: 2.5, class: cls }));
    }
    const label = (text, attrs) => { const t = svg("text", attrs); t.textContent = text; return t; };
    parts.push(label("step " + maxStep, { x: width - 10, y: height - 12, "text-anchor": "end" }));
    parts.push(label("0", { x: pad - 6, y: height - pad, "text-anchor": "end" }));
    parts.push(label(maxLoss.toFixed(2), { x: pad - 6, y: 20, "text-anchor": "end" }));
  }
  chart.replaceChildren(...parts);
  const last = job.train.length ? job.train[job.train.length - 1] : null;
  $("loss-caption").textContent = "Job " + job.id + (job.state ? " (" + job.state + ")" : "") + ": " +
    job.train.length + " training points" + (last ? ", last loss " + last[1].toFixed(4) + " at step " + last[0] : "") +
    ", " + job.validation.length + " validation points";
}

// ---- playground: chat ---------------------------------------------------------------------------------------
async function sendChat(event) {
  event.preventDefault();
  const output = $("chat-output");
  output.textContent = "";
  $("chat-meta").textContent = "streaming...";
  $("chat-send").disabled = true;
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: $("chat-model").value,
        messages: [{ role: "user", content: $("chat-prompt").value }],
        max_tokens: Number($("chat-max").value),
        temperature: Number($("chat-temperature").value),
        stream: true,
        stream_options: { include_usage: true },
      }),
    });
    const model = response.headers.get("x-aisemble-model") || "";
    const reason = decodeURIComponent(response.headers.get("x-aisemble-selection-reason") || "");
    let usage = null;
    await readEvents(response, (chunk) => {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) output.append(document.createTextNode(choice.delta.content));
      }
    });
    $("chat-meta").textContent = "model " + model + " — " + reason +
      (usage ? " — " + usage.completion_tokens + " tokens" : "");
  } catch (error) {
    $("chat-meta").textContent = "error: " + error.message;
  } finally {
    $("chat-send").disabled = false;
  }
}

// ---- playground: detection ----------------------------------------------------------------------------------
function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function detect() {
  const file = $("detect-file").files[0];
  if (!file) return;
  const canvas = $("detect-canvas");
  canvas.dataset.boxes = "";
  $("detect-meta").textContent = "detecting...";
  try {
    const image = await createImageBitmap(file);
    const response = await api("/console/api/detect", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: $("detect-model").value, image: await base64Of(file) }),
    });
    const result = await response.json();
    const scale = Math.min(1, 640 / image.width);
    canvas.width = Math.round(image.width * scale);
    canvas.height = Math.round(image.height * scale);
    const ctx = canvas.getContext("2d");
    ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
    ctx.lineWidth = 3;
    ctx.font = "14px sans-serif";
    for (const d of result.detections) {
      const [x, y] = [d.box.x_min * scale, d.box.y_min * scale];
      const [w, h] = [(d.box.x_max - d.box.x_min) * scale, (d.box.y_max - d.box.y_min) * scale];
      ctx.strokeStyle = "#ff0066";
      ctx.strokeRect(x, y, w, h);
      const label = d.class_name + " " + d.score.toFixed(2);
      ctx.fillStyle = "#ff0066";
      ctx.fillRect(x, Math.max(0, y - 18), ctx.measureText(label).width + 8, 18);
      ctx.fillStyle = "#ffffff";
      ctx.fillText(label, x + 4, Math.max(13, y - 5));
    }
    canvas.dataset.boxes = String(result.detections.length);
    canvas.dataset.scale = String(scale);
    $("detect-body").replaceChildren(...result.detections.map((d) => row([d.class_name, d.score.toFixed(3),
      [d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max].map((v) => Math.round(v)).join(", ")])));
    $("detect-meta").textContent = result.detections.length + " detection(s) by " + result.selection.model +
      " on " + result.image_width + "x" + result.image_height + " — " + result.selection.reason;
  } catch (error) {
    $("detect-meta").textContent = "error: " + error.message;
  }
}

// ---- tabs, key, refresh loops -------------------------------------------------------------------------------
const loaders = { models: refreshModels, routing: refreshRouting, jobs: refreshJobs };

function show(tab) {
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.id !== tab;
  for (const button of document.querySelectorAll(".tab")) button.classList.toggle("active", button.dataset.tab === tab);
}

function currentTab() {
  const tab = location.hash.slice(1);
  return ["models", "routing", "jobs", "playground"].includes(tab) ? tab : "models";
}

function loop(name) {
  const run = async () => {
    const visible = currentTab() === name || (name === "models" && currentTab() === "playground");
    if (visible && document.visibilityState === "visible") {
      try {
        await loaders[name]();
        if ($("key-state").textContent === "key needed") $("key-state").textContent = "";
      } catch (error) {
        notice(name + ": " + error.message);
      }
    }
    setTimeout(run, REFRESH_MS[name]);
  };
  run();
}

function keyState() {
  $("key-state").textContent = sessionStorage.getItem(KEY_SLOT) ? "key set for this tab" : "no key";
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll(".tab")) {
    button.addEventListener("click", () => { location.hash = button.dataset.tab; });
  }
  window.addEventListener("hashchange", () => {
    const tab = currentTab();
    show(tab);
    const load = loaders[tab === "playground" ? "models" : tab];
    if (load) load().catch((error) => notice(tab + ": " + error.message));
  });
  show(currentTab());
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_SLOT, key);
    $("api-key").value = "";
    notice("");
    keyState();
    for (const name of Object.keys(loaders)) loaders[name]().catch((error) => notice(name + ": " + error.message));
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_SLOT);
    keyState();
  });
  $("chat-form").addEventListener("submit", sendChat);
  $("detect-file").addEventListener("change", detect);
  $("detect-form").addEventListener("submit", (event) => { event.preventDefault(); detect(); });
  keyState();
  for (const name of Object.keys(loaders)) loop(name);
});
