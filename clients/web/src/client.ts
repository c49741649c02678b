// The notification client (SPEC sections 4, 5, 7): history, one live stream per browser, and the list
// kept in step.
//
//   const client = new NotificationClient({ getToken: async () => token, onChange: render });
//   await client.start();
//
// It loads the newest page of history, then (in the one tab that holds the stream for every tab of this
// origin and user, see tabs.ts) asks for a stream ticket and reads the stream with fetch, resuming after
// the last notification id it saw; the other tabs get each event relayed. Events apply as upserts and
// deletes by id, so a replayed or relayed event is applied once. Failures back off from 1 s to 30 s with
// jitter, never sooner than a 429's or 503's Retry-After; an expired token is renewed through
// getToken(); a stream that stops sending heartbeats is restarted.

import { backoffDelay, nextDelay, retryAfterMs } from "./backoff.js";
import { ApiError } from "./errors.js";
import { tokenExpiry, tokenSubject } from "./jwt.js";
import { SseParser, readEventStream, type SseFrame } from "./sse.js";
import { TabGroup, canShareTabs, type Relay } from "./tabs.js";
import type {
  ClientOptions,
  ConnectionState,
  HistoryPage,
  Notification,
  Snapshot,
  StateDetail,
  TabRole,
} from "./types.js";

const API = "/api/v1/notifications";
/** A token this close to its expiry is renewed before it is used for a stream. */
const TOKEN_MARGIN_MS = 5000;

type Timer = ReturnType<typeof setTimeout>;
type Settings = Required<Pick<ClientOptions, "baseUrl" | "pageSize" | "minBackoffMs" | "maxBackoffMs">> &
  Required<Pick<ClientOptions, "shareTabs" | "streamAuth">> &
  ClientOptions;

async function errorOf(response: Response): Promise<ApiError> {
  const payload = (await response.json().catch(() => null)) as { error?: { code?: string; message?: string } } | null;
  const error = payload?.error ?? {};
  return new ApiError(
    response.status,
    error.code ?? "http_error",
    error.message ?? response.statusText,
    retryAfterMs(response.headers.get("retry-after")),
  );
}

/** Whether `b` is another state of notification `a` (not the same one seen again). */
function differs(a: Notification, b: Notification): boolean {
  return (
    a.updated_at !== b.updated_at ||
    a.event_type !== b.event_type ||
    a.timestamp !== b.timestamp ||
    a.read !== b.read ||
    a.progress_percentage !== b.progress_percentage ||
    a.title !== b.title ||
    a.message !== b.message
  );
}

function safely(callback: () => void): void {
  try {
    callback();
  } catch (error) {
    // A page's callback must not break the stream or the relay.
    setTimeout(() => {
      throw error;
    });
  }
}

export class NotificationClient {
  readonly options: Settings;
  /** Notifications by id. */
  readonly byId = new Map<string, Notification>();
  unreadCount = 0;
  state: ConnectionState = "disconnected";
  role: TabRole = "solo";
  /** Greatest notification id seen; the stream resumes after it. */
  lastEventId = "";
  token: string | null = null;
  heartbeatMs = 30000;
  /** The server's `retry:` hint: how long to wait after it ended a stream on purpose. */
  retryMs = 3000;
  attempt = 0;
  running = false;
  everConnected = false;
  historyLoaded = false;
  /** Whether older notifications than the loaded ones exist (see loadMore). */
  hasMore = false;

  private ready = false;
  private stream: AbortController | null = null;
  private streamSeq = 0;
  private closingReason: string | null = null;
  private readonly timers: { retry?: Timer; watchdog?: Timer; refresh?: Timer } = {};
  private group: TabGroup | null = null;
  private readonly listeners = new Set<() => void>();
  private readonly notificationListeners = new Set<(notification: Notification) => void>();
  private snapshot: Snapshot = { notifications: [], unreadCount: 0, state: "disconnected", role: "solo", hasMore: false };

  constructor(options: ClientOptions) {
    if (typeof options?.getToken !== "function") throw new TypeError("getToken() is required");
    // Options left undefined (a React prop not given) keep their defaults.
    const given = Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
    this.options = {
      baseUrl: "",
      pageSize: 20,
      minBackoffMs: 1000,
      maxBackoffMs: 30000,
      shareTabs: true,
      streamAuth: "ticket",
      ...(given as ClientOptions),
    };
  }

  /** Newest first. */
  get notifications(): Notification[] {
    return [...this.byId.values()].sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  }

  /** The current state as one immutable object (for React's useSyncExternalStore). */
  getSnapshot = (): Snapshot => this.snapshot;

  /** Calls `listener` after every change of the snapshot; returns the unsubscribe function. */
  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  /** Like the onNotification option, for any number of listeners; returns the unsubscribe function. */
  addNotificationListener(listener: (notification: Notification) => void): () => void {
    this.notificationListeners.add(listener);
    return () => this.notificationListeners.delete(listener);
  }

  /** Load the newest history page, then hold the stream (or follow the tab that holds it). */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    globalThis.addEventListener?.("online", this.online);
    this.token = await this.options.getToken();
    if (!this.running) return;
    // Before the history page: whatever is relayed meanwhile is reconciled by it.
    this.joinTabs();
    try {
      await this.refresh();
    } catch (error) {
      this.setState("error", { reason: "history", error });
    }
    this.ready = true;
    if (this.running && this.role !== "follower") this.connect();
  }

  /** Close the stream (another tab takes it over) and stop reconnecting. */
  stop(): void {
    this.running = false;
    globalThis.removeEventListener?.("online", this.online);
    this.closeStream();
    clearTimeout(this.timers.retry);
    clearTimeout(this.timers.refresh);
    const group = this.group;
    this.group = null;
    group?.leave();
    this.setState("disconnected", { reason: "stopped" });
  }

  // ---- history API (SPEC section 5) ----

  /**
   * Reload the newest page and the unread count, reconciling with what arrived live meanwhile: the
   * server is the truth up to the page's newest id, the stream after it.
   */
  async refresh(): Promise<HistoryPage> {
    const page = (await this.request("GET", `?limit=${this.options.pageSize}`)) as HistoryPage;
    const list = page.notifications;
    const newest = list.length ? list[0].id : "";
    const oldest = list.length ? list[list.length - 1].id : "";
    const complete = page.next_cursor == null;
    const initial = !this.historyLoaded;
    let seenUpTo = "";
    for (const id of this.byId.keys()) if (id > seenUpTo) seenUpTo = id;
    if (initial || complete) this.hasMore = !complete;
    const known = new Set(this.byId.keys());
    for (const id of known) {
      // Anything inside the page's range that the page does not hold was deleted meanwhile.
      if (id <= newest && (complete || id >= oldest)) this.byId.delete(id);
    }
    for (const n of list) this.byId.set(n.id, n);
    // Before the stream has said anything, resume after what this page holds (the feed's cursor).
    if (!this.lastEventId && page.stream_cursor) this.lastEventId = page.stream_cursor;
    let unread = page.unread_count;
    for (const n of this.byId.values()) if (n.id > newest && !n.read) unread += 1;
    this.unreadCount = unread;
    this.historyLoaded = true;
    this.changed();
    // A resync can be the first to bring what was published during a gap (before the stream's replay
    // or a relay does): it is new to this tab all the same, and announced once, whichever came first.
    if (!initial) for (const n of list) if (!known.has(n.id) && n.id > seenUpTo) this.announce(n);
    return page;
  }

  /** Older notifications, for "load more". */
  async loadMore(): Promise<HistoryPage> {
    const list = this.notifications;
    const cursor = list.length ? list[list.length - 1].id : "";
    const page = (await this.request(
      "GET",
      `?limit=${this.options.pageSize}&cursor=${encodeURIComponent(cursor)}`,
    )) as HistoryPage;
    for (const n of page.notifications) if (!this.byId.has(n.id)) this.byId.set(n.id, n);
    this.hasMore = page.next_cursor != null;
    this.changed();
    return page;
  }

  async markRead(ids: string[]): Promise<unknown> {
    this.applyRead(ids, true);
    return this.request("POST", "/mark-read", { notification_ids: ids });
  }

  async markAllRead(): Promise<unknown> {
    this.applyRead([...this.byId.keys()], true);
    this.unreadCount = 0;
    this.changed();
    return this.request("POST", "/mark-read", { all: true });
  }

  async markUnread(ids: string[]): Promise<unknown> {
    this.applyRead(ids, false);
    return this.request("POST", "/mark-unread", { notification_ids: ids });
  }

  async remove(id: string): Promise<unknown> {
    this.applyDelete({ ids: [id] });
    return this.request("DELETE", `/${encodeURIComponent(id)}`);
  }

  async clearAll(): Promise<unknown> {
    this.applyDelete({ all: true });
    return this.request("DELETE", "");
  }

  /** One call to the API with the bearer token; a 401 renews the token once and retries. */
  async request(method: string, path: string, body?: unknown, retried = false, signal?: AbortSignal): Promise<unknown> {
    if (!this.token) this.token = await this.options.getToken();
    const response = await fetch(`${this.options.baseUrl}${API}${path}`, {
      method,
      headers: { Authorization: `Bearer ${this.token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      cache: "no-store",
      signal,
    });
    if (response.status === 401 && !retried) {
      this.token = await this.options.getToken();
      return this.request(method, path, body, true, signal);
    }
    if (response.status === 204) return null;
    if (!response.ok) throw await errorOf(response);
    return response.json();
  }

  // ---- sharing one stream between tabs (tabs.ts) ----

  private joinTabs(): void {
    const user = this.token ? tokenSubject(this.token) : null;
    if (!this.options.shareTabs || !user || !canShareTabs()) return;
    const base = new URL(this.options.baseUrl || "/", globalThis.location?.href).href;
    this.role = "follower";
    this.group = new TabGroup(`notifications ${base} ${user}`, {
      onLead: () => this.lead(),
      onRelay: (relay) => this.relayed(relay),
    });
    this.group.join();
  }

  private lead(): void {
    if (!this.running) return;
    this.role = "leader";
    // Read/delete changes made while the previous holder's stream was gone are not replayed: the first
    // connection resyncs the history, as after any reconnect.
    if (this.historyLoaded) this.everConnected = true;
    this.emit();
    if (this.ready) this.connect();
  }

  private relayed(relay: Relay): void {
    if (!this.running) return;
    if (relay.kind === "hello") {
      if (this.role === "leader") this.group?.post({ kind: "state", state: this.state, detail: {} });
    } else if (relay.kind === "state") {
      if (this.role === "follower") this.setState(relay.state, relay.detail);
    } else {
      // Also a late message of a previous holder after this tab took over: upserts by id, harmless.
      this.handle(relay.type, relay.data, relay.id, false);
    }
  }

  // ---- the stream (SPEC section 4) ----

  private connect(): void {
    this.closeStream();
    if (!this.running || this.role === "follower") return;
    const exp = this.token ? tokenExpiry(this.token) : null;
    if (exp !== null && exp * 1000 < Date.now() + TOKEN_MARGIN_MS) {
      void this.renewToken();
      return;
    }
    const seq = ++this.streamSeq;
    const stream = new AbortController();
    this.stream = stream;
    this.closingReason = null;
    this.setState("connecting", { attempt: this.attempt });
    this.armWatchdog(); // also covers a ticket request or a connection attempt that hangs
    void this.read(seq, stream);
  }

  private current(seq: number): boolean {
    return this.running && seq === this.streamSeq && this.stream !== null && !this.stream.signal.aborted;
  }

  private async read(seq: number, stream: AbortController): Promise<void> {
    let response: Response;
    try {
      const url = await this.streamUrl(stream.signal);
      if (!this.current(seq)) return;
      response = await fetch(url, { headers: { Accept: "text/event-stream" }, cache: "no-store", signal: stream.signal });
    } catch (error) {
      if (this.current(seq)) this.failed(error instanceof ApiError ? error : null);
      return;
    }
    if (!this.current(seq)) {
      stream.abort();
      return;
    }
    if (!response.ok || !response.body) {
      this.failed(await errorOf(response));
      return;
    }
    const parser = new SseParser(
      (frame) => {
        if (this.current(seq)) this.frame(frame);
      },
      (ms) => {
        this.retryMs = ms;
      },
    );
    try {
      await readEventStream(response.body, parser);
    } catch {
      // the connection dropped, or this client aborted it
    }
    if (!this.current(seq)) return;
    this.stream = null;
    this.disarmWatchdog();
    this.ended();
  }

  private async streamUrl(signal: AbortSignal): Promise<string> {
    const query = new URLSearchParams();
    if (this.options.streamAuth === "token") {
      query.set("token", this.token ?? "");
    } else {
      const answer = (await this.request("POST", "/stream-ticket", undefined, false, signal)) as { ticket?: unknown };
      if (typeof answer?.ticket !== "string") throw new ApiError(502, "bad_ticket", "no ticket in the answer");
      query.set("ticket", answer.ticket);
    }
    if (this.lastEventId) query.set("last_event_id", this.lastEventId);
    return `${this.options.baseUrl}${API}/stream?${query}`;
  }

  /** A stream attempt failed before it was established: why decides what comes next. */
  private failed(error: ApiError | null): void {
    this.stream = null;
    this.disarmWatchdog();
    const status = error?.status ?? 0;
    this.setState("error", { reason: error ? error.code : "unreachable", status });
    if (status === 403) return; // this token may not stream at all: retrying cannot help
    if (status === 401 && !error?.code.startsWith("ticket_")) {
      // The token was refused: renew it, then wait out the backoff (a getToken() whose tokens the
      // server keeps refusing must not spin). A refused ticket only needs a new ticket.
      void this.renewToken(true);
      return;
    }
    this.scheduleReconnect(error?.retryAfterMs ?? null);
  }

  /** The server ended the response. */
  private ended(): void {
    const reason = this.closingReason;
    if (reason === "token_expired") {
      void this.renewToken();
    } else if (reason) {
      // Ended on purpose (max_duration, shutdown, slow_consumer): come back after the server's retry
      // hint, spread over its second half so the streams of a stopping instance do not return in step.
      const delay = Math.round(this.retryMs / 2 + (Math.random() * this.retryMs) / 2);
      this.setState("disconnected", { reason, retryInMs: delay });
      clearTimeout(this.timers.retry);
      this.timers.retry = setTimeout(() => this.connect(), delay);
    } else {
      this.scheduleReconnect(null); // dropped without a word
    }
  }

  private scheduleReconnect(retryAfter: number | null): void {
    const backoff = backoffDelay(this.attempt, this.options.minBackoffMs, this.options.maxBackoffMs);
    const delay = nextDelay(backoff, retryAfter);
    this.attempt += 1;
    this.setState("disconnected", { retryInMs: delay });
    clearTimeout(this.timers.retry);
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }

  /** @param backOff reconnect after the backoff delay instead of at once */
  private async renewToken(backOff = false): Promise<void> {
    this.closeStream();
    try {
      this.token = await this.options.getToken();
    } catch (error) {
      this.setState("error", { reason: "getToken failed", error });
      this.scheduleReconnect(null);
      return;
    }
    if (!this.running) return;
    const exp = tokenExpiry(this.token);
    if (exp !== null && exp * 1000 < Date.now() + TOKEN_MARGIN_MS) {
      // getToken() handed back an expired token: do not spin, back off.
      this.setState("error", { reason: "getToken returned an expired token" });
      clearTimeout(this.timers.retry);
      const delay = backoffDelay(this.attempt++, this.options.minBackoffMs, this.options.maxBackoffMs);
      this.timers.retry = setTimeout(() => void this.renewToken(), delay);
      return;
    }
    if (backOff) this.scheduleReconnect(null);
    else this.connect();
  }

  // Back online: do not sit out the rest of a long backoff.
  private readonly online = (): void => {
    if (this.running && this.role !== "follower" && !this.stream && this.state !== "connecting") {
      clearTimeout(this.timers.retry);
      this.connect();
    }
  };

  private armWatchdog(): void {
    clearTimeout(this.timers.watchdog);
    this.timers.watchdog = setTimeout(() => {
      // No heartbeat for 2.5 intervals: the connection is dead even if the socket looks open.
      this.closeStream();
      this.setState("disconnected", { reason: "heartbeat timeout" });
      this.connect();
    }, this.heartbeatMs * 2.5);
  }

  private disarmWatchdog(): void {
    clearTimeout(this.timers.watchdog);
  }

  private closeStream(): void {
    this.disarmWatchdog();
    if (this.stream) {
      this.stream.abort();
      this.stream = null;
    }
  }

  private frame(frame: SseFrame): void {
    this.armWatchdog();
    let data: unknown;
    try {
      data = JSON.parse(frame.data);
    } catch {
      return; // not ours; never let one bad frame break the stream
    }
    this.group?.post({ kind: "event", type: frame.event, data, id: frame.id });
    this.handle(frame.event, data, frame.id, true);
  }

  /** One stream event, from this tab's own stream (`own`) or relayed by the tab that holds it. */
  private handle(type: string, data: unknown, id: string | null, own: boolean): void {
    if (data === null || typeof data !== "object") return;
    const event = data as Record<string, unknown>;
    switch (type) {
      case "connection.established": {
        this.heartbeatMs = (Number(event.heartbeat_interval) || 30) * 1000;
        if (!own) {
          // A follower cannot tell what its leader's gap missed of read/delete changes: resync.
          this.everConnected = true;
          this.refresh().catch(() => {});
          break;
        }
        this.attempt = 0;
        this.armWatchdog();
        this.everConnected = true;
        this.setState("connected", event);
        // Every change after lastEventId is replayed, reads and deletions included: no reload needed.
        if (!this.historyLoaded) this.refresh().catch(() => {});
        break;
      }
      case "notification":
        this.applyNotification(data as Notification, id);
        break;
      case "notification.updated":
        if (id) this.lastEventId = id;
        this.applyRead(Array.isArray(event.ids) ? (event.ids as string[]) : [], Boolean(event.read));
        break;
      case "notification.deleted":
        if (id) this.lastEventId = id;
        this.applyDelete(event as { ids?: string[]; all?: boolean });
        break;
      case "replay.truncated":
        this.refresh()
          .catch(() => {})
          .then(() => safely(() => this.options.onTruncated?.(event as { missed_at_least: number })));
        break;
      case "stream.closing":
        if (!own) break;
        this.closingReason = String(event.reason);
        this.setState("disconnected", { reason: this.closingReason });
        // The token is gone: renew it now rather than wait for the server to end the response.
        if (this.closingReason === "token_expired") void this.renewToken();
        break;
      default:
        break; // heartbeat, and events of a newer server
    }
  }

  // ---- keeping the list in step ----

  private applyNotification(n: Notification, eventId: string | null): void {
    if (!n || typeof n.id !== "string") return;
    // The change's cursor: opaque, only the server compares cursors.
    if (eventId) this.lastEventId = eventId;
    const known = this.byId.get(n.id);
    if (known && !differs(known, n)) return; // replayed after a reconnect, relayed twice, or redelivered
    this.byId.set(n.id, n);
    if (!known) {
      if (!n.read) this.unreadCount += 1;
    } else if (known.read !== n.read) {
      this.unreadCount = Math.max(0, this.unreadCount + (n.read ? -1 : 1));
    }
    this.changed();
    if (!known || known.event_type !== n.event_type || known.timestamp !== n.timestamp) this.announce(n);
  }

  private applyRead(ids: string[], read: boolean): void {
    let unknown = false;
    for (const id of ids) {
      const n = this.byId.get(id);
      if (!n) {
        unknown = true;
        continue;
      }
      if (n.read !== read) {
        this.byId.set(id, { ...n, read });
        this.unreadCount = Math.max(0, this.unreadCount + (read ? -1 : 1));
      }
    }
    this.changed();
    // Changes to notifications older than the loaded page move the count in ways only the server knows.
    if (unknown) this.resyncSoon();
  }

  private applyDelete(data: { ids?: string[]; all?: boolean }): void {
    if (data.all) {
      this.byId.clear();
      this.unreadCount = 0;
    } else {
      let unknown = false;
      for (const id of data.ids ?? []) {
        const n = this.byId.get(id);
        if (!n) unknown = true;
        else {
          this.byId.delete(id);
          if (!n.read) this.unreadCount = Math.max(0, this.unreadCount - 1);
        }
      }
      if (unknown) this.resyncSoon();
    }
    this.changed();
  }

  private resyncSoon(): void {
    clearTimeout(this.timers.refresh);
    this.timers.refresh = setTimeout(() => this.refresh().catch(() => {}), 300);
  }

  private announce(n: Notification): void {
    safely(() => this.options.onNotification?.(n));
    for (const listener of this.notificationListeners) safely(() => listener(n));
  }

  private changed(): void {
    const notifications = this.notifications;
    safely(() => this.options.onChange?.(notifications, this.unreadCount));
    this.emit(notifications);
  }

  private emit(notifications: readonly Notification[] = this.snapshot.notifications): void {
    this.snapshot = {
      notifications,
      unreadCount: this.unreadCount,
      state: this.state,
      role: this.role,
      hasMore: this.hasMore,
    };
    for (const listener of this.listeners) safely(listener);
  }

  private setState(state: ConnectionState, detail: StateDetail = {}): void {
    this.state = state;
    if (this.role === "leader") this.group?.post({ kind: "state", state, detail });
    safely(() => this.options.onStateChange?.(state, detail));
    this.emit();
  }
}
