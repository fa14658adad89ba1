// Requests to the status API. The key is kept for the tab (sessionStorage)
// and sent as the x-functions-key header; it never goes into a URL.

export const BASE = "/runtime/webhooks/durabletask";
export const CONTINUATION = "x-ms-continuation-token";
const KEY_ITEM = "durable-status.key";

let memoryKey = "";

export const key = {
  get() {
    try {
      return sessionStorage.getItem(KEY_ITEM) || memoryKey;
    } catch {
      return memoryKey;
    }
  },
  set(value) {
    try {
      if (value) sessionStorage.setItem(KEY_ITEM, value);
      else sessionStorage.removeItem(KEY_ITEM);
    } catch {
      // Storage refused (a private window's quota): the key lasts until reload.
    }
    memoryKey = value;
  },
};

/** An answer that is an error: its status, and the server's message. */
export class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** Whether an error is an abort (a request replaced or cancelled). */
export function isAbort(error) {
  return error && (error.name === "AbortError" || error.name === "TimeoutError");
}

/** The task hub of the page's URL (`taskHub=`), passed on to the API. */
const taskHub = new URLSearchParams(location.search).get("taskHub");

/** The URL of an API path with its query (values percent-encoded). */
export function apiUrl(path, query = {}) {
  const url = new URL(BASE + path, location.origin);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  if (taskHub) url.searchParams.set("taskHub", taskHub);
  return url;
}

function headers(extra = {}) {
  const all = { accept: "application/json", ...extra };
  const value = key.get();
  if (value) all["x-functions-key"] = value;
  return all;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && typeof body.Message === "string" && body.Message) message = body.Message;
  } catch {
    // Not JSON: the status line says it.
  }
  const retry = Number(response.headers.get("retry-after"));
  return new ApiError(response.status, message, Number.isFinite(retry) && retry > 0 ? retry : null);
}

/**
 * Sends a request; resolves to `{status, headers, body}` for 2xx and 304
 * answers (body null when empty), rejects with an ApiError otherwise.
 */
export async function request(path, { method = "GET", query, signal, headers: extra } = {}) {
  let response;
  try {
    response = await fetch(apiUrl(path, query), {
      method,
      headers: headers(extra),
      signal,
      cache: "no-store",
    });
  } catch (error) {
    if (isAbort(error)) throw error;
    throw new ApiError(0, `the server cannot be reached (${error.message})`);
  }
  if (!response.ok && response.status !== 304) throw await errorOf(response);
  const text = response.status === 304 ? "" : await response.text();
  let body = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      throw new ApiError(response.status, "the server's answer is not JSON");
    }
  }
  return { status: response.status, headers: response.headers, body };
}

/**
 * Opens an event stream: resolves to the response once the server
 * accepted it (its body still to be read), rejects with an ApiError.
 */
export async function openStream(path, { signal, lastEventId }) {
  const extra = { accept: "text/event-stream" };
  if (lastEventId) extra["last-event-id"] = lastEventId;
  let response;
  try {
    response = await fetch(apiUrl(path), { headers: headers(extra), signal, cache: "no-store" });
  } catch (error) {
    if (isAbort(error)) throw error;
    throw new ApiError(0, `the server cannot be reached (${error.message})`);
  }
  if (!response.ok) throw await errorOf(response);
  const type = response.headers.get("content-type") || "";
  if (!type.startsWith("text/event-stream")) {
    response.body?.cancel();
    throw new ApiError(response.status, `the server answered ${type || "no content type"}, not an event stream`);
  }
  return response;
}

/**
 * One request in flight for a view: starting one aborts the one before.
 * `run(work)` calls `work(signal)`; its result, or `undefined` when it was
 * replaced (its answer is dropped).
 */
export class View {
  constructor() {
    this.controller = null;
  }

  get busy() {
    return this.controller !== null;
  }

  abort() {
    if (this.controller) this.controller.abort();
    this.controller = null;
  }

  async run(work) {
    this.abort();
    const controller = new AbortController();
    this.controller = controller;
    try {
      const result = await work(controller.signal);
      return controller.signal.aborted ? undefined : result;
    } catch (error) {
      if (controller.signal.aborted || isAbort(error)) return undefined;
      throw error;
    } finally {
      if (this.controller === controller) this.controller = null;
    }
  }
}
