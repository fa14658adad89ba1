// The status page: lists instances and follows one instance's custom status
// by polling the HTTP API. A `code` in the page's URL is sent as the key.
"use strict";

const BASE = "/runtime/webhooks/durabletask";
const pageParams = new URLSearchParams(location.search);
const key = pageParams.get("code");
const taskHub = pageParams.get("taskHub");
const LIST_EVERY_MS = 2000;
const DETAIL_EVERY_MS = 1000;
let selected = pageParams.get("instance");

async function api(path) {
  const url = new URL(BASE + path, location.origin);
  if (taskHub) url.searchParams.set("taskHub", taskHub);
  const response = await fetch(url, { headers: key ? { "x-functions-key": key } : {} });
  const body = response.status === 404 ? null : await response.json();
  if (!response.ok && response.status !== 404 && response.status !== 500) {
    throw new Error((body && body.Message) || response.statusText);
  }
  return { status: response.status, body };
}

// A fraction from 0 to 1 when the custom status holds a numeric progress:
// a number, or `progress` (0..1, or a percentage above 1), `done`/`total`,
// `completed`/`total`, `percentComplete`. Null otherwise.
function progressOf(custom) {
  const fraction = (value) => (Number.isFinite(value) ? Math.min(1, Math.max(0, value)) : null);
  if (typeof custom === "number") return custom >= 0 && custom <= 1 ? custom : null;
  if (!custom || typeof custom !== "object") return null;
  if (typeof custom.progress === "number") return fraction(custom.progress > 1 ? custom.progress / 100 : custom.progress);
  for (const done of ["done", "completed"]) {
    if (typeof custom[done] === "number" && typeof custom.total === "number" && custom.total > 0) {
      return fraction(custom[done] / custom.total);
    }
  }
  if (typeof custom.percentComplete === "number") return fraction(custom.percentComplete / 100);
  return null;
}

// Today's times as a time only; older ones with their date.
function when(text) {
  if (!text) return "";
  const date = new Date(text);
  return date.toDateString() === new Date().toDateString() ? date.toLocaleTimeString() : date.toLocaleString();
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  td.title = text;
  return td;
}

function miniBar(fraction) {
  const bar = document.createElement("div");
  bar.className = "bar mini";
  const fill = document.createElement("div");
  fill.className = "fill";
  fill.style.width = `${Math.round(fraction * 100)}%`;
  bar.appendChild(fill);
  return bar;
}

function select(instanceId) {
  selected = instanceId;
  const params = new URLSearchParams(location.search);
  params.set("instance", instanceId);
  history.replaceState(null, "", `${location.pathname}?${params}`);
  refreshDetail();
  for (const row of document.querySelectorAll("#instances tbody tr")) {
    row.classList.toggle("selected", row.dataset.instanceId === selected);
  }
}

async function refreshList() {
  try {
    const { body } = await api("/instances?top=100&showInput=false");
    const rows = body || [];
    const tbody = document.querySelector("#instances tbody");
    tbody.replaceChildren();
    for (const instance of rows) {
      const row = tbody.insertRow();
      row.dataset.instanceId = instance.instanceId;
      row.classList.toggle("selected", instance.instanceId === selected);
      row.addEventListener("click", () => select(instance.instanceId));
      cell(row, instance.instanceId);
      cell(row, instance.name);
      cell(row, instance.runtimeStatus, `status status-${instance.runtimeStatus}`);
      const progress = progressOf(instance.customStatus);
      const td = row.insertCell();
      if (progress !== null) td.appendChild(miniBar(progress));
      cell(row, when(instance.createdTime));
      cell(row, when(instance.lastUpdatedTime));
    }
    document.getElementById("empty").hidden = rows.length > 0;
    document.getElementById("connection").textContent = "";
    if (!selected && rows.length > 0) {
      const running = rows.find((i) => i.runtimeStatus === "Running") || rows[0];
      select(running.instanceId);
    }
  } catch (error) {
    document.getElementById("connection").textContent = `cannot list instances: ${error.message}`;
  }
}

async function refreshDetail() {
  if (!selected) return;
  const panel = document.getElementById("detail-panel");
  try {
    const { status, body } = await api(`/instances/${encodeURIComponent(selected)}?showInput=false`);
    panel.hidden = false;
    document.getElementById("detail-title").textContent = selected;
    if (status === 404) {
      document.getElementById("detail-status").textContent = "not found";
      return;
    }
    document.getElementById("detail-name").textContent = body.name;
    const statusElement = document.getElementById("detail-status");
    statusElement.textContent = body.runtimeStatus;
    statusElement.className = `status status-${body.runtimeStatus}`;
    document.getElementById("detail-created").textContent = when(body.createdTime);
    document.getElementById("detail-updated").textContent = when(body.lastUpdatedTime);

    const progress = progressOf(body.customStatus);
    const block = document.getElementById("progress-block");
    block.hidden = progress === null;
    if (progress !== null) {
      const percent = Math.round(progress * 100);
      const bar = document.getElementById("progress");
      bar.setAttribute("aria-valuenow", String(percent));
      bar.querySelector(".fill").style.width = `${percent}%`;
      document.getElementById("progress-text").textContent = `${percent}%`;
    }
    document.getElementById("custom-status").textContent =
      body.customStatus === null ? "(none)" : JSON.stringify(body.customStatus, null, 2);
    document.getElementById("output").textContent =
      body.output === null ? "(none)" : JSON.stringify(body.output, null, 2);
  } catch (error) {
    document.getElementById("connection").textContent = `cannot read ${selected}: ${error.message}`;
  }
}

document.getElementById("hub").textContent = taskHub ? `task hub ${taskHub}` : "";
refreshList();
refreshDetail();
setInterval(refreshList, LIST_EVERY_MS);
setInterval(refreshDetail, DETAIL_EVERY_MS);
