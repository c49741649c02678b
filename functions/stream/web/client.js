// The notification client (SPEC sections 4, 5, 7) as one dependency-free ES module.
// Generated from clients/web/src by `npm run build` in clients/web: edit the TypeScript there, not this file.
//
//   import { NotificationClient } from "/api/v1/notifications/client.js";
//   const client = new NotificationClient({ getToken: async () => token, onChange: render });
//   await client.start();


// src/backoff.ts
function backoffDelay(attempt, min = 1e3, max = 3e4, random = Math.random) {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
function retryAfterMs(header, now = Date.now()) {
  if (header == null || header.trim() === "") return null;
  const value = header.trim();
  if (/^\d+$/.test(value)) return Number(value) * 1e3;
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}
function nextDelay(backoff, retryAfter, random = Math.random) {
  if (retryAfter == null) return backoff;
  return Math.max(backoff, Math.round(retryAfter * (1 + random() / 4)));
}

// src/errors.ts
var ApiError = class extends Error {
  constructor(status, code, message, retryAfterMs2 = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs2;
  }
};

// src/jwt.ts
function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(part + "=".repeat((4 - part.length % 4) % 4));
    const json = new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
    const value = JSON.parse(json);
    return value !== null && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}
function tokenExpiry(token) {
  const exp = claims(token)?.exp;
  return typeof exp === "number" ? exp : null;
}
function tokenSubject(token) {
  const sub = claims(token)?.sub;
  return typeof sub === "string" && sub ? sub : null;
}

// src/sse.ts
var SseParser = class {
  constructor(onFrame, onRetry = () => {
  }) {
    this.onFrame = onFrame;
    this.onRetry = onRetry;
    this.buffer = "";
    this.event = "";
    this.data = [];
    this.id = null;
    this.started = false;
  }
  feed(text) {
    if (!this.started && text) {
      this.started = true;
      if (text.charCodeAt(0) === 65279) text = text.slice(1);
    }
    this.buffer += text;
    for (; ; ) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) return;
      if (match[0] === "\r" && match.index === this.buffer.length - 1) return;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      this.line(line);
    }
  }
  line(line) {
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
  dispatch() {
    const frame = { event: this.event || "message", data: this.data.join("\n"), id: this.id };
    const hasData = this.data.length > 0;
    this.event = "";
    this.data = [];
    this.id = null;
    if (hasData) this.onFrame(frame);
  }
};
async function readEventStream(body, parser) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  try {
    for (; ; ) {
      const { done, value } = await reader.read();
      if (done) break;
      parser.feed(decoder.decode(value, { stream: true }));
    }
  } finally {
    reader.releaseLock();
  }
}

// src/tabs.ts
function canShareTabs() {
  return typeof BroadcastChannel === "function" && typeof navigator !== "undefined" && !!navigator.locks;
}
var TabGroup = class {
  constructor(name, handlers) {
    this.name = name;
    this.handlers = handlers;
    this.leading = false;
    this.abort = new AbortController();
    this.release = null;
    this.channel = new BroadcastChannel(name);
    this.channel.onmessage = (event) => this.handlers.onRelay(event.data);
  }
  /** Queue for the lock; `onLead` runs when this tab gets it (at once when no other tab holds it). */
  join() {
    navigator.locks.request(
      this.name,
      { signal: this.abort.signal },
      () => new Promise((resolve) => {
        this.release = resolve;
        this.leading = true;
        this.handlers.onLead();
      })
    ).catch(() => {
    });
    this.post({ kind: "hello" });
  }
  post(relay) {
    try {
      this.channel.postMessage(relay);
    } catch {
    }
  }
  /** Give up the stream (another tab takes over) and stop listening. */
  leave() {
    this.abort.abort();
    this.leading = false;
    this.release?.();
    this.release = null;
    this.channel.close();
  }
};

// src/client.ts
var API = "/api/v1/notifications";
var TOKEN_MARGIN_MS = 5e3;
async function errorOf(response) {
  const payload = await response.json().catch(() => null);
  const error = payload?.error ?? {};
  return new ApiError(
    response.status,
    error.code ?? "http_error",
    error.message ?? response.statusText,
    retryAfterMs(response.headers.get("retry-after"))
  );
}
function differs(a, b) {
  return a.updated_at !== b.updated_at || a.event_type !== b.event_type || a.timestamp !== b.timestamp || a.read !== b.read || a.progress_percentage !== b.progress_percentage || a.title !== b.title || a.message !== b.message;
}
function safely(callback) {
  try {
    callback();
  } catch (error) {
    setTimeout(() => {
      throw error;
    });
  }
}
var NotificationClient = class {
  constructor(options) {
    /** Notifications by id. */
    this.byId = /* @__PURE__ */ new Map();
    this.unreadCount = 0;
    this.state = "disconnected";
    this.role = "solo";
    /** Greatest notification id seen; the stream resumes after it. */
    this.lastEventId = "";
    this.token = null;
    this.heartbeatMs = 3e4;
    /** The server's `retry:` hint: how long to wait after it ended a stream on purpose. */
    this.retryMs = 3e3;
    this.attempt = 0;
    this.running = false;
    this.everConnected = false;
    this.historyLoaded = false;
    /** Whether older notifications than the loaded ones exist (see loadMore). */
    this.hasMore = false;
    this.ready = false;
    this.stream = null;
    this.streamSeq = 0;
    this.closingReason = null;
    this.timers = {};
    this.group = null;
    this.listeners = /* @__PURE__ */ new Set();
    this.notificationListeners = /* @__PURE__ */ new Set();
    this.snapshot = { notifications: [], unreadCount: 0, state: "disconnected", role: "solo", hasMore: false };
    /** The current state as one immutable object (for React's useSyncExternalStore). */
    this.getSnapshot = () => this.snapshot;
    /** Calls `listener` after every change of the snapshot; returns the unsubscribe function. */
    this.subscribe = (listener) => {
      this.listeners.add(listener);
      return () => this.listeners.delete(listener);
    };
    // Back online: do not sit out the rest of a long backoff.
    this.online = () => {
      if (this.running && this.role !== "follower" && !this.stream && this.state !== "connecting") {
        clearTimeout(this.timers.retry);
        this.connect();
      }
    };
    if (typeof options?.getToken !== "function") throw new TypeError("getToken() is required");
    const given = Object.fromEntries(Object.entries(options).filter(([, value]) => value !== void 0));
    this.options = {
      baseUrl: "",
      pageSize: 20,
      minBackoffMs: 1e3,
      maxBackoffMs: 3e4,
      shareTabs: true,
      streamAuth: "ticket",
      ...given
    };
  }
  /** Newest first. */
  get notifications() {
    return [...this.byId.values()].sort((a, b) => a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
  }
  /** Like the onNotification option, for any number of listeners; returns the unsubscribe function. */
  addNotificationListener(listener) {
    this.notificationListeners.add(listener);
    return () => this.notificationListeners.delete(listener);
  }
  /** Load the newest history page, then hold the stream (or follow the tab that holds it). */
  async start() {
    if (this.running) return;
    this.running = true;
    globalThis.addEventListener?.("online", this.online);
    this.token = await this.options.getToken();
    if (!this.running) return;
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
  stop() {
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
  async refresh() {
    const page = await this.request("GET", `?limit=${this.options.pageSize}`);
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
      if (id <= newest && (complete || id >= oldest)) this.byId.delete(id);
    }
    for (const n of list) this.byId.set(n.id, n);
    if (!this.lastEventId && page.stream_cursor) this.lastEventId = page.stream_cursor;
    let unread = page.unread_count;
    for (const n of this.byId.values()) if (n.id > newest && !n.read) unread += 1;
    this.unreadCount = unread;
    this.historyLoaded = true;
    this.changed();
    if (!initial) {
      for (const n of list) if (!known.has(n.id) && n.id > seenUpTo) this.announce(n);
    }
    return page;
  }
  /** Older notifications, for "load more". */
  async loadMore() {
    const list = this.notifications;
    const cursor = list.length ? list[list.length - 1].id : "";
    const page = await this.request(
      "GET",
      `?limit=${this.options.pageSize}&cursor=${encodeURIComponent(cursor)}`
    );
    for (const n of page.notifications) if (!this.byId.has(n.id)) this.byId.set(n.id, n);
    this.hasMore = page.next_cursor != null;
    this.changed();
    return page;
  }
  async markRead(ids) {
    this.applyRead(ids, true);
    return this.request("POST", "/mark-read", { notification_ids: ids });
  }
  async markAllRead() {
    this.applyRead([...this.byId.keys()], true);
    this.unreadCount = 0;
    this.changed();
    return this.request("POST", "/mark-read", { all: true });
  }
  async markUnread(ids) {
    this.applyRead(ids, false);
    return this.request("POST", "/mark-unread", { notification_ids: ids });
  }
  async remove(id) {
    this.applyDelete({ ids: [id] });
    return this.request("DELETE", `/${encodeURIComponent(id)}`);
  }
  async clearAll() {
    this.applyDelete({ all: true });
    return this.request("DELETE", "");
  }
  /** One call to the API with the bearer token; a 401 renews the token once and retries. */
  async request(method, path, body, retried = false, signal) {
    if (!this.token) this.token = await this.options.getToken();
    const response = await fetch(`${this.options.baseUrl}${API}${path}`, {
      method,
      headers: { Authorization: `Bearer ${this.token}`, ...body ? { "Content-Type": "application/json" } : {} },
      body: body ? JSON.stringify(body) : void 0,
      cache: "no-store",
      signal
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
  joinTabs() {
    const user = this.token ? tokenSubject(this.token) : null;
    if (!this.options.shareTabs || !user || !canShareTabs()) return;
    const base = new URL(this.options.baseUrl || "/", globalThis.location?.href).href;
    this.role = "follower";
    this.group = new TabGroup(`notifications ${base} ${user}`, {
      onLead: () => this.lead(),
      onRelay: (relay) => this.relayed(relay)
    });
    this.group.join();
  }
  lead() {
    if (!this.running) return;
    this.role = "leader";
    if (this.historyLoaded) this.everConnected = true;
    this.emit();
    if (this.ready) this.connect();
  }
  relayed(relay) {
    if (!this.running) return;
    if (relay.kind === "hello") {
      if (this.role === "leader") this.group?.post({ kind: "state", state: this.state, detail: {} });
    } else if (relay.kind === "state") {
      if (this.role === "follower") this.setState(relay.state, relay.detail);
    } else {
      this.handle(relay.type, relay.data, relay.id, false);
    }
  }
  // ---- the stream (SPEC section 4) ----
  connect() {
    this.closeStream();
    if (!this.running || this.role === "follower") return;
    const exp = this.token ? tokenExpiry(this.token) : null;
    if (exp !== null && exp * 1e3 < Date.now() + TOKEN_MARGIN_MS) {
      void this.renewToken();
      return;
    }
    const seq = ++this.streamSeq;
    const stream = new AbortController();
    this.stream = stream;
    this.closingReason = null;
    this.setState("connecting", { attempt: this.attempt });
    this.armWatchdog();
    void this.read(seq, stream);
  }
  current(seq) {
    return this.running && seq === this.streamSeq && this.stream !== null && !this.stream.signal.aborted;
  }
  async read(seq, stream) {
    let response;
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
      }
    );
    try {
      await readEventStream(response.body, parser);
    } catch {
    }
    if (!this.current(seq)) return;
    this.stream = null;
    this.disarmWatchdog();
    this.ended();
  }
  async streamUrl(signal) {
    const query = new URLSearchParams();
    if (this.options.streamAuth === "token") {
      query.set("token", this.token ?? "");
    } else {
      const answer = await this.request("POST", "/stream-ticket", void 0, false, signal);
      if (typeof answer?.ticket !== "string") throw new ApiError(502, "bad_ticket", "no ticket in the answer");
      query.set("ticket", answer.ticket);
    }
    if (this.lastEventId) query.set("last_event_id", this.lastEventId);
    return `${this.options.baseUrl}${API}/stream?${query}`;
  }
  /** A stream attempt failed before it was established: why decides what comes next. */
  failed(error) {
    this.stream = null;
    this.disarmWatchdog();
    const status = error?.status ?? 0;
    this.setState("error", { reason: error ? error.code : "unreachable", status });
    if (status === 403) return;
    if (status === 401 && !error?.code.startsWith("ticket_")) {
      void this.renewToken(true);
      return;
    }
    this.scheduleReconnect(error?.retryAfterMs ?? null);
  }
  /** The server ended the response. */
  ended() {
    const reason = this.closingReason;
    if (reason === "token_expired") {
      void this.renewToken();
    } else if (reason) {
      const delay = Math.round(this.retryMs / 2 + Math.random() * this.retryMs / 2);
      this.setState("disconnected", { reason, retryInMs: delay });
      clearTimeout(this.timers.retry);
      this.timers.retry = setTimeout(() => this.connect(), delay);
    } else {
      this.scheduleReconnect(null);
    }
  }
  scheduleReconnect(retryAfter) {
    const backoff = backoffDelay(this.attempt, this.options.minBackoffMs, this.options.maxBackoffMs);
    const delay = nextDelay(backoff, retryAfter);
    this.attempt += 1;
    this.setState("disconnected", { retryInMs: delay });
    clearTimeout(this.timers.retry);
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }
  /** @param backOff reconnect after the backoff delay instead of at once */
  async renewToken(backOff = false) {
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
    if (exp !== null && exp * 1e3 < Date.now() + TOKEN_MARGIN_MS) {
      this.setState("error", { reason: "getToken returned an expired token" });
      clearTimeout(this.timers.retry);
      const delay = backoffDelay(this.attempt++, this.options.minBackoffMs, this.options.maxBackoffMs);
      this.timers.retry = setTimeout(() => void this.renewToken(), delay);
      return;
    }
    if (backOff) this.scheduleReconnect(null);
    else this.connect();
  }
  armWatchdog() {
    clearTimeout(this.timers.watchdog);
    this.timers.watchdog = setTimeout(() => {
      this.closeStream();
      this.setState("disconnected", { reason: "heartbeat timeout" });
      this.connect();
    }, this.heartbeatMs * 2.5);
  }
  disarmWatchdog() {
    clearTimeout(this.timers.watchdog);
  }
  closeStream() {
    this.disarmWatchdog();
    if (this.stream) {
      this.stream.abort();
      this.stream = null;
    }
  }
  frame(frame) {
    this.armWatchdog();
    let data;
    try {
      data = JSON.parse(frame.data);
    } catch {
      return;
    }
    this.group?.post({ kind: "event", type: frame.event, data, id: frame.id });
    this.handle(frame.event, data, frame.id, true);
  }
  /** One stream event, from this tab's own stream (`own`) or relayed by the tab that holds it. */
  handle(type, data, id, own) {
    if (data === null || typeof data !== "object") return;
    const event = data;
    switch (type) {
      case "connection.established": {
        this.heartbeatMs = (Number(event.heartbeat_interval) || 30) * 1e3;
        if (!own) {
          this.everConnected = true;
          this.refresh().catch(() => {
          });
          break;
        }
        this.attempt = 0;
        this.armWatchdog();
        this.everConnected = true;
        this.setState("connected", event);
        if (!this.historyLoaded) this.refresh().catch(() => {
        });
        break;
      }
      case "notification":
        this.applyNotification(data, id);
        break;
      case "notification.updated":
        if (id) this.lastEventId = id;
        this.applyRead(Array.isArray(event.ids) ? event.ids : [], Boolean(event.read));
        break;
      case "notification.deleted":
        if (id) this.lastEventId = id;
        this.applyDelete(event);
        break;
      case "replay.truncated":
        this.refresh().catch(() => {
        }).then(() => safely(() => this.options.onTruncated?.(event)));
        break;
      case "stream.closing":
        if (!own) break;
        this.closingReason = String(event.reason);
        this.setState("disconnected", { reason: this.closingReason });
        if (this.closingReason === "token_expired") void this.renewToken();
        break;
      default:
        break;
    }
  }
  // ---- keeping the list in step ----
  applyNotification(n, eventId) {
    if (!n || typeof n.id !== "string") return;
    if (eventId) this.lastEventId = eventId;
    const known = this.byId.get(n.id);
    if (known && !differs(known, n)) return;
    this.byId.set(n.id, n);
    if (!known) {
      if (!n.read) this.unreadCount += 1;
    } else if (known.read !== n.read) {
      this.unreadCount = Math.max(0, this.unreadCount + (n.read ? -1 : 1));
    }
    this.changed();
    if (!known || known.event_type !== n.event_type || known.timestamp !== n.timestamp) this.announce(n);
  }
  applyRead(ids, read) {
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
    if (unknown) this.resyncSoon();
  }
  applyDelete(data) {
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
  resyncSoon() {
    clearTimeout(this.timers.refresh);
    this.timers.refresh = setTimeout(() => this.refresh().catch(() => {
    }), 300);
  }
  announce(n) {
    safely(() => this.options.onNotification?.(n));
    for (const listener of this.notificationListeners) safely(() => listener(n));
  }
  changed() {
    const notifications = this.notifications;
    safely(() => this.options.onChange?.(notifications, this.unreadCount));
    this.emit(notifications);
  }
  emit(notifications = this.snapshot.notifications) {
    this.snapshot = {
      notifications,
      unreadCount: this.unreadCount,
      state: this.state,
      role: this.role,
      hasMore: this.hasMore
    };
    for (const listener of this.listeners) safely(listener);
  }
  setState(state, detail = {}) {
    this.state = state;
    if (this.role === "leader") this.group?.post({ kind: "state", state, detail });
    safely(() => this.options.onStateChange?.(state, detail));
    this.emit();
  }
};
export {
  ApiError,
  NotificationClient,
  backoffDelay,
  retryAfterMs,
  tokenExpiry,
  tokenSubject
};
