// Pure functions of the status page: what a custom status means, how times
// and durations read, which actions a status allows. No DOM, no requests.

/** The runtime statuses, in the order the page shows them. */
export const STATUSES = [
  "Running",
  "Pending",
  "Suspended",
  "ContinuedAsNew",
  "Completed",
  "Failed",
  "Terminated",
  "Canceled",
];

const TERMINAL = new Set(["Completed", "Failed", "Terminated", "Canceled"]);

export function isTerminal(status) {
  return TERMINAL.has(status);
}

/**
 * The actions the server takes for an instance in `status`: terminate,
 * suspend and resume change a running one, purge deletes a finished one.
 */
export function actionsFor(status) {
  const running = ["Running", "Pending", "ContinuedAsNew"].includes(status);
  return {
    terminate: running || status === "Suspended",
    suspend: running,
    resume: status === "Suspended",
    purge: isTerminal(status),
  };
}

const clamp = (value) => Math.min(1, Math.max(0, value));
const finite = (value) => typeof value === "number" && Number.isFinite(value);

/**
 * The progress a custom status holds, or null: `{fraction, text}`, the
 * fraction from 0 to 1. Understood: a number from 0 to 1; `progress` (0 to
 * 1, or a percentage above 1); `done`/`total` and `completed`/`total`;
 * `percentComplete` (0 to 100).
 */
export function progressOf(custom) {
  const percentText = (fraction) => `${Math.round(fraction * 100)}%`;
  if (finite(custom)) {
    return custom >= 0 && custom <= 1 ? { fraction: custom, text: percentText(custom) } : null;
  }
  if (!custom || typeof custom !== "object" || Array.isArray(custom)) return null;
  if (finite(custom.progress) && custom.progress >= 0 && custom.progress <= 100) {
    const fraction = clamp(custom.progress > 1 ? custom.progress / 100 : custom.progress);
    return { fraction, text: percentText(fraction) };
  }
  for (const done of ["done", "completed"]) {
    if (finite(custom[done]) && finite(custom.total) && custom.total > 0 && custom[done] >= 0) {
      const fraction = clamp(custom[done] / custom.total);
      return { fraction, text: `${custom[done]} of ${custom.total} (${percentText(fraction)})` };
    }
  }
  if (finite(custom.percentComplete) && custom.percentComplete >= 0) {
    const fraction = clamp(custom.percentComplete / 100);
    return { fraction, text: percentText(fraction) };
  }
  return null;
}

/** The `nextActions` of a custom status as a list of texts, or null. */
export function nextActionsOf(custom) {
  if (!custom || typeof custom !== "object" || !Array.isArray(custom.nextActions)) return null;
  return custom.nextActions.map((action) =>
    typeof action === "string" ? action : JSON.stringify(action),
  );
}

/** A JSON value to read: pretty, or "(none)" for null and absent values. */
export function jsonText(value) {
  if (value === null || value === undefined) return "(none)";
  return JSON.stringify(value, null, 2);
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

const shortDateTime = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

/**
 * A time from the API (ISO, UTC) in local time, with its date; "" when
 * absent. `short` leaves out the year when it is this year's.
 */
export function formatDate(iso, { short = false, now = new Date() } = {}) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const thisYear = date.getFullYear() === now.getFullYear();
  return (short && thisYear ? shortDateTime : dateTime).format(date);
}

/** A duration in milliseconds, in its two largest units: "2 h 5 min". */
export function formatDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return "";
  const seconds = Math.floor(ms / 1000);
  if (seconds < 1) return "< 1 s";
  const units = [
    ["d", 86400],
    ["h", 3600],
    ["min", 60],
    ["s", 1],
  ];
  const parts = [];
  let rest = seconds;
  for (const [name, size] of units) {
    const count = Math.floor(rest / size);
    rest -= count * size;
    if (count > 0 || parts.length > 0) parts.push([count, name]);
    if (parts.length === 2) break;
  }
  return parts
    .filter(([count], i) => i === 0 || count > 0)
    .map(([count, name]) => `${count} ${name}`)
    .join(" ");
}

/**
 * How long an instance ran: from its creation to its last update when it
 * is finished, to `now` while it runs. `{text, running}`.
 */
export function durationOf(instance, now = Date.now()) {
  const created = Date.parse(instance.createdTime);
  if (Number.isNaN(created)) return { text: "", running: false };
  const running = !isTerminal(instance.runtimeStatus);
  const end = running ? now : Date.parse(instance.lastUpdatedTime);
  return { text: formatDuration(end - created), running };
}

/** The created-time presets of the filter, in milliseconds back from now. */
export const CREATED_PRESETS = { hour: 3600e3, day: 86400e3, week: 7 * 86400e3 };

/**
 * The created-time range of a filter as ISO times: `{from, to}` (either
 * may be absent), or `{error}` when a custom range cannot be used. `from`
 * and `to` of a custom range are `datetime-local` values (local time).
 */
export function createdRange(created, customFrom, customTo, now = Date.now()) {
  if (created in CREATED_PRESETS) {
    return { from: new Date(now - CREATED_PRESETS[created]).toISOString() };
  }
  if (created !== "custom") return {};
  const range = {};
  for (const [name, text] of [
    ["from", customFrom],
    ["to", customTo],
  ]) {
    if (!text) continue;
    const date = new Date(text);
    if (Number.isNaN(date.getTime())) return { error: `the ${name} time is not a date and time` };
    range[name] = date.toISOString();
  }
  if (range.from && range.to && range.from > range.to) {
    return { error: "the range starts after it ends" };
  }
  return range;
}

/** Loaded instances, newest first (then by id). */
export function newestFirst(instances) {
  return [...instances].sort((a, b) => {
    const byTime = (Date.parse(b.createdTime) || 0) - (Date.parse(a.createdTime) || 0);
    return byTime !== 0 ? byTime : a.instanceId < b.instanceId ? -1 : a.instanceId > b.instanceId ? 1 : 0;
  });
}
