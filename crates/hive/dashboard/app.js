// The rbee-hive dashboard: plain JavaScript, no build step, nothing from elsewhere.
// Every value from the API is put on the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "rbee-hive-token";
const PAGE_ROWS = 100;

// ---- the API -------------------------------------------------------------------

function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// A JSON call; a 4xx or 5xx becomes an ApiError with the API's own message.
async function api(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "unreachable", "the hive did not answer: " + e.message);
  }
  const text = await r.text();
  let v = null;
  try {
    v = text ? JSON.parse(text) : null;
  } catch (_) {
    v = null;
  }
  if (!r.ok) {
    const err = v && v.error ? v.error : {};
    const message = typeof err === "string" ? err : err.message || r.status + " " + r.statusText;
    if (r.status === 401) askToken(token() ? "The token was refused: " + message : "");
    throw new ApiError(r.status, err.code || "error", message);
  }
  return { value: v, response: r };
}

// Reads a server-sent-event stream (fetch, so that the token goes with it), calling
// onEvent(kind, data) for each; resolves when it ends. `signal` stops it.
async function events(path, onEvent, signal, init) {
  const r = await fetch(path, Object.assign({ headers: headers(), signal }, init || {}));
  if (!r.ok) {
    const text = await r.text();
    let message = r.status + " " + r.statusText;
    try {
      const v = JSON.parse(text);
      message = (v.error && (v.error.message || v.error)) || message;
    } catch (_) { /* not JSON */ }
    throw new ApiError(r.status, "error", message);
  }
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let at;
    while ((at = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, at);
      buffer = buffer.slice(at + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(kind, data.join("\n"));
    }
  }
}

// ---- building the page ---------------------------------------------------------

// el("tag", {attr: value, onclick: fn}, child...): children are nodes or text.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function page(...children) {
  const main = document.getElementById("page");
  main.replaceChildren(...children);
}

function notice(message, kind) {
  const n = document.getElementById("notice");
  n.textContent = message;
  n.className = kind || "error";
  n.hidden = !message;
}

function errorBox(e) {
  return el("p", { class: "error", role: "alert", text: e.message || String(e) });
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}

function count(n) {
  if (n === null || n === undefined) return "–";
  const v = Number(n);
  if (v >= 1e9) return (v / 1e9).toFixed(2) + "B";
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + "K";
  return String(v);
}

function ago(when) {
  if (!when) return "never";
  const s = Math.max(0, (Date.now() - Date.parse(when)) / 1000);
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return (s / 3600).toFixed(1) + " h ago";
  return (s / 86400).toFixed(1) + " days ago";
}

function duration(secs) {
  if (secs === null || secs === undefined) return "–";
  const s = Math.max(0, Math.round(secs));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function statusText(m) {
  const st = m.status || {};
  if (st.state === "downloading" && m.progress && m.progress.bytes_total) {
    return "downloading " + Math.floor((100 * m.progress.bytes_done) / m.progress.bytes_total) + "%";
  }
  if (st.state === "failed") return "failed: " + (st.error || "");
  return st.state || "?";
}

// A table in a box that scrolls sideways on a narrow screen (the page never does).
function table(caption, columns, rows) {
  return el("div", { class: "scroll" }, el(
    "table",
    {},
    el("caption", { text: caption }),
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", text: c })))),
    el("tbody", {}, rows),
  ));
}

// What clients type for a model: its alias, else its id.
function modelName(m) {
  return m.alias || m.id || "";
}

function progressBar(label) {
  const bar = el("progress", { max: 100, value: 0, "aria-label": label });
  const text = el("span", { class: "progress-text", text: "starting" });
  return { node: el("div", { class: "progress" }, bar, text), bar, text };
}

// Follows a job: its narration into `log`, its progress into `bar`; resolves with
// the job's last state ("completed", "failed", "cancelled").
async function followJob(jobId, log, bar, signal) {
  let state = "running";
  await events("/v1/jobs/" + encodeURIComponent(jobId) + "/stream", (kind, data) => {
    let v = {};
    try { v = JSON.parse(data); } catch (_) { return; }
    if (kind === "narration" && log) {
      log.append(el("li", { text: (v.action ? v.action + ": " : "") + v.message }));
      log.scrollTop = log.scrollHeight;
    } else if (kind === "progress" && bar) {
      const total = v.bytes_total || v.total;
      const done = v.bytes_done !== undefined ? v.bytes_done : v.done;
      if (total) {
        bar.bar.value = (100 * done) / total;
        const speed = v.bytes_per_sec ? bytes(v.bytes_per_sec) + "/s" : "";
        const eta = v.eta_secs !== undefined && v.eta_secs !== null ? "ETA " + duration(v.eta_secs) : "";
        bar.text.textContent = bytes(done) + " of " + bytes(total) + " " + speed + " " + eta;
      }
    } else if (kind === "error" && log) {
      log.append(el("li", { class: "error", text: "error: " + (v.message || data) }));
    } else if (kind === "done") {
      state = v.state || state;
    }
  }, signal);
  return state;
}

// ---- token ---------------------------------------------------------------------

// Asks for the token; `why` (a refused token) is said once, in the dialog. A first
// visit, with no token yet, is no error.
function askToken(why) {
  const d = document.getElementById("token-dialog");
  const err = document.getElementById("token-error");
  err.textContent = why || "";
  err.hidden = !why;
  page(el("p", { class: "muted", text: "This hive needs its API token." }));
  if (!d.open) d.showModal();
}

function setupToken() {
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = document.getElementById("token-input").value.trim();
    if (!v) return;
    localStorage.setItem(TOKEN_KEY, v);
    document.getElementById("token-dialog").close();
    route();
  });
  document.getElementById("forget-token").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    route();
  });
}

// ---- models --------------------------------------------------------------------

// The models a live worker serves now, by id.
let loadedModels = new Set();

async function loadLoaded() {
  try {
    const workers = ((await api("GET", "/v1/workers")).value || {}).workers || [];
    loadedModels = new Set(workers.filter((w) => ["starting", "ready", "busy"].includes(w.state)).map((w) => w.model_ref));
  } catch (_) {
    loadedModels = new Set();
  }
}

const modelsView = { all: [], sort: "name", desc: false, filter: "", group: "", page: 0, total: 0 };

function paramRange(n) {
  if (!n) return "unknown";
  if (n < 1e9) return "< 1B";
  if (n < 4e9) return "1–4B";
  if (n < 10e9) return "4–10B";
  if (n < 35e9) return "10–35B";
  return "35B+";
}

function modelValue(m, key) {
  const g = m.gguf || {};
  switch (key) {
    case "name": return modelName(m).toLowerCase();
    case "architecture": return g.architecture || "";
    case "quant": return g.quantization || "";
    case "params": return g.parameter_count || 0;
    case "context": return g.context_length || 0;
    case "size": return m.size || 0;
    case "status": return statusText(m);
    case "used": return m.last_accessed || "";
    default: return "";
  }
}

async function loadAllModels(onFirst) {
  // one screenful first, so the page is usable at once; the rest in pages of 1000
  const first = await api("GET", "/v1/models?limit=" + PAGE_ROWS);
  modelsView.all = (first.value && first.value.data) || [];
  modelsView.total = Number(first.response.headers.get("x-total-count") || modelsView.all.length);
  onFirst();
  for (let offset = modelsView.all.length; offset < modelsView.total; offset += 1000) {
    const next = await api("GET", "/v1/models?limit=1000&offset=" + offset);
    const rows = (next.value && next.value.data) || [];
    if (rows.length === 0) break;
    modelsView.all = modelsView.all.concat(rows);
    onFirst();
  }
}

function modelRow(m) {
  const g = m.gguf || {};
  const sha = m.sha256 ? m.sha256.slice(0, 12) + "…" : "–";
  return el(
    "tr",
    {},
    el("td", {}, el("a", { href: "#model/" + encodeURIComponent(m.id), text: modelName(m) }),
      m.name && m.name !== modelName(m) ? el("div", { class: "muted small", text: m.name }) : null),
    el("td", { text: g.architecture || "–" }),
    el("td", { text: g.quantization || "–" }),
    el("td", { class: "num", text: count(g.parameter_count) }),
    el("td", { class: "num", text: g.context_length ? String(g.context_length) : "–" }),
    el("td", { class: "num", text: bytes(m.size) }),
    el("td", {}, statusText(m), loadedModels.has(m.id) ? el("span", { class: "loaded", title: "a worker serves it now", text: " ● loaded" }) : null),
    el("td", { title: m.sha256 || "", text: (m.verified ? "✓ " : "") + sha }),
    el("td", { text: ago(m.last_accessed) }),
    el("td", {}, el("button", {
      type: "button",
      "aria-label": "Delete " + modelName(m),
      onclick: async () => {
        if (!confirm("Delete " + m.id + " and its files?")) return;
        try {
          await api("DELETE", "/v1/models/" + encodeURIComponent(m.id));
          notice("Deleted " + m.id, "ok");
          renderModels();
        } catch (e) {
          notice(e.message);
        }
      },
    }, "Delete")),
  );
}

function modelsTable(area) {
  const f = modelsView.filter.toLowerCase();
  let rows = modelsView.all.filter((m) => {
    if (!f) return true;
    const g = m.gguf || {};
    return [m.id, m.alias, m.name, g.architecture, g.quantization].some((x) => (x || "").toLowerCase().includes(f));
  });
  const key = modelsView.sort;
  rows.sort((a, b) => {
    const x = modelValue(a, key);
    const y = modelValue(b, key);
    const c = x < y ? -1 : x > y ? 1 : 0;
    return modelsView.desc ? -c : c;
  });
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
  modelsView.page = Math.min(modelsView.page, pages - 1);
  const shown = rows.slice(modelsView.page * PAGE_ROWS, (modelsView.page + 1) * PAGE_ROWS);
  const columns = [
    ["name", "Name"], ["architecture", "Architecture"], ["quant", "Quantization"], ["params", "Parameters"],
    ["context", "Context"], ["size", "Size"], ["status", "Status"], [null, "sha256"], ["used", "Last use"], [null, "Actions"],
  ];
  const head = el("tr", {}, columns.map(([k, label]) => {
    if (!k) return el("th", { scope: "col", text: label });
    const arrow = modelsView.sort === k ? (modelsView.desc ? " ▼" : " ▲") : "";
    return el("th", { scope: "col", "aria-sort": modelsView.sort === k ? (modelsView.desc ? "descending" : "ascending") : "none" },
      el("button", { type: "button", class: "sort", onclick: () => {
        if (modelsView.sort === k) modelsView.desc = !modelsView.desc;
        else { modelsView.sort = k; modelsView.desc = false; }
        modelsTable(area);
      } }, label + arrow));
  }));
  const groups = new Map();
  if (modelsView.group) {
    for (const m of shown) {
      const g = m.gguf || {};
      const name = modelsView.group === "params" ? paramRange(g.parameter_count)
        : modelsView.group === "architecture" ? g.architecture || "unknown" : g.quantization || "unknown";
      if (!groups.has(name)) groups.set(name, []);
      groups.get(name).push(m);
    }
  }
  const body = modelsView.group
    ? [...groups.entries()].map(([name, ms]) => el("tbody", {},
      el("tr", { class: "group" }, el("th", { colspan: columns.length, scope: "rowgroup", text: name + " (" + ms.length + ")" })),
      ms.map(modelRow)))
    : [el("tbody", {}, shown.map(modelRow))];
  const loading = modelsView.all.length < modelsView.total ? " (loading " + modelsView.all.length + " of " + modelsView.total + ")" : "";
  const t = el("table", { id: "models-table" },
    el("caption", { text: rows.length + " of " + modelsView.all.length + " models" + loading }),
    el("thead", {}, head), body);
  const pager = el("div", { class: "pager" },
    el("button", { type: "button", disabled: modelsView.page === 0, onclick: () => { modelsView.page--; modelsTable(area); } }, "Previous page"),
    el("span", { text: "page " + (modelsView.page + 1) + " of " + pages }),
    el("button", { type: "button", disabled: modelsView.page >= pages - 1, onclick: () => { modelsView.page++; modelsTable(area); } }, "Next page"));
  area.replaceChildren(el("div", { class: "scroll" }, t), pager);
}

function pullForm() {
  const ref = el("input", { id: "pull-ref", name: "reference", required: true, placeholder: "hf:ORG/REPO:Q4_K_M, https://…, oci://HOST/REPO:TAG", size: 48 });
  const sha = el("input", { id: "pull-sha", name: "sha256", placeholder: "optional", size: 20 });
  const status = el("div", { id: "pull-status" });
  const form = el("form", { id: "pull-form", class: "inline", onsubmit: async (e) => {
    e.preventDefault();
    const body = { model_ref: ref.value.trim() };
    if (sha.value.trim()) body.sha256 = sha.value.trim();
    status.replaceChildren();
    let started;
    try {
      started = (await api("POST", "/v1/models/download", body)).value;
    } catch (err) {
      status.replaceChildren(errorBox(err));
      return;
    }
    const bar = progressBar("Pull of " + body.model_ref);
    const log = el("ul", { class: "log" });
    const controller = new AbortController();
    const cancel = el("button", { type: "button", onclick: async () => {
      try { await api("DELETE", "/v1/jobs/" + encodeURIComponent(started.job_id)); } catch (err) { notice(err.message); }
    } }, "Cancel pull");
    status.replaceChildren(el("p", { text: "Pulling " + body.model_ref }), bar.node, cancel, log);
    try {
      const state = await followJob(started.job_id, log, bar, controller.signal);
      if (state === "completed") bar.bar.value = 100;
      bar.text.textContent = state === "completed" ? "done" : state;
      cancel.remove();
      status.append(el("p", { class: state === "completed" ? "ok" : "error", id: "pull-result", text: "Pull " + state }));
      refreshModelsTable();
    } catch (err) {
      status.append(errorBox(err));
    }
  } },
  el("label", { for: "pull-ref" }, "Pull a model"), ref,
  el("label", { for: "pull-sha" }, "sha256"), sha,
  el("button", { type: "submit" }, "Pull"));
  return el("section", { "aria-labelledby": "pull-title" }, el("h3", { id: "pull-title", text: "Pull" }), form, status);
}

function importForm() {
  const path = el("input", { id: "import-path", required: true, placeholder: "/abs/path/model.gguf", size: 40 });
  const status = el("div", {});
  const form = el("form", { class: "inline", onsubmit: async (e) => {
    e.preventDefault();
    status.replaceChildren();
    try {
      const started = (await api("POST", "/v1/models/import", { path: path.value.trim() })).value;
      const log = el("ul", { class: "log" });
      status.replaceChildren(log);
      const state = await followJob(started.job_id, log, null);
      status.append(el("p", { class: state === "completed" ? "ok" : "error", text: "Import " + state }));
      refreshModelsTable();
    } catch (err) {
      status.replaceChildren(errorBox(err));
    }
  } }, el("label", { for: "import-path" }, "Import a file"), path, el("button", { type: "submit" }, "Import"));
  return el("section", { "aria-labelledby": "import-title" }, el("h3", { id: "import-title", text: "Import" }), form, status);
}

let refreshModelsTable = () => {};

async function renderModels() {
  const area = el("div", { id: "models-area" }, el("p", { text: "Loading models…" }));
  const filter = el("input", { id: "model-filter", type: "search", value: modelsView.filter, placeholder: "name, alias, architecture, quant", oninput: (e) => {
    modelsView.filter = e.target.value;
    modelsView.page = 0;
    modelsTable(area);
  } });
  const group = el("select", { id: "model-group", onchange: (e) => { modelsView.group = e.target.value; modelsTable(area); } },
    [["", "no grouping"], ["architecture", "architecture"], ["quant", "quantization"], ["params", "parameter range"]].map(
      ([v, t]) => el("option", { value: v, selected: modelsView.group === v, text: t })));
  page(
    el("h2", { text: "Models" }),
    el("div", { class: "inline" }, el("label", { for: "model-filter" }, "Filter"), filter,
      el("label", { for: "model-group" }, "Group by"), group),
    area,
    pullForm(),
    importForm(),
  );
  refreshModelsTable = async () => {
    try {
      await loadLoaded();
      await loadAllModels(() => modelsTable(area));
    } catch (e) {
      area.replaceChildren(errorBox(e));
    }
  };
  await refreshModelsTable();
}

// ---- one model -----------------------------------------------------------------

async function renderModel(id) {
  page(el("p", { text: "Loading " + id + "…" }));
  let m;
  try {
    m = (await api("GET", "/v1/models/" + encodeURIComponent(id) + "?metadata=true")).value;
  } catch (e) {
    page(el("h2", { text: id }), errorBox(e));
    return;
  }
  const a = m.artifact || m;
  const g = a.gguf || {};
  const props = [
    ["id", a.id], ["name", a.name], ["provider", a.provider], ["architecture", g.architecture],
    ["quantization", g.quantization], ["parameters", g.parameter_count ? count(g.parameter_count) + " (" + g.parameter_count + ")" : null],
    ["context length", g.context_length], ["embedding length", g.embedding_length], ["layers", g.block_count],
    ["attention heads", g.head_count], ["KV heads", g.head_count_kv], ["vocabulary", g.vocab_size],
    ["tokenizer", g.tokenizer_model], ["chat template", g.has_chat_template ? "yes" : "no"],
    ["weights", bytes(g.tensor_data_size)], ["KV cache per token", g.kv_cache_bytes_per_token ? bytes(g.kv_cache_bytes_per_token) : null],
    ["status", statusText(a)], ["alias", m.alias],
  ];
  const propTable = table("Properties", ["Property", "Value"],
    props.map(([k, v]) => el("tr", {}, el("th", { scope: "row", text: k }), el("td", { text: v === null || v === undefined ? "–" : String(v) }))));
  // the hive's own estimate (the one admission and spawns use), against each budget
  const mem = m.memory || { by_context: [], gpus: [] };
  const ramBudget = mem.ram_budget_bytes;
  const gpuBudgets = mem.gpus || [];
  const fit = (total, cap) => (cap ? (total <= cap ? "fits" : "does not fit") : "–");
  const workerCtx = mem.worker ? mem.worker.context : null;
  const memRows = mem.by_context.map((f) => el("tr", {},
    el("th", { scope: "row", text: f.context + (f.context === g.context_length ? " (max)" : "") + (f.context === workerCtx ? " (a worker's)" : "") }),
    el("td", { class: "num", text: bytes(f.weights_bytes) }),
    el("td", { class: "num", text: f.kv_cache_bytes === null || f.kv_cache_bytes === undefined ? "unknown" : bytes(f.kv_cache_bytes) }),
    el("td", { class: "num", text: bytes(f.total_bytes) }),
    el("td", { text: fit(f.total_bytes, ramBudget) }),
    gpuBudgets.map((gpu) => el("td", { text: fit(f.total_bytes, gpu.budget_bytes) }))));
  const memTable = table("Memory by context (weights and an f16 KV cache)",
    ["Context", "Weights", "KV cache", "Total", "RAM budget " + bytes(ramBudget)].concat(gpuBudgets.map((x) => "GPU " + x.index + " budget " + bytes(x.budget_bytes))),
    memRows);
  const files = (a.shards && a.shards.length ? a.shards : [{ path: a.path, size: a.size, sha256: a.sha256 }]);
  const fileTable = table("Files", ["Path", "Size", "sha256"],
    files.map((f) => el("tr", {}, el("td", { text: f.path }), el("td", { class: "num", text: bytes(f.size) }), el("td", { class: "mono", text: f.sha256 || "–" }))));
  const preset = a.preset || {};
  const presetTable = table("Preset", ["Setting", "Value"],
    Object.keys(preset).length
      ? Object.entries(preset).map(([k, v]) => el("tr", {}, el("th", { scope: "row", text: k }), el("td", { text: JSON.stringify(v) })))
      : [el("tr", {}, el("td", { colspan: 2, text: "none set (rbee models set)" }))]);
  const header = m.header || {};
  const meta = header.metadata || {};
  const metaTable = table("GGUF metadata (" + Object.keys(meta).length + " keys, GGUF v" + (header.gguf_version || "?") + ", " + (header.tensor_count || "?") + " tensors)",
    ["Key", "Value"],
    Object.entries(meta).map(([k, v]) => {
      let text = typeof v === "string" ? v : JSON.stringify(v);
      if (v && typeof v === "object" && !Array.isArray(v) && v.len !== undefined) text = v.type + "[" + v.len + "]";
      const cell = k === "tokenizer.chat_template" ? el("td", {}, el("pre", { text })) : el("td", { class: "mono", text });
      return el("tr", {}, el("th", { scope: "row", class: "mono", text: k }), cell);
    }));
  const workersArea = el("div", {});
  const showWorkers = async () => {
    try {
      const list = ((await api("GET", "/v1/workers")).value || {}).workers || [];
      const mine = list.filter((w) => w.model_ref === a.id);
      workersArea.replaceChildren(table("Workers serving it", ["Worker", "State", "Engine", "URL"],
        mine.length ? mine.map((w) => el("tr", {}, el("td", { text: w.id }), el("td", { text: w.state }), el("td", { text: w.engine }), el("td", { text: w.url || "–" })))
          : [el("tr", {}, el("td", { colspan: 4, text: "none" }))]));
    } catch (e) {
      workersArea.replaceChildren(errorBox(e));
    }
  };
  const jobLog = el("ul", { class: "log" });
  const load = el("button", { type: "button", onclick: async () => {
    try {
      const started = (await api("POST", "/v1/models/load", { id: a.id })).value;
      await followJob(started.job_id, jobLog, null);
      showWorkers();
    } catch (e) { notice(e.message); }
  } }, "Load");
  const unload = el("button", { type: "button", onclick: async () => {
    try { await api("POST", "/v1/models/unload", { id: a.id }); showWorkers(); } catch (e) { notice(e.message); }
  } }, "Unload");
  page(el("h2", { text: modelName(m.alias ? m : a) }), a.name ? el("p", { class: "muted", text: a.name }) : null,
    el("p", {}, el("a", { href: "#models" }, "← all models")),
    propTable, memTable, fileTable, presetTable,
    el("h3", { text: "Workers" }), el("div", { class: "inline" }, load, unload), workersArea, jobLog,
    metaTable);
  showWorkers();
}

// ---- workers -------------------------------------------------------------------

let logFollow = null;

function followLog(worker, box) {
  if (logFollow) logFollow.stop = true;
  const f = { stop: false, offset: null };
  logFollow = f;
  box.replaceChildren();
  const tick = async () => {
    if (f.stop || !document.body.contains(box)) return;
    try {
      const q = f.offset === null ? "?tail=200" : "?offset=" + f.offset;
      const r = await fetch("/v1/workers/" + encodeURIComponent(worker) + "/logs" + q, { headers: headers() });
      if (r.ok) {
        const text = await r.text();
        const next = r.headers.get("x-log-offset");
        if (next !== null) f.offset = Number(next);
        if (text) {
          box.append(document.createTextNode(text));
          box.scrollTop = box.scrollHeight;
        }
      }
    } catch (_) { /* the next tick tries again */ }
    setTimeout(tick, 1000);
  };
  tick();
}

async function renderWorkers() {
  const area = el("div", {}, el("p", { text: "Loading workers…" }));
  const logBox = el("pre", { id: "worker-log", class: "logtail", tabindex: 0, "aria-label": "Worker log" });
  const logTitle = el("h3", { text: "Log" });
  const draw = async () => {
    let list;
    try {
      list = ((await api("GET", "/v1/workers")).value || {}).workers || [];
    } catch (e) {
      area.replaceChildren(errorBox(e));
      return;
    }
    const now = Date.now();
    area.replaceChildren(table(list.length + " workers",
      ["Worker", "State", "Engine", "Model", "Device", "Port", "PID", "RSS", "CPU", "Restarts", "Health failures", "Uptime", "Idle time left", "Actions"],
      list.map((w) => {
        const last = Date.parse(w.last_activity || w.started_at);
        const left = w.idle_ttl_secs ? Math.max(0, w.idle_ttl_secs - (now - last) / 1000) : null;
        return el("tr", {},
          el("td", { text: w.id }), el("td", { text: w.state + (w.reason ? " (" + w.reason + ")" : "") }),
          el("td", { text: w.engine + " " + (w.engine_version || "") }), el("td", { text: w.model_ref }),
          el("td", { text: w.backend + ":" + w.device }), el("td", { text: w.port || "–" }), el("td", { text: w.pid || "–" }),
          el("td", { class: "num", text: bytes(w.rss_bytes) }),
          el("td", { class: "num", text: w.cpu_percent === null || w.cpu_percent === undefined ? "–" : w.cpu_percent.toFixed(0) + "%" }),
          el("td", { class: "num", text: w.restart_count }), el("td", { class: "num", text: w.failed_health_checks }),
          el("td", { text: duration((now - Date.parse(w.started_at)) / 1000) }),
          el("td", { text: left === null ? "no limit" : duration(left) }),
          el("td", {},
            el("button", { type: "button", "aria-label": "Show the log of " + w.id, onclick: () => { logTitle.textContent = "Log of " + w.id; followLog(w.id, logBox); } }, "Log"),
            el("button", { type: "button", "aria-label": "Stop " + w.id, onclick: async () => {
              try { await api("DELETE", "/v1/workers/" + encodeURIComponent(w.id)); draw(); } catch (e) { notice(e.message); }
            } }, "Stop")));
      })));
  };
  const model = el("input", { id: "spawn-model", required: true, placeholder: "a model id", size: 40 });
  const engine = el("select", { id: "spawn-engine" }, ["", "llama.cpp", "rbee"].map((v) => el("option", { value: v, text: v || "default" })));
  const backend = el("select", { id: "spawn-backend" }, ["", "cpu", "cuda", "metal", "vulkan", "rocm"].map((v) => el("option", { value: v, text: v || "default" })));
  const spawnLog = el("ul", { class: "log" });
  const form = el("form", { id: "spawn-form", class: "inline", onsubmit: async (e) => {
    e.preventDefault();
    spawnLog.replaceChildren();
    const body = { model: model.value.trim() };
    if (engine.value) body.engine = engine.value;
    if (backend.value) body.worker = backend.value;
    try {
      const started = (await api("POST", "/v1/workers/spawn", body)).value;
      const state = await followJob(started.job_id, spawnLog, null);
      spawnLog.append(el("li", { class: state === "completed" ? "ok" : "error", text: "spawn " + state }));
      draw();
    } catch (err) {
      spawnLog.replaceChildren(el("li", { class: "error", text: err.message }));
    }
  } }, el("label", { for: "spawn-model" }, "Model"), model, el("label", { for: "spawn-engine" }, "Engine"), engine,
  el("label", { for: "spawn-backend" }, "Backend"), backend, el("button", { type: "submit" }, "Spawn"));
  page(el("h2", { text: "Workers" }), el("button", { type: "button", onclick: draw }, "Refresh"), area,
    el("h3", { text: "Spawn a worker" }), form, spawnLog, logTitle, logBox);
  await draw();
  const timer = setInterval(() => { if (document.body.contains(area)) draw(); else clearInterval(timer); }, 3000);
}

// ---- worker binaries -----------------------------------------------------------

async function renderBinaries() {
  const area = el("div", {}, el("p", { text: "Loading…" }));
  const draw = async () => {
    try {
      const v = (await api("GET", "/v1/worker-binaries")).value;
      const list = Array.isArray(v) ? v : (v && (v.binaries || v.worker_binaries)) || [];
      area.replaceChildren(table(list.length + " worker binaries", ["Id", "Engine", "Backend", "Version", "Platform", "Size", "sha256", "Status"],
        list.map((r) => {
          const b = r.artifact || r;
          return el("tr", {}, el("td", { text: b.id }), el("td", { text: b.engine }), el("td", { text: b.worker_type }),
            el("td", { text: r.engine_version || b.version }), el("td", { text: b.platform }), el("td", { class: "num", text: bytes(b.size) }),
            el("td", { class: "mono", title: b.sha256 || "", text: b.sha256 ? b.sha256.slice(0, 12) + "…" : "–" }),
            el("td", { text: (b.status && b.status.state) || "?" }));
        })));
    } catch (e) {
      area.replaceChildren(errorBox(e));
    }
  };
  const worker = el("input", { id: "install-worker", required: true, placeholder: "cpu, cuda, llama.cpp:cpu", size: 16 });
  const source = el("input", { id: "install-source", placeholder: "local, local:/src/dir, https://…zip, file:/path", size: 40 });
  const sha = el("input", { id: "install-sha", placeholder: "sha256 of an archive", size: 20 });
  const log = el("ul", { class: "log" });
  const form = el("form", { class: "inline", onsubmit: async (e) => {
    e.preventDefault();
    log.replaceChildren();
    const body = { worker: worker.value.trim() };
    if (source.value.trim()) body.source = source.value.trim();
    if (sha.value.trim()) body.sha256 = sha.value.trim();
    try {
      const started = (await api("POST", "/v1/worker-binaries/install", body)).value;
      const state = await followJob(started.job_id, log, null);
      log.append(el("li", { class: state === "completed" ? "ok" : "error", text: "install " + state }));
      draw();
    } catch (err) {
      log.replaceChildren(el("li", { class: "error", text: err.message }));
    }
  } }, el("label", { for: "install-worker" }, "Worker"), worker, el("label", { for: "install-source" }, "Source"), source,
  el("label", { for: "install-sha" }, "sha256"), sha, el("button", { type: "submit" }, "Install"));
  page(el("h2", { text: "Worker binaries" }), area, el("h3", { text: "Install" }), form, log);
  await draw();
}

// ---- jobs ----------------------------------------------------------------------

async function renderJobs() {
  const area = el("div", {}, el("p", { text: "Loading…" }));
  const history = el("ul", { class: "log", id: "job-history" });
  const draw = async () => {
    try {
      const v = (await api("GET", "/v1/jobs")).value;
      const list = Array.isArray(v) ? v : (v && v.jobs) || [];
      area.replaceChildren(table(list.length + " jobs", ["Job", "Operation", "State", "Started", "Finished", "Actions"],
        list.map((j) => el("tr", {}, el("td", { class: "mono", text: j.job_id }), el("td", { text: j.operation }), el("td", { text: j.state }),
          el("td", { text: ago(j.created_at) }), el("td", { text: j.finished_at ? ago(j.finished_at) : "–" }),
          el("td", {},
            el("button", { type: "button", "aria-label": "Events of " + j.job_id, onclick: async () => {
              history.replaceChildren();
              try { await followJob(j.job_id, history, null); } catch (e) { history.append(el("li", { class: "error", text: e.message })); }
            } }, "Events"),
            j.state === "running" || j.state === "queued"
              ? el("button", { type: "button", "aria-label": "Cancel " + j.job_id, onclick: async () => {
                try { await api("DELETE", "/v1/jobs/" + encodeURIComponent(j.job_id)); draw(); } catch (e) { notice(e.message); }
              } }, "Cancel") : null)))));
    } catch (e) {
      area.replaceChildren(errorBox(e));
    }
  };
  page(el("h2", { text: "Jobs" }), el("button", { type: "button", onclick: draw }, "Refresh"), area, el("h3", { text: "Events" }), history);
  await draw();
}

// ---- machine -------------------------------------------------------------------

async function renderMachine() {
  try {
    const c = (await api("GET", "/v1/capabilities")).value || {};
    const cpu = c.cpu || {};
    const ram = c.ram || {};
    const disk = c.disk || {};
    const rows = [
      ["host", c.hostname], ["CPU", cpu.model], ["cores", (cpu.physical_cores || "?") + " physical, " + (cpu.logical_cores || "?") + " logical"],
      ["RAM", bytes(ram.total_bytes) + " (" + bytes(ram.available_bytes) + " available)"],
      ["free disk for the home", bytes(disk.free_bytes) + " at " + (disk.path || "?")],
    ];
    const gpus = c.gpus || [];
    page(el("h2", { text: "Machine" }),
      table("This machine", ["", ""], rows.map(([k, v]) => el("tr", {}, el("th", { scope: "row", text: k }), el("td", { text: v || "–" })))),
      table(gpus.length ? "GPUs" : "No GPUs found", ["Index", "Name", "Memory", "Free", "Utilization"],
        gpus.map((x) => el("tr", {}, el("td", { text: x.index }), el("td", { text: x.name }), el("td", { text: bytes(x.memory_total_bytes) }),
          el("td", { text: bytes(x.memory_free_bytes) }), el("td", { text: x.utilization_percent === null ? "–" : x.utilization_percent + "%" })))));
  } catch (e) {
    page(el("h2", { text: "Machine" }), errorBox(e));
  }
}

// ---- fleet ---------------------------------------------------------------------

// The lab's hives as this one sees them (GET /v1/fleet). Every field of a peer's
// card is text on the page, never markup.
async function renderFleet() {
  let f;
  try {
    f = (await api("GET", "/v1/fleet")).value || {};
  } catch (e) {
    if (e.status === 404) {
      page(el("h2", { text: "Fleet" }), el("p", { text: e.message }));
      return;
    }
    throw e;
  }
  const hives = f.data || [];
  const link = f.link || {};
  const state = link.reason ? link.state + ": " + link.reason + " (serving this hive's own models)" : link.state;
  const memory = (h) => (h.devices || []).map((d) => d.name + " " + bytes(d.free_bytes) + " free of " + bytes(d.budget_bytes)).join(", ");
  const loaded = (h) => (h.loaded || []).map((l) => l.model + " (" + l.slots_free + " slot(s) free, " + l.queue + " queued)").join(", ") || "–";
  const models = [];
  for (const h of hives) {
    const on = new Set((h.loaded || []).map((l) => l.model));
    for (const m of h.models || []) models.push([modelName(m), bytes(m.size), h.id + (h.self ? " (this hive)" : ""), on.has(m.id) ? "loaded" : "–"]);
  }
  models.sort((a, b) => a[0].localeCompare(b[0]));
  const refresh = el("button", { type: "button", onclick: renderFleet }, "Refresh");
  page(el("h2", { text: "Fleet " + (f.fleet || "") }), el("p", { text: "This hive: " + (f.hive_id || "?") + ", " + (state || "?") }), refresh,
    table(hives.length + " hive(s)", ["Hive", "URL", "Version", "Memory", "Models", "Loaded"],
      hives.map((h) => el("tr", {}, el("td", { text: h.id + (h.self ? " (this hive)" : "") }), el("td", { text: h.url }), el("td", { text: h.version }),
        el("td", { text: memory(h) }), el("td", { text: (h.models || []).length }), el("td", { text: loaded(h) })))),
    table("Models in the fleet", ["Name", "Size", "Hive", "Loaded"],
      models.map((r) => el("tr", {}, r.map((c) => el("td", { text: c }))))));
}

// ---- chat ----------------------------------------------------------------------

const chat = { messages: [], model: "", system: "", temperature: "", image: null, seeing: new Set() };

// The largest image the chat attaches (the hive's body limit is larger; this keeps
// a conversation that carries its images on every turn well under it).
const IMAGE_MAX_BYTES = 8 << 20;

// A model's answer as a few blocks of Markdown: fenced code, headings, lists,
// paragraphs, and inline `code`, **bold** and *italics*. Built from text nodes
// only: whatever the model writes, nothing on the page is HTML it wrote.
function markdown(text) {
  const out = [];
  const lines = text.split("\n");
  let i = 0;
  const inline = (line) => {
    const parts = [];
    const re = /(`[^`]+`|\*\*[^*]+\*\*|\*[^*\s][^*]*\*)/g;
    let last = 0;
    for (const m of line.matchAll(re)) {
      if (m.index > last) parts.push(line.slice(last, m.index));
      const t = m[0];
      if (t.startsWith("`")) parts.push(el("code", { text: t.slice(1, -1) }));
      else if (t.startsWith("**")) parts.push(el("strong", { text: t.slice(2, -2) }));
      else parts.push(el("em", { text: t.slice(1, -1) }));
      last = m.index + t.length;
    }
    if (last < line.length) parts.push(line.slice(last));
    return parts;
  };
  while (i < lines.length) {
    const line = lines[i];
    if (line.trimStart().startsWith("```")) {
      const code = [];
      i++;
      while (i < lines.length && !lines[i].trimStart().startsWith("```")) code.push(lines[i++]);
      i++;
      out.push(el("pre", {}, el("code", { text: code.join("\n") })));
    } else if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
      const ordered = /^\s*\d/.test(line);
      const items = [];
      while (i < lines.length && /^\s*([-*+]|\d+[.)])\s+/.test(lines[i]) && /^\s*\d/.test(lines[i]) === ordered) {
        items.push(el("li", {}, inline(lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, ""))));
        i++;
      }
      out.push(el(ordered ? "ol" : "ul", {}, items));
    } else if (/^#{1,6}\s/.test(line)) {
      out.push(el("p", {}, el("strong", {}, inline(line.replace(/^#{1,6}\s+/, "")))));
      i++;
    } else if (!line.trim()) {
      i++;
    } else {
      const para = [];
      while (i < lines.length && lines[i].trim() && !lines[i].trimStart().startsWith("```") && !/^\s*([-*+]|\d+[.)])\s+/.test(lines[i]) && !/^#{1,6}\s/.test(lines[i])) {
        para.push(lines[i++]);
      }
      out.push(el("p", {}, inline(para.join("\n"))));
    }
  }
  return out;
}

async function renderChat() {
  // an image picked before the page was left is not sent unseen
  chat.image = null;
  const select = el("select", { id: "chat-model", onchange: (e) => { chat.model = e.target.value; } });
  const transcript = el("div", { id: "chat-log", class: "chat", "aria-live": "polite" });
  const speed = el("p", { id: "chat-speed", class: "muted" });
  const input = el("textarea", { id: "chat-input", rows: 3, required: true, placeholder: "Say something (Enter sends, Shift+Enter a new line)" });
  const system = el("textarea", { id: "chat-system", rows: 2, placeholder: "optional", oninput: (e) => { chat.system = e.target.value; } });
  system.value = chat.system;
  const temperature = el("input", { id: "chat-temperature", type: "number", min: 0, max: 2, step: 0.1, placeholder: "the model's", value: chat.temperature,
    oninput: (e) => { chat.temperature = e.target.value; } });
  const send = el("button", { type: "submit" }, "Send");
  // an image for the next message, read here as a data: URL: only for a model that
  // sees (the hive refuses it for others too)
  const preview = el("div", { id: "chat-image-preview", class: "inline" });
  const picker = el("input", { id: "chat-image", type: "file", accept: "image/png,image/jpeg,image/gif,image/webp,image/bmp",
    onchange: (e) => {
      const file = e.target.files && e.target.files[0];
      chat.image = null;
      preview.replaceChildren();
      if (!file) return;
      if (file.size > IMAGE_MAX_BYTES) {
        e.target.value = "";
        preview.append(errorBox(new Error(file.name + " is " + bytes(file.size) + ": at most " + bytes(IMAGE_MAX_BYTES))));
        return;
      }
      const reader = new FileReader();
      reader.onload = () => {
        chat.image = { name: file.name, url: String(reader.result) };
        preview.replaceChildren(el("img", { class: "thumb", src: chat.image.url, alt: file.name }),
          el("button", { type: "button", id: "chat-image-clear", onclick: () => { chat.image = null; picker.value = ""; preview.replaceChildren(); } }, "Remove"));
      };
      reader.readAsDataURL(file);
    } });
  const attach = el("div", { id: "chat-attach", class: "inline" }, el("label", { for: "chat-image" }, "Image"), picker, preview);
  const canSee = () => {
    const sees = chat.seeing.has(chat.model);
    picker.disabled = !sees;
    attach.title = sees ? "" : "this model has no vision projector";
    if (!sees) { chat.image = null; picker.value = ""; preview.replaceChildren(); }
  };
  select.addEventListener("change", canSee);
  // the user's words as typed, with their image; the model's as Markdown
  const userBody = (m) => (typeof m.content === "string" ? [el("p", { text: m.content })]
    : m.content.map((part) => (part.type === "image_url" ? el("img", { class: "thumb", src: part.image_url.url, alt: "an image" }) : el("p", { text: part.text }))));
  const body = (m) => (m.role === "user" ? userBody(m) : markdown(m.content));
  const draw = () => transcript.replaceChildren(...chat.messages.map((m) =>
    el("div", { class: "msg " + m.role }, el("strong", { text: m.role === "user" ? "You" : "Model" }), el("div", { class: "body" }, body(m)))));
  const form = el("form", { id: "chat-form", onsubmit: async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || !chat.model) return;
    input.value = "";
    const content = chat.image ? [{ type: "text", text }, { type: "image_url", image_url: { url: chat.image.url } }] : text;
    chat.image = null;
    picker.value = "";
    preview.replaceChildren();
    chat.messages.push({ role: "user", content });
    const answer = { role: "assistant", content: "" };
    chat.messages.push(answer);
    draw();
    send.disabled = true;
    const chatRequest = () => {
      const messages = chat.messages.slice(0, -1);
      if (chat.system.trim()) messages.unshift({ role: "system", content: chat.system.trim() });
      const req = { model: chat.model, messages, stream: true };
      const t = parseFloat(chat.temperature);
      if (Number.isFinite(t)) req.temperature = t;
      return req;
    };
    const started = performance.now();
    let first = null;
    let tokens = 0;
    try {
      await events("/openai/v1/chat/completions", (kind, data) => {
        if (data === "[DONE]") return;
        let v;
        try { v = JSON.parse(data); } catch (_) { return; }
        if (v.error) throw new ApiError(502, "worker_failed", v.error.message || "the stream failed");
        const piece = ((v.choices || [])[0] || {}).delta || {};
        if (piece.content) {
          if (first === null) first = performance.now();
          tokens++;
          answer.content += piece.content;
          transcript.lastChild.lastChild.replaceChildren(...markdown(answer.content));
        }
      }, undefined, {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify(chatRequest()),
      });
      const now = performance.now();
      const rate = first !== null && tokens > 1 ? ((tokens - 1) / ((now - first) / 1000)).toFixed(1) : "–";
      speed.textContent = tokens + " tokens, " + rate + " tokens/s, first token after " + (first === null ? "–" : ((first - started) / 1000).toFixed(2) + " s");
    } catch (err) {
      chat.messages.pop();
      draw();
      transcript.append(errorBox(err));
    } finally {
      send.disabled = false;
    }
  } }, el("label", { for: "chat-input" }, "Message"), input, attach, send);
  // Enter sends, as in every chat; Shift+Enter (or a composing input method) does not
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  page(el("h2", { text: "Chat" }), el("div", { class: "inline" }, el("label", { for: "chat-model" }, "Model"), select,
    el("button", { type: "button", onclick: () => { chat.messages = []; draw(); speed.textContent = ""; } }, "New chat")),
  el("details", { id: "chat-settings" }, el("summary", { text: "System prompt and temperature" }),
    el("div", { class: "settings" }, el("label", { for: "chat-system" }, "System prompt"), system,
      el("label", { for: "chat-temperature" }, "Temperature"), temperature)),
  transcript, speed, form);
  draw();
  try {
    const v = (await api("GET", "/openai/v1/models")).value || {};
    const models = v.data || [];
    const ids = models.map((m) => m.id);
    // named as clients name them: the alias, the id in its title
    select.replaceChildren(...models.map((m) => el("option", { value: m.id, title: m.id, text: modelName(m), selected: m.id === chat.model })));
    if (!chat.model || !ids.includes(chat.model)) chat.model = ids[0] || "";
    chat.seeing = new Set(models.filter((m) => (m.capabilities || []).includes("vision")).map((m) => m.id));
    canSee();
    if (!ids.length) transcript.append(el("p", { text: "No models yet: pull one on the Models page." }));
  } catch (e) {
    transcript.append(errorBox(e));
  }
}

// ---- routing -------------------------------------------------------------------

async function route() {
  notice("");
  const hash = decodeURIComponent(location.hash.slice(1));
  for (const a of document.querySelectorAll("nav a")) {
    a.setAttribute("aria-current", hash.startsWith(a.getAttribute("href").slice(1)) ? "page" : "false");
  }
  // a token that is wanted and wrong shows the token form and no data
  try {
    await api("GET", "/v1/capabilities");
  } catch (e) {
    if (e.status !== 401) page(errorBox(e));
    return;
  }
  try {
    if (hash.startsWith("model/")) await renderModel(hash.slice(6));
    else if (hash === "workers") await renderWorkers();
    else if (hash === "binaries") await renderBinaries();
    else if (hash === "jobs") await renderJobs();
    else if (hash === "machine") await renderMachine();
    else if (hash === "fleet") await renderFleet();
    else if (hash === "chat") await renderChat();
    else await renderModels();
  } catch (e) {
    page(errorBox(e));
  }
}

window.addEventListener("error", (e) => notice("Something went wrong: " + e.message));
window.addEventListener("unhandledrejection", (e) => notice("Something went wrong: " + ((e.reason && e.reason.message) || e.reason)));
window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  setupToken();
  route();
});
