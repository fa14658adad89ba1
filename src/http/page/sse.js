// Server-sent events read with fetch(), so that requests carry the key as a
// header (EventSource cannot send headers). The parser follows the
// event-stream rules of the HTML standard: lines end in CRLF, LF or CR
// (also when a chunk ends between CR and LF), `:` starts a comment, `data`
// lines join with newlines, `id` persists until changed, an event with no
// data is not dispatched.

export class SseParser {
  constructor() {
    this.buffer = "";
    this.afterCr = false;
    this.data = [];
    this.type = "";
    this.lastEventId = "";
    this.retry = null;
  }

  /**
   * Feeds decoded text; returns what it completed: events
   * `{type, data, id}` and comments `{comment}` (heartbeats).
   */
  push(text) {
    const out = [];
    let chunk = text;
    if (this.afterCr && chunk.startsWith("\n")) chunk = chunk.slice(1);
    this.afterCr = false;
    this.buffer += chunk;
    for (;;) {
      const end = this.buffer.search(/[\r\n]/);
      if (end < 0) break;
      const line = this.buffer.slice(0, end);
      let skip = 1;
      if (this.buffer[end] === "\r") {
        if (end + 1 < this.buffer.length) {
          if (this.buffer[end + 1] === "\n") skip = 2;
        } else {
          // The LF of this CRLF may start the next chunk.
          this.afterCr = true;
        }
      }
      this.buffer = this.buffer.slice(end + skip);
      this.line(line, out);
    }
    return out;
  }

  line(line, out) {
    if (line === "") {
      if (this.data.length > 0) {
        out.push({ type: this.type || "message", data: this.data.join("\n"), id: this.lastEventId });
      }
      this.data = [];
      this.type = "";
      return;
    }
    if (line.startsWith(":")) {
      out.push({ comment: line.slice(1).trimStart() });
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.type = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break;
    }
  }
}

/**
 * Reads an event stream from a fetch() response body until it ends or
 * `signal` aborts: calls `onItem` with each event or comment, and `onBytes`
 * whenever bytes arrive (a sign of life). Resolves when the server closes
 * the stream; rejects when reading fails or is aborted.
 */
export async function readEvents(body, { onItem, onBytes, parser = new SseParser() }) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return parser;
      if (onBytes) onBytes();
      for (const item of parser.push(value)) onItem(item);
    }
  } finally {
    reader.releaseLock();
  }
}
