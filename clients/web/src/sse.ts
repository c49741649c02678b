// Server-Sent Events read from a fetch() response body ("Interpreting an event stream", HTML standard).
//
// The client reads the stream with fetch rather than EventSource: EventSource hides the HTTP status and
// headers of a refused stream (so a 429's or 503's Retry-After could not be honoured), and its automatic
// reconnect would reuse a stream ticket, which opens one stream only.

export interface SseFrame {
  event: string;
  data: string;
  /** The `id:` of this event, when it had one. */
  id: string | null;
}

/** Parses chunks of text in any split into frames; `retry:` values go to `onRetry`. */
export class SseParser {
  private buffer = "";
  private event = "";
  private data: string[] = [];
  private id: string | null = null;
  private started = false;

  constructor(
    private readonly onFrame: (frame: SseFrame) => void,
    private readonly onRetry: (ms: number) => void = () => {},
  ) {}

  feed(text: string): void {
    if (!this.started && text) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    this.buffer += text;
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) return;
      // A CR at the very end may be the first half of a CRLF split across chunks: wait for more.
      if (match[0] === "\r" && match.index === this.buffer.length - 1) return;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      this.line(line);
    }
  }

  private line(line: string): void {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.onRetry(Number(value));
  }

  private dispatch(): void {
    const frame = { event: this.event || "message", data: this.data.join("\n"), id: this.id };
    const hasData = this.data.length > 0;
    this.event = "";
    this.data = [];
    this.id = null;
    if (hasData) this.onFrame(frame);
  }
}

/** Reads `body` to its end (or until `signal` aborts), handing each complete frame to the parser. */
export async function readEventStream(body: ReadableStream<Uint8Array>, parser: SseParser): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parser.feed(decoder.decode(value, { stream: true }));
    }
  } finally {
    reader.releaseLock();
  }
}
