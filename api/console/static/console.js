// skyfleet console: the actions of the pages, each a call to the public API with the session's
// CSRF token. No inline script anywhere (the pages' CSP forbids it); htmx refreshes live parts.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

function toast(message, isError) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = isError ? "error" : "";
  box.hidden = false;
  clearTimeout(box._timer);
  box._timer = setTimeout(() => { box.hidden = true; }, 6000);
}

// One call to the public API; resolves to the envelope, rejects with its error (message, fields).
async function api(method, url, body) {
  const init = { method, headers: { "X-CSRF-Token": csrf(), "Accept": "application/json" }, credentials: "same-origin" };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  let envelope = null;
  try { envelope = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok || !envelope || envelope.success === false) {
    const error = (envelope && envelope.error) || { message: `HTTP ${response.status}` };
    throw Object.assign(new Error(error.message), { status: response.status, code: error.code, details: error.details || {} });
  }
  return envelope;
}

// --- theme ------------------------------------------------------------------------------------
function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
}
applyTheme(localStorage.getItem("skyfleet-theme"));

function toggleTheme() {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === "dark"
    : window.matchMedia("(prefers-color-scheme: dark)").matches;
  const next = dark ? "light" : "dark";
  localStorage.setItem("skyfleet-theme", next);
  applyTheme(next);
}

// --- live updates (htmx polling), with a pause control ------------------------------------------
document.addEventListener("htmx:beforeRequest", (event) => {
  if (document.body.dataset.paused === "true" && event.detail.elt.hasAttribute("data-live")) event.preventDefault();
});

function togglePause(button) {
  const paused = document.body.dataset.paused !== "true";
  document.body.dataset.paused = String(paused);
  button.setAttribute("aria-pressed", String(paused));
  button.textContent = paused ? "Resume live updates" : "Pause live updates";
}

// --- buttons that call the API -------------------------------------------------------------------
async function apiButton(button) {
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  const [method, url] = button.dataset.api.split(" ");
  button.disabled = true;
  try {
    const answer = await api(method, url, button.dataset.body ? JSON.parse(button.dataset.body) : undefined);
    if (button.hasAttribute("data-show-password")) {  // shown once: not kept anywhere
      window.alert(`The new password of ${answer.data.email} (shown once):\n\n${answer.data.password}`);
      button.disabled = false;
      return;
    }
    if (button.dataset.then === "job") window.location.assign(`/jobs/${answer.data.id}`);
    else if (button.dataset.then) window.location.assign(button.dataset.then);
    else window.location.reload();
  } catch (error) {
    toast(error.message, true);
    button.disabled = false;
  }
}

async function bulk(button) {
  const form = button.closest("form");
  const everything = form.elements["all-matching"] && form.elements["all-matching"].checked;
  const ids = [...form.querySelectorAll('input[name="job"]:checked')].map((box) => Number(box.value));
  if (!everything && !ids.length) { toast("Select some jobs first.", true); return; }
  const what = everything ? "every job matching the filter" : `${ids.length} job(s)`;
  if (!window.confirm(`${button.dataset.confirm} (${what})`)) return;
  const body = { action: button.dataset.bulkAction };
  if (everything) body.filter = JSON.parse(form.dataset.filter || "{}");
  else body.ids = ids;
  try {
    const { data } = await api("POST", "/api/jobs/bulk", body);
    const refused = data.refused.length ? `, ${data.refused.length} refused: ${data.refused[0].message}` : "";
    sessionStorage.setItem("skyfleet-toast", `${data.done.length} done${refused}${data.more ? " (more match: again)" : ""}.`);
    window.location.reload();
  } catch (error) { toast(error.message, true); }
}

// --- uploads (with progress) ----------------------------------------------------------------------
function upload(file, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const data = new FormData();
    data.append("file", file, file.name);
    xhr.open("POST", "/api/files");
    xhr.setRequestHeader("X-CSRF-Token", csrf());
    xhr.responseType = "json";
    if (progress) {
      progress.hidden = false;
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) progress.value = (100 * e.loaded) / e.total; };
    }
    xhr.onload = () => {
      const body = xhr.response || {};
      if (xhr.status === 201 && body.success) resolve(body.data);
      else reject(new Error((body.error && body.error.message) || `HTTP ${xhr.status}`));
    };
    xhr.onerror = () => reject(new Error("the upload failed (network)"));
    xhr.send(data);
  });
}

async function uploadAll(files) {
  const progress = document.getElementById("upload-progress");
  const error = document.getElementById("upload-error");
  error.hidden = true;
  try {
    for (const file of files) await upload(file, progress);
    window.location.reload();
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
  }
}

// --- the submit form, generated from the type's input schema --------------------------------------
function fieldValue(field) {
  const kind = field.dataset.kind;
  const input = field.querySelector("[name]");
  if (kind === "boolean") return input.checked;
  const raw = input.value.trim();
  if (raw === "") return undefined;
  if (kind === "file") return { file_id: Number(raw) };
  if (kind === "integer" || kind === "number") return Number(raw);
  if (kind === "json") return JSON.parse(raw);
  return raw;
}

function showErrors(form, fields) {
  form.querySelectorAll(".field-error").forEach((p) => { p.hidden = true; });
  const unplaced = [];
  for (const [path, messages] of Object.entries(fields || {})) {
    const name = path.replace(/^input_payload\./, "").split(".")[0];
    const box = form.querySelector(`[data-field="${CSS.escape(name)}"] .field-error`);
    if (box) { box.textContent = messages.join(" "); box.hidden = false; } else unplaced.push(`${path}: ${messages.join(" ")}`);
  }
  return unplaced;
}

async function submitJob(form) {
  const payload = {};
  const errorBox = document.getElementById("submit-error");
  errorBox.hidden = true;
  try {
    form.querySelectorAll(".field[data-kind]").forEach((field) => {
      if (field.dataset.kind === "envelope") return;
      const value = fieldValue(field);
      if (value !== undefined) payload[field.dataset.field] = value;
    });
  } catch (e) {
    errorBox.textContent = `Not valid JSON: ${e.message}`;
    errorBox.hidden = false;
    return;
  }
  const body = { type: form.dataset.type, input_payload: payload,
                 priority: Number(form.elements.__priority.value || 5), cache: form.elements.__cache.checked };
  const button = document.getElementById("submit-button");
  button.disabled = true;
  try {
    const answer = await api("POST", "/api/jobs", body);
    window.location.assign(`/jobs/${answer.data.id}`);
  } catch (error) {
    const unplaced = showErrors(form, error.details.fields);
    errorBox.textContent = [error.message, ...unplaced].join(" — ");
    errorBox.hidden = false;
    button.disabled = false;
  }
}

function prefill(form) {
  if (!form.dataset.clone) return;
  let input;
  try { input = JSON.parse(form.dataset.clone); } catch (_) { return; }
  for (const [name, value] of Object.entries(input)) {
    const field = form.querySelector(`[data-field="${CSS.escape(name)}"]`);
    if (!field) continue;
    const control = field.querySelector("[name]");
    if (field.dataset.kind === "boolean") control.checked = Boolean(value);
    else if (field.dataset.kind === "file") control.value = value && value.file_id ? String(value.file_id) : "";
    else if (field.dataset.kind === "json") control.value = JSON.stringify(value);
    else control.value = value;
  }
}

// --- wiring ---------------------------------------------------------------------------------------
document.addEventListener("click", (event) => {
  const target = event.target.closest("button, input[data-select-all]");
  if (!target) return;
  if (target.id === "theme-toggle") toggleTheme();
  else if (target.id === "pause") togglePause(target);
  else if (target.dataset.api) apiButton(target);
  else if (target.dataset.bulkAction) bulk(target);
  else if (target.hasAttribute("data-unpin")) pin(target.closest("form"), null);
  else if (target.hasAttribute("data-select-all")) {
    target.closest("form").querySelectorAll('input[name="job"]').forEach((box) => { box.checked = target.checked; });
  }
});

async function pin(form, count) { scale(form, { count }); }

// Bounds left empty go back to the pool's own (null clears an override).
async function scale(form, changes) {
  try {
    await api("POST", "/api/admin/scale", { pool: form.dataset.pool, ...changes });
    window.location.reload();
  } catch (error) { toast(error.message, true); }
}

// A form whose fields are a JSON body for the API (checkboxes of one name: a list); the answer's
// generated password, if any, is shown in the form's <output> once.
async function apiForm(form) {
  const [method, url] = form.dataset.apiForm.split(" ");
  const body = {};
  for (const element of form.elements) {
    if (!element.name || element.type === "submit") continue;
    if (element.type === "checkbox") {
      body[element.name] = body[element.name] || [];
      if (element.checked) body[element.name].push(element.value);
    } else if (element.value.trim() !== "") body[element.name] = element.value.trim();
  }
  const out = form.querySelector("output");
  try {
    const { data } = await api(method, url, body);
    out.className = "once";
    out.textContent = data.password ? `Created ${data.email}; its password (shown once): ${data.password}`
      : `Created ${data.email}.`;
    form.reset();
  } catch (error) {
    out.className = "once error";
    const fields = Object.entries(error.details.fields || {}).map(([f, m]) => `${f}: ${m.join(" ")}`);
    out.textContent = [error.message, ...fields].join(" — ");
  }
}

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.apiForm) { event.preventDefault(); apiForm(form); return; }
  if (form.id === "submit-form") { event.preventDefault(); submitJob(form); }
  else if (form.classList.contains("pool-bounds")) {
    event.preventDefault();
    const value = (name) => (form.elements[name].value.trim() === "" ? null : Number(form.elements[name].value));
    scale(form, { min: value("min"), max: value("max") });
  } else if (form.classList.contains("pool-pin")) {
    event.preventDefault();
    const raw = form.elements.count.value.trim();
    pin(form, raw === "" ? null : Number(raw));
  }
});

document.addEventListener("change", async (event) => {
  const input = event.target;
  if (input.id === "file-input") uploadAll(input.files);
  else if (input.dataset.uploadFor && input.files.length) {
    const field = input.closest(".field");
    try {
      const file = await upload(input.files[0], field.querySelector(".upload-progress"));
      const select = field.querySelector("select");
      select.add(new Option(`${file.name} (${file.size} bytes)`, String(file.id), true, true));
    } catch (error) { toast(error.message, true); }
  }
});

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("submit-form");
  if (form) prefill(form);
  const zone = document.getElementById("dropzone");
  if (zone) {
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); uploadAll(e.dataTransfer.files); });
  }
  const pending = sessionStorage.getItem("skyfleet-toast");
  if (pending) { sessionStorage.removeItem("skyfleet-toast"); toast(pending, false); }
});

// --- result views ---------------------------------------------------------------------------------
// sources.detect: a click (or Enter) on a source's row marks it on the overlay.
function markSource(row) {
  const wrap = document.querySelector(".overlay-wrap");
  const marker = document.getElementById("marker");
  if (!wrap || !marker) return;
  const nx = Number(wrap.dataset.nx), ny = Number(wrap.dataset.ny);
  const x = Number(row.dataset.x), y = Number(row.dataset.y);
  if (!nx || !ny) return;
  // The overlay is the image flipped vertically (row 0 at the bottom), maybe reduced.
  marker.style.left = `${(100 * (x + 0.5)) / nx}%`;
  marker.style.top = `${(100 * (ny - 0.5 - y)) / ny}%`;
  marker.hidden = false;
  row.closest("tbody").querySelectorAll("tr.picked").forEach((r) => r.classList.remove("picked"));
  row.classList.add("picked");
}

function sortTable(button) {
  const table = button.closest("table");
  const column = Number(button.dataset.sort);
  const ascending = button.dataset.dir !== "asc";
  table.querySelectorAll("button.sort").forEach((b) => { delete b.dataset.dir; b.removeAttribute("aria-sort"); });
  button.dataset.dir = ascending ? "asc" : "desc";
  button.closest("th").setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const body = table.tBodies[0];
  const key = (row) => { const v = parseFloat(row.cells[column].textContent); return Number.isNaN(v) ? -Infinity : v; };
  [...body.rows].sort((a, b) => (ascending ? key(a) - key(b) : key(b) - key(a))).forEach((row) => body.appendChild(row));
}

document.addEventListener("click", (event) => {
  const sort = event.target.closest("button.sort");
  if (sort) { sortTable(sort); return; }
  const row = event.target.closest("table.sortable tbody tr");
  if (row) { markSource(row); return; }
  const zoom = event.target.closest("img[data-zoom]");
  if (zoom) zoom.classList.toggle("zoomed");
});
document.addEventListener("keydown", (event) => {
  const row = event.target.closest && event.target.closest("table.sortable tbody tr");
  if (row && (event.key === "Enter" || event.key === " ")) { event.preventDefault(); markSource(row); }
});
