// skyfleet console: the overview's history charts (uPlot), from GET /api/admin/history.
"use strict";

const PALETTE = ["#2f7d32", "#c62828", "#ef6c00", "#1565c0", "#6a1b9a", "#00838f", "#ad1457", "#5d4037", "#455a64"];
let currentWindow = "hour";
const plots = {};

function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

function draw(id, data, series) {
  const box = document.getElementById(id);
  if (plots[id]) { plots[id].destroy(); delete plots[id]; }
  const axis = { stroke: css("--muted"), grid: { stroke: css("--line"), width: 1 }, ticks: { stroke: css("--line") } };
  const options = {
    width: Math.max(280, box.clientWidth), height: 200,
    scales: { x: { time: true } },
    axes: [axis, axis],
    legend: { live: false },
    series: [{}, ...series.map((s, i) => ({ label: s, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: false }))],
  };
  plots[id] = new uPlot(options, data, box);
}

async function load() {
  const note = document.getElementById("chart-note");
  try {
    const response = await fetch(`/api/admin/history?window=${currentWindow}`, { credentials: "same-origin" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    const h = body.data;
    const per = h.bucket_s === 60 ? "minute" : h.bucket_s === 900 ? "15 minutes" : "hour";
    note.textContent = `one point per ${per}`;
    draw("chart-jobs", [h.t, h.completed, h.failed, h.retried], ["completed", "failed", "retried"]);
    draw("chart-pickup", [h.t, h.pickup_s.p50, h.pickup_s.p95, h.pickup_s.p99], ["p50", "p95", "p99"]);
    const types = Object.keys(h.duration_s);
    draw("chart-duration", [h.t, ...types.map((t) => h.duration_s[t])], types.length ? types : ["(none)"]);
    if (!types.length) plots["chart-duration"].setData([h.t, h.t.map(() => null)]);
    draw("chart-workers", [h.t, h.workers], ["workers"]);
  } catch (error) {
    note.textContent = `charts unavailable: ${error.message}`;
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-window]");
  if (!button) return;
  currentWindow = button.dataset.window;
  document.querySelectorAll("button[data-window]").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
  load();
});

document.addEventListener("DOMContentLoaded", () => {
  if (!document.getElementById("charts") || typeof uPlot === "undefined") return;
  load();
  setInterval(() => { if (document.body.dataset.paused !== "true") load(); }, 30000);
  window.addEventListener("resize", () => load());
  document.getElementById("theme-toggle").addEventListener("click", () => setTimeout(load, 0));
});
