// One stream per browser: the tabs of one origin and user elect one holder with a Web Lock, and the
// holder relays what its stream says to the others over a BroadcastChannel.
//
// Why a lock: the browser grants it to one tab at a time and releases it by itself when that tab
// closes, navigates away or crashes, so the next waiting tab takes over at once, with no timeout to
// tune and no two holders. Every tab waits in the lock's queue; the one that gets it opens the stream
// from the last cursor it saw (the relays moved it along), so nothing published in between is missed,
// and applying events as upserts by id means nothing relayed twice is applied twice.

import type { ConnectionState, StateDetail } from "./types.js";

export type Relay =
  | { kind: "event"; type: string; data: unknown; id: string | null }
  | { kind: "state"; state: ConnectionState; detail: StateDetail }
  | { kind: "hello" };

export interface TabGroupHandlers {
  /** This tab now holds the stream for every tab of the group. */
  onLead: () => void;
  /** A message of another tab of the group. */
  onRelay: (relay: Relay) => void;
}

/** Whether this browser can share one stream between tabs. */
export function canShareTabs(): boolean {
  return typeof BroadcastChannel === "function" && typeof navigator !== "undefined" && !!navigator.locks;
}

export class TabGroup {
  leading = false;
  private readonly channel: BroadcastChannel;
  private readonly abort = new AbortController();
  private release: (() => void) | null = null;

  constructor(
    readonly name: string,
    private readonly handlers: TabGroupHandlers,
  ) {
    this.channel = new BroadcastChannel(name);
    this.channel.onmessage = (event: MessageEvent<Relay>) => this.handlers.onRelay(event.data);
  }

  /** Queue for the lock; `onLead` runs when this tab gets it (at once when no other tab holds it). */
  join(): void {
    navigator.locks
      .request(this.name, { signal: this.abort.signal }, () =>
        new Promise<void>((resolve) => {
          this.release = resolve;
          this.leading = true;
          this.handlers.onLead();
        }),
      )
      .catch(() => {}); // aborted by leave() before it was granted
    this.post({ kind: "hello" });
  }

  post(relay: Relay): void {
    try {
      this.channel.postMessage(relay);
    } catch {
      // closed, or data that cannot be cloned: the other tabs resync on the next change
    }
  }

  /** Give up the stream (another tab takes over) and stop listening. */
  leave(): void {
    this.abort.abort();
    this.leading = false;
    this.release?.();
    this.release = null;
    this.channel.close();
  }
}
