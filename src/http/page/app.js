// The status page: filters, counts by status, the list (paged through the
// continuation token), and one instance's detail, kept live over its event
// stream. Each view has one request in flight at most; everything pauses
// while the tab is hidden.

import { ApiError, CONTINUATION, View, key, openStream, request } from "/api.js";
import {
  STATUSES,
  actionsFor,
  createdRange,
  durationOf,
  formatDate,
  isTerminal,
  jsonText,
  newestFirst,
  nextActionsOf,
  progressOf,
} from "/format.js";
import { SseParser, readEvents } from "/sse.js";

const PAGE_SIZE = 50;
const MAX_TOP = 1000;
const REFRESH_MS = 10_000;
/** Heartbeats come about every 15 s: this long without a byte, the stream is dead. */
const STREAM_SILENCE_MS = 45_000;
const MAX_BACKOFF_MS = 30_000;
const TYPING_MS = 300;

const $ = (id) => document.getElementById(id);
/** One column: the detail is below the list. */
const NARROW = window.matchMedia("(max-width: 900px)");
const enc = encodeURIComponent;

// ---------------------------------------------------------------------------
// Announcements and errors

/** How many recent announcements the live region keeps. */
const ANNOUNCEMENTS_KEPT = 5;

/**
 * Says `text` through the live region: each announcement is added as a
 * line of its own (so that one does not cut the one before), the oldest
 * dropped.
 */
function announce(text) {
  const live = $("live");
  const line = document.createElement("p");
  line.textContent = text;
  live.append(line);
  while (live.childElementCount > ANNOUNCEMENTS_KEPT) live.firstElementChild.remove();
}

/** Shows an error in its place, and announces it; `null` hides it. */
function showError(id, text) {
  const element = $(id);
  if (text === null) {
    element.hidden = true;
    element.textContent = "";
    return;
  }
  const repeated = !element.hidden && element.textContent === text;
  element.textContent = text;
  element.hidden = false;
  // The same error again (an auto-refresh failing as before) is not said again.
  if (!repeated) announce(`Error: ${text}`);
}

function messageOf(error) {
  return error instanceof ApiError || error instanceof Error ? error.message : String(error);
}

// ---------------------------------------------------------------------------
// The key

let keyPrompted = false;

function openKeyDialog(why) {
  const dialog = $("key-dialog");
  if (dialog.open) return;
  $("key-why").textContent = why || "The key for this server's API, if it has keys.";
  $("key-input").value = key.get();
  $("key-forget").hidden = !key.get();
  dialog.showModal();
  $("key-input").focus();
}

/** A 401: asks for the key once, until one is saved. */
function needKey(error) {
  if (!(error instanceof ApiError) || error.status !== 401) return false;
  if (!keyPrompted) {
    keyPrompted = true;
    openKeyDialog(
      key.get()
        ? `The server refused this key: ${error.message}`
        : `This server needs a key: ${error.message}`,
    );
  }
  return true;
}

function updateKeyButton() {
  $("key-button").textContent = key.get() ? "Key (set)" : "Key";
}

function setupKey() {
  // An old link may carry the key as `code`: keep it for the tab, and take
  // it out of the address bar and history.
  const params = new URLSearchParams(location.search);
  if (params.has("code")) {
    key.set(params.get("code"));
    params.delete("code");
    history.replaceState(null, "", `${location.pathname}${params.size ? `?${params}` : ""}`);
  }
  updateKeyButton();
  $("key-button").addEventListener("click", () => openKeyDialog());
  $("key-cancel").addEventListener("click", () => $("key-dialog").close());
  $("key-forget").addEventListener("click", () => {
    key.set("");
    $("key-dialog").close();
    updateKeyButton();
    announce("The key is forgotten.");
    keyPrompted = false;
    reloadAll();
  });
  $("key-form").addEventListener("submit", () => {
    key.set($("key-input").value.trim());
    $("key-input").value = "";
    updateKeyButton();
    keyPrompted = false;
    announce("Key saved for this tab.");
    reloadAll();
  });
}

// ---------------------------------------------------------------------------
// Filters (mirrored in the page's URL, which never holds the key)

const filter = { statuses: new Set(), created: "any", from: "", to: "", prefix: "", name: "" };

function readUrl() {
  const params = new URLSearchParams(location.search);
  filter.statuses = new Set(
    (params.get("status") || "")
      .split(",")
      .filter((s) => STATUSES.includes(s)),
  );
  const created = params.get("created");
  filter.created = ["any", "hour", "day", "week", "custom"].includes(created) ? created : "any";
  filter.from = params.get("from") || "";
  filter.to = params.get("to") || "";
  filter.prefix = params.get("prefix") || "";
  filter.name = params.get("name") || "";
  return params.get("instance");
}

function writeUrl() {
  const params = new URLSearchParams(location.search);
  const set = (name, value) => (value ? params.set(name, value) : params.delete(name));
  set("status", [...filter.statuses].join(","));
  set("created", filter.created === "any" ? "" : filter.created);
  set("from", filter.created === "custom" ? filter.from : "");
  set("to", filter.created === "custom" ? filter.to : "");
  set("prefix", filter.prefix);
  set("name", filter.name);
  set("instance", detail.id || "");
  params.delete("code");
  const query = params.toString();
  history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}`);
}

function buildStatusBoxes() {
  const fieldset = $("filter-status");
  for (const status of STATUSES) {
    const label = document.createElement("label");
    label.className = "check";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = status;
    box.name = "status";
    const swatch = document.createElement("span");
    swatch.className = `swatch bg-${status}`;
    swatch.setAttribute("aria-hidden", "true");
    label.append(box, swatch, status);
    fieldset.append(label);
  }
}

function showFilter() {
  for (const box of document.querySelectorAll("#filter-status input")) {
    box.checked = filter.statuses.has(box.value);
  }
  $("filter-created").value = filter.created;
  $("filter-from").value = filter.from;
  $("filter-to").value = filter.to;
  $("filter-prefix").value = filter.prefix;
  $("filter-name").value = filter.name;
  const custom = filter.created === "custom";
  $("custom-from").hidden = !custom;
  $("custom-to").hidden = !custom;
}

function takeFilter() {
  filter.statuses = new Set(
    [...document.querySelectorAll("#filter-status input:checked")].map((box) => box.value),
  );
  filter.created = $("filter-created").value;
  filter.from = $("filter-from").value;
  filter.to = $("filter-to").value;
  filter.prefix = $("filter-prefix").value.trim();
  filter.name = $("filter-name").value.trim();
  const custom = filter.created === "custom";
  $("custom-from").hidden = !custom;
  $("custom-to").hidden = !custom;
}

/** The API's query for the filter (without the statuses for counts), or `{error}`. */
function filterQuery(withStatuses) {
  const range = createdRange(filter.created, filter.from, filter.to);
  if (range.error) return { error: `Created: ${range.error}.` };
  const query = {
    createdTimeFrom: range.from,
    createdTimeTo: range.to,
    instanceIdPrefix: filter.prefix,
    name: filter.name,
  };
  if (withStatuses && filter.statuses.size > 0) query.runtimeStatus = [...filter.statuses].join(",");
  return { query };
}

/** How many filters are set, for the filters' summary line. */
function activeFilters() {
  return [filter.statuses.size > 0, filter.created !== "any", filter.prefix, filter.name].filter(Boolean)
    .length;
}

function applyFilter() {
  writeUrl();
  const active = activeFilters();
  $("filter-summary").textContent = active ? `(${active} set)` : "";
  const { error } = filterQuery(true);
  if (error) {
    list.view.abort();
    counts.view.abort();
    showError("filter-error", error);
    return;
  }
  showError("filter-error", null);
  loadList("reset");
  loadCounts();
}

/** Filters by one status, or, when it is the only one already, by none. */
function toggleOnlyStatus(status) {
  const only = filter.statuses.size === 1 && filter.statuses.has(status);
  filter.statuses = only ? new Set() : new Set([status]);
  showFilter();
  renderCounts();
  applyFilter();
  announce(only ? "Showing every status." : `Showing ${status} instances.`);
}

function setupFilters() {
  buildStatusBoxes();
  showFilter();
  // On a phone the filters start folded, unless some are set.
  if (NARROW.matches && activeFilters() === 0) $("filter-box").open = false;
  const form = $("filters");
  let typing = null;
  form.addEventListener("change", (event) => {
    if (event.target.type === "search") return;
    takeFilter();
    renderCounts();
    applyFilter();
  });
  form.addEventListener("input", (event) => {
    if (event.target.type !== "search") return;
    clearTimeout(typing);
    typing = setTimeout(() => {
      takeFilter();
      applyFilter();
    }, TYPING_MS);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(typing);
    takeFilter();
    applyFilter();
  });
  form.addEventListener("reset", () => {
    // After the form has reset its controls.
    setTimeout(() => {
      clearTimeout(typing);
      filter.statuses = new Set();
      Object.assign(filter, { created: "any", from: "", to: "", prefix: "", name: "" });
      showFilter();
      renderCounts();
      applyFilter();
      announce("Filters cleared.");
    });
  });
}

// ---------------------------------------------------------------------------
// Counts by status

const counts = { view: new View(), data: null };

async function loadCounts() {
  const { query, error } = filterQuery(false);
  if (error) return;
  $("counts").setAttribute("aria-busy", "true");
  try {
    const answer = await counts.view.run((signal) => request("/instancecounts", { query, signal }));
    if (answer === undefined) return;
    const body = answer.body;
    if (!body || typeof body.counts !== "object" || body.counts === null) {
      throw new ApiError(answer.status, "the counts answer has no counts");
    }
    counts.data = body;
    showError("counts-error", null);
    renderCounts();
  } catch (error) {
    needKey(error);
    counts.data = null;
    renderCounts();
    showError("counts-error", `Counts unavailable: ${messageOf(error)}`);
  } finally {
    if (!counts.view.busy) $("counts").removeAttribute("aria-busy");
  }
}

let drawnCounts = null;

function renderCounts() {
  const bar = $("counts-bar");
  const legend = $("counts-legend");
  // Unchanged counts are not redrawn: a refresh neither moves the focus nor
  // swallows a key pressed on a button meanwhile.
  const drawing = JSON.stringify([counts.data, [...filter.statuses].sort()]);
  if (drawing === drawnCounts) return;
  drawnCounts = drawing;
  // The keyboard's focus stays on its status's button when they are redrawn.
  const focused = legend.contains(document.activeElement) ? document.activeElement.dataset.status : null;
  drawCounts(bar, legend);
  if (focused) legend.querySelector(`button[data-status="${CSS.escape(focused)}"]`)?.focus();
}

function drawCounts(bar, legend) {
  bar.replaceChildren();
  legend.replaceChildren();
  const data = counts.data;
  if (!data) {
    $("counts-total").textContent = "";
    bar.hidden = true;
    return;
  }
  const known = STATUSES.filter((s) => (data.counts[s] || 0) > 0 || filter.statuses.has(s));
  const others = Object.keys(data.counts).filter((s) => !STATUSES.includes(s) && data.counts[s] > 0);
  const shown = [...known, ...others];
  const total = Number.isFinite(data.total)
    ? data.total
    : Object.values(data.counts).reduce((sum, n) => sum + (Number(n) || 0), 0);
  $("counts-total").textContent = `(${total} in all)`;
  bar.hidden = total === 0;
  const filtered = filter.statuses.size > 0;
  for (const status of shown) {
    const count = Number(data.counts[status]) || 0;
    const dimmed = filtered && !filter.statuses.has(status);
    if (count > 0) {
      const segment = document.createElement("button");
      segment.type = "button";
      segment.tabIndex = -1;
      segment.className = `segment bg-${status}${dimmed ? " dimmed" : ""}`;
      segment.dataset.status = status;
      segment.style.flexGrow = String(count);
      segment.title = `${status}: ${count}`;
      segment.textContent = String(count);
      bar.append(segment);
    }
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.status = status;
    button.className = dimmed ? "dimmed" : "";
    button.setAttribute("aria-pressed", String(filter.statuses.has(status)));
    const swatch = document.createElement("span");
    swatch.className = `swatch bg-${status}`;
    swatch.setAttribute("aria-hidden", "true");
    const number = document.createElement("strong");
    number.textContent = String(count);
    button.append(swatch, `${status} `, number);
    item.append(button);
    legend.append(item);
  }
  if (shown.length === 0) {
    const item = document.createElement("li");
    item.className = "muted";
    item.textContent = "No instances.";
    legend.append(item);
  }
}

function setupCounts() {
  const onClick = (event) => {
    const button = event.target.closest("button[data-status]");
    if (button) toggleOnlyStatus(button.dataset.status);
  };
  $("counts-bar").addEventListener("click", onClick);
  $("counts-legend").addEventListener("click", onClick);
}

// ---------------------------------------------------------------------------
// The list

const list = { view: new View(), rows: [], token: null, loaded: false };

/** Loads the list: `reset` (first page), `more` (next page), `refresh` (as many as loaded). */
async function loadList(mode) {
  const { query, error } = filterQuery(true);
  if (error) return;
  if (mode === "more" && !list.token) return;
  const top =
    mode === "refresh" ? Math.min(MAX_TOP, Math.max(PAGE_SIZE, list.rows.length)) : PAGE_SIZE;
  const headers = mode === "more" ? { [CONTINUATION]: list.token } : undefined;
  const table = $("instances");
  table.setAttribute("aria-busy", "true");
  // Not `disabled`: that would take the keyboard's focus away.
  $("load-more").setAttribute("aria-disabled", String(mode === "more"));
  if (mode === "reset") {
    // Rows of the previous filter are not shown under the new one.
    list.rows = [];
    list.token = null;
    list.loaded = false;
    renderList();
    $("list-summary").textContent = "Loading…";
  }
  try {
    const answer = await list.view.run((signal) =>
      request("/instances", { query: { ...query, top, showInput: false }, headers, signal }),
    );
    if (answer === undefined) return;
    if (!Array.isArray(answer.body)) throw new ApiError(answer.status, "the listing is not a JSON array");
    const before = list.rows.length;
    list.rows = mode === "more" ? mergeRows(list.rows, answer.body) : answer.body;
    keepLiveRow();
    list.token = answer.headers.get(CONTINUATION) || null;
    list.loaded = true;
    lastRefresh = Date.now();
    showError("list-error", null);
    renderList();
    if (mode === "reset") announce(`${list.rows.length} instances${list.token ? ", more to load" : ""}.`);
    if (mode === "more") announce(`${list.rows.length - before} more instances loaded.`);
  } catch (error) {
    needKey(error);
    if (mode !== "more") {
      list.rows = [];
      list.token = null;
      list.loaded = false;
      renderList();
    }
    showError("list-error", `Cannot list instances: ${messageOf(error)}`);
  } finally {
    if (!list.view.busy) {
      table.removeAttribute("aria-busy");
      $("load-more").setAttribute("aria-disabled", "false");
    }
  }
}

/**
 * The row of the followed instance keeps what its stream brought when the
 * listing read it earlier (a listing's answer may be older than an event).
 */
function keepLiveRow() {
  const live = detail.data;
  if (!live) return;
  const index = list.rows.findIndex((row) => row.instanceId === live.instanceId);
  if (index < 0) return;
  const row = list.rows[index];
  if ((Date.parse(live.lastUpdatedTime) || 0) >= (Date.parse(row.lastUpdatedTime) || 0)) {
    const { input: _input, ...rest } = live;
    list.rows[index] = { ...row, ...rest };
  }
}

function mergeRows(rows, more) {
  const byId = new Map(rows.map((row) => [row.instanceId, row]));
  for (const row of more) byId.set(row.instanceId, row);
  return [...byId.values()];
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function timeCell(row, iso, label) {
  const td = row.insertCell();
  td.className = "time";
  td.dataset.label = label;
  if (iso) {
    const time = document.createElement("time");
    time.dateTime = iso;
    time.title = iso;
    time.textContent = formatDate(iso, { short: true });
    td.append(time);
  }
  return td;
}

function miniBar(progress) {
  const bar = document.createElement("div");
  bar.className = "bar mini";
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-label", "Progress");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-valuenow", String(Math.round(progress.fraction * 100)));
  bar.setAttribute("aria-valuetext", progress.text);
  const fill = document.createElement("div");
  fill.className = "fill";
  fill.style.width = `${Math.round(progress.fraction * 100)}%`;
  bar.append(fill);
  return bar;
}

function renderList() {
  const tbody = document.querySelector("#instances tbody");
  const focused = document.activeElement?.closest?.("#instances tbody tr")?.dataset.id;
  const current = focused || tbody.querySelector("tr[tabindex='0']")?.dataset.id;
  const rows = newestFirst(list.rows);
  const fragment = document.createDocumentFragment();
  const now = Date.now();
  for (const instance of rows) {
    const row = document.createElement("tr");
    row.dataset.id = instance.instanceId;
    row.tabIndex = -1;
    if (instance.instanceId === detail.id) row.setAttribute("aria-current", "true");
    cell(row, instance.instanceId, "id");
    cell(row, instance.name || "", "name");
    cell(row, instance.runtimeStatus, `status status-${instance.runtimeStatus}`);
    const progressCell = row.insertCell();
    progressCell.className = "progress";
    const progress = progressOf(instance.customStatus);
    if (progress) progressCell.append(miniBar(progress));
    else progressCell.classList.add("none");
    timeCell(row, instance.createdTime, "Created");
    const duration = durationOf(instance, now);
    const td = cell(row, duration.text, "duration");
    td.dataset.label = duration.running ? "Running" : "Took";
    fragment.append(row);
  }
  tbody.replaceChildren(fragment);
  const target =
    tbody.querySelector(`tr[data-id="${CSS.escape(current || detail.id || "")}"]`) ||
    tbody.querySelector("tr");
  if (target) target.tabIndex = 0;
  if (focused && target && target.dataset.id === focused) target.focus({ preventScroll: true });

  $("empty").hidden = !list.loaded || rows.length > 0;
  $("load-more").hidden = !list.token;
  if (list.loaded) {
    const matching = matchingTotal();
    const of = matching !== null && matching >= rows.length ? ` of ${matching}` : "";
    $("list-summary").textContent = `${rows.length}${of} loaded, newest first${list.token ? "; more to load" : ""}`;
  } else if (!list.view.busy) {
    $("list-summary").textContent = "";
  }
  const names = new Set(rows.map((row) => row.name).filter(Boolean));
  $("names").replaceChildren(
    ...[...names].sort().map((name) => Object.assign(document.createElement("option"), { value: name })),
  );
}

/** How many instances match the whole filter, from the counts. */
function matchingTotal() {
  if (!counts.data) return null;
  if (filter.statuses.size === 0) return counts.data.total ?? null;
  return [...filter.statuses].reduce((sum, s) => sum + (Number(counts.data.counts[s]) || 0), 0);
}

/** In one column, brings the detail (below the list) into view. */
function showDetailBelow() {
  if (NARROW.matches) $("detail-panel").scrollIntoView({ block: "start" });
}

function focusRow(row) {
  if (!row) return;
  for (const other of row.parentElement.querySelectorAll("tr[tabindex='0']")) other.tabIndex = -1;
  row.tabIndex = 0;
  row.focus();
}

function setupList() {
  const tbody = document.querySelector("#instances tbody");
  tbody.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-id]");
    if (!row) return;
    focusRow(row);
    select(row.dataset.id);
    showDetailBelow();
  });
  tbody.addEventListener("keydown", (event) => {
    const row = event.target.closest("tr[data-id]");
    if (!row || event.altKey || event.ctrlKey || event.metaKey) return;
    const rows = [...tbody.rows];
    const at = rows.indexOf(row);
    const to = {
      ArrowDown: at + 1,
      ArrowUp: at - 1,
      Home: 0,
      End: rows.length - 1,
      PageDown: Math.min(rows.length - 1, at + 10),
      PageUp: Math.max(0, at - 10),
    }[event.key];
    if (to !== undefined) {
      event.preventDefault();
      focusRow(rows[Math.max(0, Math.min(rows.length - 1, to))]);
    } else if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      select(row.dataset.id);
      announce(`Showing ${row.dataset.id}.`);
      showDetailBelow();
    }
  });
  $("load-more").addEventListener("click", async () => {
    const button = $("load-more");
    if (button.getAttribute("aria-disabled") === "true") return;
    await loadList("more");
    // The last page loaded: the button is gone, the focus goes to the list.
    if (button.hidden && document.activeElement === document.body) {
      document.querySelector("#instances tbody tr[tabindex='0']")?.focus();
    }
  });
  $("refresh").addEventListener("click", () => {
    loadList(list.loaded ? "refresh" : "reset");
    loadCounts();
  });
}

// Auto-refresh of the list and counts (never of an instance: that is live).
let lastRefresh = 0;
let refreshTimer = null;

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (document.hidden) return;
  refreshTimer = setTimeout(() => {
    const blocked =
      !$("auto-refresh").checked ||
      list.view.busy ||
      $("confirm").open ||
      $("key-dialog").open ||
      keyPrompted;
    if (!blocked) {
      loadList(list.loaded ? "refresh" : "reset");
      loadCounts();
    }
    scheduleRefresh();
  }, REFRESH_MS);
}

// ---------------------------------------------------------------------------
// The detail of one instance

const detail = {
  id: null,
  data: null,
  etag: null,
  view: new View(),
  stream: new View(),
  lastEventId: "",
  live: false,
  ended: false,
  stopped: false,
  backoff: 0,
  retryTimer: null,
  silenceTimer: null,
};

function select(id) {
  if (!id) return;
  if (detail.id === id && detail.data) return;
  stopStream();
  detail.view.abort();
  Object.assign(detail, {
    id,
    data: null,
    etag: null,
    lastEventId: "",
    ended: false,
    stopped: false,
    backoff: 0,
  });
  writeUrl();
  for (const row of document.querySelectorAll("#instances tbody tr")) {
    if (row.dataset.id === id) row.setAttribute("aria-current", "true");
    else row.removeAttribute("aria-current");
  }
  $("detail-placeholder").hidden = true;
  $("detail").hidden = false;
  showError("detail-error", null);
  const fromList = list.rows.find((row) => row.instanceId === id);
  // What the list knows of this instance shows at once; its input follows.
  detail.data = fromList ? { ...fromList, input: undefined } : null;
  renderDetail();
  loadDetail();
}

function clearDetail() {
  stopStream();
  detail.view.abort();
  Object.assign(detail, { id: null, data: null, etag: null, lastEventId: "", ended: false });
  $("detail").hidden = true;
  $("detail-placeholder").hidden = false;
  writeUrl();
}

/** Reads the instance with its input (conditionally when it was read), then follows it. */
async function loadDetail() {
  const id = detail.id;
  if (!id) return;
  const headers = detail.etag && detail.data ? { "if-none-match": detail.etag } : undefined;
  try {
    const answer = await detail.view.run((signal) =>
      request(`/instances/${enc(id)}`, { query: { showInput: true }, headers, signal }),
    );
    if (answer === undefined || detail.id !== id) return;
    if (answer.status !== 304) {
      if (!answer.body || answer.body.instanceId !== id) {
        throw new ApiError(answer.status, "the answer is not this instance's status");
      }
      detail.etag = answer.headers.get("etag");
      applyStatus(answer.body, true);
    }
    showError("detail-error", null);
  } catch (error) {
    if (detail.id !== id) return;
    needKey(error);
    if (error instanceof ApiError && error.status === 404) {
      instanceGone(error.message);
      return;
    }
    showError("detail-error", `Cannot read ${id}: ${messageOf(error)}`);
  }
  if (detail.live || detail.ended) return;
  if (detail.data && isTerminal(detail.data.runtimeStatus)) {
    // A finished instance does not change: nothing to follow.
    setStreamState(`Finished: ${detail.data.runtimeStatus}`, true);
    return;
  }
  startStream();
}

/** The instance no longer exists: its detail says so, and nothing follows it. */
function instanceGone(message) {
  stopStream();
  detail.ended = true;
  detail.data = null;
  renderDetail();
  setStreamState(`Not found: ${message}`);
  showError("detail-error", `${detail.id} was not found (it may have been purged).`);
}

/** A status object for the selected instance: from the read (with input) or the stream. */
function applyStatus(status, withInput) {
  const previous = detail.data;
  const next = { ...status };
  if (!withInput) next.input = previous ? previous.input : undefined;
  detail.data = next;
  renderDetail();
  updateRow(next);
  if (previous && previous.runtimeStatus && previous.runtimeStatus !== next.runtimeStatus) {
    announce(`${next.instanceId} is now ${next.runtimeStatus}.`);
    loadCounts();
    // A continue-as-new brings a new input: read it (conditionally).
    if (!withInput && [previous.runtimeStatus, next.runtimeStatus].includes("ContinuedAsNew")) {
      loadDetail();
    }
  }
}

/** Keeps the list's row of an instance as fresh as its detail. */
function updateRow(status) {
  const index = list.rows.findIndex((row) => row.instanceId === status.instanceId);
  if (index < 0) return;
  const { input: _input, ...rest } = status;
  list.rows[index] = { ...list.rows[index], ...rest };
  renderList();
}

function setText(id, text) {
  $(id).textContent = text;
}

function renderDetail() {
  const data = detail.data;
  $("detail-title").textContent = detail.id || "";
  const statusElement = $("detail-status");
  statusElement.textContent = data ? data.runtimeStatus : "";
  statusElement.className = data ? `status badge status-${data.runtimeStatus}` : "status";
  setText("detail-name", data ? data.name || "" : "");
  setTime("detail-created", data?.createdTime);
  setTime("detail-updated", data?.lastUpdatedTime);
  renderDuration();

  const allowed = data ? actionsFor(data.runtimeStatus) : {};
  for (const action of ["terminate", "suspend", "resume", "purge"]) {
    const button = $(`action-${action}`);
    button.disabled = !allowed[action];
    button.title = allowed[action] ? "" : data ? `Not for a ${data.runtimeStatus} instance` : "";
  }

  const custom = data ? data.customStatus : null;
  const progress = data ? progressOf(custom) : null;
  $("progress-block").hidden = progress === null;
  if (progress) {
    const percent = Math.round(progress.fraction * 100);
    const bar = $("progress");
    bar.setAttribute("aria-valuenow", String(percent));
    bar.setAttribute("aria-valuetext", progress.text);
    bar.querySelector(".fill").style.width = `${percent}%`;
    setText("progress-text", progress.text);
  }
  const actions = data ? nextActionsOf(custom) : null;
  $("actions-block").hidden = actions === null;
  $("next-actions").replaceChildren(
    ...(actions || []).map((text) => Object.assign(document.createElement("li"), { textContent: text })),
  );
  const raw = $("custom-raw");
  const understood = progress !== null || actions !== null;
  raw.querySelector("summary").textContent = understood ? "JSON" : "Value";
  if (!understood) raw.open = true;
  setText("custom-status", data ? jsonText(custom) : "");
  setText("output", data ? jsonText(data.output) : "");
  setText("input", !data ? "" : data.input === undefined ? "Loading…" : jsonText(data.input));
}

function setTime(id, iso) {
  const element = $(id);
  element.replaceChildren();
  if (!iso) return;
  const time = document.createElement("time");
  time.dateTime = iso;
  time.title = iso;
  time.textContent = formatDate(iso);
  element.append(time);
}

function renderDuration() {
  const data = detail.data;
  if (!data) {
    setText("detail-duration", "");
    return;
  }
  const duration = durationOf(data);
  setText("detail-duration", duration.running ? `${duration.text} so far` : duration.text);
}

function setStreamState(text, canReconnect = false) {
  setText("stream-state", text);
  $("detail-reload").hidden = !canReconnect;
}

// The push stream of the selected instance.

function stopStream() {
  clearTimeout(detail.retryTimer);
  clearTimeout(detail.silenceTimer);
  detail.stream.abort();
  detail.live = false;
}

function startStream() {
  const id = detail.id;
  if (!id || detail.ended || document.hidden) return;
  clearTimeout(detail.retryTimer);
  detail.live = true;
  detail.stopped = false;
  setStreamState(detail.lastEventId ? "Reconnecting…" : "Connecting…");
  const parser = new SseParser();
  parser.lastEventId = detail.lastEventId;
  detail.stream
    .run(async (signal) => {
      const response = await openStream(`/instances/${enc(id)}/events`, {
        signal,
        lastEventId: detail.lastEventId,
      });
      if (detail.id !== id) return "replaced";
      setStreamState("Live");
      armSilence(id);
      await readEvents(response.body, {
        parser,
        onBytes: () => armSilence(id),
        onItem: (item) => onStreamItem(id, item),
      });
      return "closed";
    })
    .then(
      (result) => {
        if (result === undefined || detail.id !== id) return;
        clearTimeout(detail.silenceTimer);
        detail.live = false;
        if (!detail.ended) retryStream(id, null);
      },
      (error) => {
        if (detail.id !== id) return;
        clearTimeout(detail.silenceTimer);
        detail.live = false;
        streamFailed(id, error);
      },
    );
}

function armSilence(id) {
  clearTimeout(detail.silenceTimer);
  detail.silenceTimer = setTimeout(() => {
    if (detail.id !== id || !detail.live) return;
    // Nothing for too long, heartbeats included: the connection is dead.
    detail.stream.abort();
    detail.live = false;
    retryStream(id, null);
  }, STREAM_SILENCE_MS);
}

function onStreamItem(id, item) {
  if (detail.id !== id || item.comment !== undefined) return;
  if (item.id) detail.lastEventId = item.id;
  if (item.type === "error") {
    // The server's watch of the instance failed; the stream closes after
    // this, and is opened again (which answers 404 if the instance is gone).
    let message = item.data;
    try {
      message = JSON.parse(item.data).Message || message;
    } catch {
      // Not JSON: the text says it.
    }
    showError("detail-error", `Live updates interrupted: ${message}`);
    return;
  }
  if (item.type !== "status" && item.type !== "end") return;
  let status;
  try {
    status = JSON.parse(item.data);
  } catch {
    showError("detail-error", "The server sent an update that is not JSON; it is ignored.");
    return;
  }
  if (!status || (status.instanceId !== undefined && status.instanceId !== id)) return;
  detail.backoff = 0;
  if (!$("detail-error").hidden) showError("detail-error", null);
  applyStatus(status, false);
  if (item.type === "end") {
    detail.ended = true;
    setStreamState(`Finished: ${status.runtimeStatus}`);
  } else {
    setStreamState("Live");
  }
}

function streamFailed(id, error) {
  if (needKey(error)) {
    setStreamState("Live updates need the key.", true);
    detail.stopped = true;
    return;
  }
  const status = error instanceof ApiError ? error.status : 0;
  if (status === 404) {
    instanceGone(error.message);
    return;
  }
  if (status === 0 || status === 503 || status >= 500 || status === 408 || status === 429) {
    retryStream(id, error);
    return;
  }
  detail.stopped = true;
  setStreamState("Live updates stopped.", true);
  showError("detail-error", `Live updates are unavailable: ${messageOf(error)}`);
}

function retryStream(id, error) {
  detail.backoff = Math.min(MAX_BACKOFF_MS, detail.backoff ? detail.backoff * 2 : 1000);
  const wait = Math.max(detail.backoff, error?.retryAfter ? error.retryAfter * 1000 : 0);
  const seconds = Math.round(wait / 1000);
  const why = error ? `${error.message}. ` : "";
  setStreamState(`${why}Reconnecting in ${seconds} s…`, true);
  if (error) announce(`Live updates interrupted: ${error.message}`);
  clearTimeout(detail.retryTimer);
  detail.retryTimer = setTimeout(() => {
    if (detail.id === id && !detail.live && !detail.ended) startStream();
  }, wait);
}

function setupDetail() {
  $("detail-reload").addEventListener("click", () => {
    if (!detail.id) return;
    detail.ended = false;
    detail.backoff = 0;
    stopStream();
    loadDetail();
  });
  $("detail").addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || $("confirm").open) return;
    const row = document.querySelector(`#instances tbody tr[data-id="${CSS.escape(detail.id || "")}"]`);
    if (row) {
      event.preventDefault();
      focusRow(row);
    }
  });
  setInterval(() => {
    if (!document.hidden && detail.data && !isTerminal(detail.data.runtimeStatus)) renderDuration();
  }, 1000);
}

// ---------------------------------------------------------------------------
// Actions, each after a confirmation

const ACTIONS = {
  terminate: {
    title: (id) => `Terminate ${id}?`,
    text: "The orchestration stops and its status becomes Terminated. This cannot be undone.",
    ok: "Terminate",
    reason: true,
    request: (id, reason) => [`/instances/${enc(id)}/terminate`, { method: "POST", query: { reason } }],
    done: (id) => `Termination of ${id} requested.`,
  },
  suspend: {
    title: (id) => `Suspend ${id}?`,
    text: "The orchestration pauses until it is resumed.",
    ok: "Suspend",
    request: (id) => [`/instances/${enc(id)}/suspend`, { method: "POST" }],
    done: (id) => `Suspension of ${id} requested.`,
  },
  resume: {
    title: (id) => `Resume ${id}?`,
    text: "The orchestration continues where it was suspended.",
    ok: "Resume",
    request: (id) => [`/instances/${enc(id)}/resume`, { method: "POST" }],
    done: (id) => `Resumption of ${id} requested.`,
  },
  purge: {
    title: (id) => `Purge ${id}?`,
    text: "Its status and history are deleted for good. This cannot be undone.",
    ok: "Purge",
    request: (id) => [`/instances/${enc(id)}`, { method: "DELETE" }],
    done: (id) => `${id} was purged.`,
  },
};

const pending = { action: null, id: null, view: new View() };

function openConfirm(action) {
  const id = detail.id;
  const spec = ACTIONS[action];
  if (!id || !spec) return;
  pending.action = action;
  pending.id = id;
  $("confirm-title").textContent = spec.title(id);
  $("confirm-text").textContent = spec.text;
  $("reason-field").hidden = !spec.reason;
  $("confirm-reason").value = "";
  $("confirm-ok").textContent = spec.ok;
  $("confirm-ok").disabled = false;
  showError("confirm-error", null);
  $("confirm").showModal();
  (spec.reason ? $("confirm-reason") : $("confirm-cancel")).focus();
}

async function confirmAction() {
  const { action, id } = pending;
  const spec = ACTIONS[action];
  if (!spec) return;
  $("confirm-ok").disabled = true;
  const [path, options] = spec.request(id, $("confirm-reason").value.trim());
  try {
    const answer = await pending.view.run((signal) => request(path, { ...options, signal }));
    if (answer === undefined) return;
    if ($("confirm").open) $("confirm").close();
    announce(spec.done(id));
    if (action === "purge") {
      list.rows = list.rows.filter((row) => row.instanceId !== id);
      renderList();
      if (detail.id === id) clearDetail();
    } else if (detail.id === id && !detail.live) {
      // Without the stream, read the change once.
      loadDetail();
    }
    loadCounts();
  } catch (error) {
    needKey(error);
    $("confirm-ok").disabled = false;
    const text = `The server refused: ${messageOf(error)}`;
    if ($("confirm").open) showError("confirm-error", text);
    else if (detail.id === id) showError("detail-error", `${spec.ok}: ${text}`);
    else announce(`${spec.ok} ${id}: ${text}`);
  }
}

function setupActions() {
  for (const button of document.querySelectorAll(".actions button[data-action]")) {
    button.addEventListener("click", () => openConfirm(button.dataset.action));
  }
  $("confirm-form").addEventListener("submit", (event) => {
    event.preventDefault();
    confirmAction();
  });
  $("confirm-cancel").addEventListener("click", () => $("confirm").close());
  $("confirm").addEventListener("close", () => {
    // An action already sent is not cancelled: its answer is still told.
    const back = pending.action && $(`action-${pending.action}`);
    if (back && !back.disabled && !$("detail").hidden) back.focus();
    else $("detail-title").focus();
  });
}

// ---------------------------------------------------------------------------
// The tab hidden, shown; everything reloaded

function onVisibility() {
  if (document.hidden) {
    clearTimeout(refreshTimer);
    list.view.abort();
    counts.view.abort();
    if (detail.live || detail.retryTimer) {
      stopStream();
      if (detail.id && !detail.ended && !detail.stopped) setStreamState("Paused while the tab is hidden.");
    }
    return;
  }
  if (Date.now() - lastRefresh > REFRESH_MS || !list.loaded) {
    loadList(list.loaded ? "refresh" : "reset");
    loadCounts();
  }
  scheduleRefresh();
  if (detail.id && !detail.ended && !detail.stopped && !detail.live) startStream();
}

function reloadAll() {
  applyFilter();
  if (detail.id) {
    stopStream();
    detail.ended = false;
    detail.stopped = false;
    loadDetail();
  }
}

function setupShortcuts() {
  document.addEventListener("keydown", (event) => {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest("input, select, textarea, dialog")) return;
    event.preventDefault();
    $("filter-box").open = true;
    $("filter-prefix").focus();
  });
}

function start() {
  const hub = new URLSearchParams(location.search).get("taskHub");
  $("hub").textContent = hub ? `task hub ${hub}` : "";
  setupKey();
  const instance = readUrl();
  setupFilters();
  setupCounts();
  setupList();
  setupDetail();
  setupActions();
  setupShortcuts();
  document.addEventListener("visibilitychange", onVisibility);
  applyFilter();
  if (instance) select(instance);
  scheduleRefresh();
}

start();
