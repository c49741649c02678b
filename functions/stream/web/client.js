// Notification stream client: a dependency-free ES module (SPEC sections 4, 5, 7).
//
//   import { NotificationClient } from "/api/v1/notifications/client.js";
//   const client = new NotificationClient({ getToken: async () => token, onChange: render });
//   await client.start();
//
// What it does for the page: loads the newest page of history, then keeps one
// EventSource open with the token in the query (EventSource cannot send
// headers), resumes after the last change it saw (the server's cursor: the SSE
// id, or the history page's stream_cursor), applies every change as an upsert or
// delete by notification id (one notification per content request is updated in
// place), applies read/delete changes, refreshes an expired token through
// getToken(), reconnects with jittered backoff (1 s to 30 s), and restarts a
// stream that stopped sending heartbeats.

/**
 * @typedef {Object} Notification
 * @property {string} id  24 hex digits; comparing ids as strings orders by persistence time
 * @property {string} event_type
 * @property {string} user_id
 * @property {string|null} content_request_id
 * @property {string} title
 * @property {string} message
 * @property {number|null} progress_percentage
 * @property {Object} metadata
 * @property {string} timestamp  when the event happened (ISO 8601)
 * @property {string} created_at  when it was stored (ISO 8601)
 * @property {boolean} read
 */

/** @typedef {"connecting"|"connected"|"disconnected"|"error"} ConnectionState */

/**
 * @typedef {Object} ClientOptions
 * @property {() => (string|Promise<string>)} getToken  returns a valid access token; called at start,
 *   when the server says the token expired, and after a 401
 * @property {string} [baseUrl]  where the API lives; default: the page's origin
 * @property {number} [pageSize]  history page loaded at start and after gaps (default 20)
 * @property {(notifications: Notification[], unreadCount: number) => void} [onChange]  the list changed
 *   (newest first)
 * @property {(notification: Notification) => void} [onNotification]  a notification not seen before arrived live
 * @property {(state: ConnectionState, detail: Object) => void} [onStateChange]
 * @property {(info: {missed_at_least: number}) => void} [onTruncated]  the server could not replay everything
 *   (the client has already reloaded the history page)
 * @property {number} [minBackoffMs]  default 1000
 * @property {number} [maxBackoffMs]  default 30000
 */

const API = "/api/v1/notifications";

/** Thrown by the history helpers for a response that is not 2xx. */
export class ApiError extends Error {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * The `exp` claim of a JWT in seconds, or null. Read without verifying: only used to refresh early.
 * @param {string} token
 * @returns {number|null}
 */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4))).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}

/**
 * Delay before reconnect attempt number `attempt` (0-based): exponential from min to max, "full jitter"
 * on the upper half so a fleet of browsers does not reconnect in step after a server restart.
 * @param {number} attempt @param {number} [min] @param {number} [max] @param {() => number} [random]
 */
export function backoffDelay(attempt, min = 1000, max = 30000, random = Math.random) {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

export class NotificationClient {
  /** @param {ClientOptions} options */
  constructor(options) {
    if (typeof options?.getToken !== "function") throw new TypeError("getToken() is required");
    this.options = { baseUrl: "", pageSize: 20, minBackoffMs: 1000, maxBackoffMs: 30000, ...options };
    /** @type {Map<string, Notification>} */
    this.byId = new Map();
    this.unreadCount = 0;
    /** @type {ConnectionState} */
    this.state = "disconnected";
    /** The cursor of the last change applied (opaque; only the server compares cursors). */
    this.lastEventId = "";
    /** @type {string|null} */
    this.token = null;
    /** @type {EventSource|null} */
    this.source = null;
    this.heartbeatMs = 30000;
    this.attempt = 0;
    this.autoRetries = 0;
    this.running = false;
    this.everConnected = false;
    this.historyLoaded = false;
    /** Whether older notifications than the loaded ones exist (see loadMore). */
    this.hasMore = false;
    this.timers = { retry: 0, watchdog: 0, refresh: 0 };
    // Back online: do not sit out the rest of a long backoff.
    this._online = () => {
      if (this.running && !this.source && this.state !== "connecting") {
        clearTimeout(this.timers.retry);
        this._connect();
      }
    };
  }

  /** Newest first. @returns {Notification[]} */
  get notifications() {
    return [...this.byId.values()].sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  }

  /** Load the newest history page, then open the stream. */
  async start() {
    if (this.running) return;
    this.running = true;
    globalThis.addEventListener?.("online", this._online);
    this.token = await this.options.getToken();
    try {
      await this.refresh();
    } catch (error) {
      this._setState("error", { reason: "history", error });
    }
    if (this.running) this._connect();
  }

  /** Close the stream and stop reconnecting. */
  stop() {
    this.running = false;
    globalThis.removeEventListener?.("online", this._online);
    this._closeSource();
    for (const key of Object.keys(this.timers)) clearTimeout(this.timers[key]);
    this._setState("disconnected", { reason: "stopped" });
  }

  // ---- history API (SPEC section 5) ----

  /**
   * Reload the newest page and the unread count, reconciling with what arrived live meanwhile:
   * the server is the truth up to the page's newest id, the stream after it.
   */
  async refresh() {
    const page = await this.request("GET", `?limit=${this.options.pageSize}`);
    const list = /** @type {Notification[]} */ (page.notifications);
    const newest = list.length ? list[0].id : "";
    const oldest = list.length ? list[list.length - 1].id : "";
    const complete = page.next_cursor == null;
    if (!this.historyLoaded || complete) this.hasMore = !complete;
    for (const [id] of this.byId) {
      // Anything inside the page's range that the page does not hold was deleted meanwhile.
      if (id <= newest && (complete || id >= oldest)) this.byId.delete(id);
    }
    for (const n of list) this.byId.set(n.id, n);
    // Before the stream has said anything, resume after what this page holds.
    if (!this.lastEventId && page.stream_cursor) this.lastEventId = page.stream_cursor;
    let unread = page.unread_count;
    for (const n of this.byId.values()) if (n.id > newest && !n.read) unread += 1;
    this.unreadCount = unread;
    this.historyLoaded = true;
    this._changed();
    return page;
  }

  /** Older notifications, for "load more". */
  async loadMore() {
    const list = this.notifications;
    const cursor = list.length ? list[list.length - 1].id : "";
    const page = await this.request("GET", `?limit=${this.options.pageSize}&cursor=${encodeURIComponent(cursor)}`);
    for (const n of page.notifications) if (!this.byId.has(n.id)) this.byId.set(n.id, n);
    this.hasMore = page.next_cursor != null;
    this._changed();
    return page;
  }

  /** @param {string[]} ids */
  async markRead(ids) {
    this._applyRead(ids, true);
    return this.request("POST", "/mark-read", { notification_ids: ids });
  }

  async markAllRead() {
    this._applyRead([...this.byId.keys()], true);
    this.unreadCount = 0;
    this._changed();
    return this.request("POST", "/mark-read", { all: true });
  }

  /** @param {string[]} ids */
  async markUnread(ids) {
    this._applyRead(ids, false);
    return this.request("POST", "/mark-unread", { notification_ids: ids });
  }

  /** @param {string} id */
  async remove(id) {
    this._applyDelete({ ids: [id] });
    return this.request("DELETE", `/${encodeURIComponent(id)}`);
  }

  async clearAll() {
    this._applyDelete({ all: true });
    return this.request("DELETE", "");
  }

  /**
   * One call to the history API with the bearer token; a 401 refreshes the token once and retries.
   * @param {string} method @param {string} path @param {Object} [body]
   */
  async request(method, path, body, retried = false) {
    if (!this.token) this.token = await this.options.getToken();
    const response = await fetch(`${this.options.baseUrl}${API}${path}`, {
      method,
      headers: { Authorization: `Bearer ${this.token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (response.status === 401 && !retried) {
      this.token = await this.options.getToken();
      return this.request(method, path, body, true);
    }
    if (response.status === 204) return null;
    const payload = await response.json().catch(() => null);
    if (!response.ok) {
      const error = payload?.error ?? {};
      throw new ApiError(response.status, error.code ?? "http_error", error.message ?? response.statusText);
    }
    return payload;
  }

  // ---- the stream (SPEC section 4) ----

  _connect() {
    this._closeSource();
    if (!this.running) return;
    const exp = this.token ? tokenExpiry(this.token) : null;
    if (exp !== null && exp * 1000 < Date.now() + 5000) {
      this._renewToken();
      return;
    }
    const query = new URLSearchParams({ token: this.token ?? "" });
    if (this.lastEventId) query.set("last_event_id", this.lastEventId);
    this._setState("connecting", { attempt: this.attempt });
    const source = new EventSource(`${this.options.baseUrl}${API}/stream?${query}`);
    this.source = source;
    this.autoRetries = 0;
    this._armWatchdog(); // also covers a connection attempt that hangs without an answer
    const on = (/** @type {string} */ type, /** @type {(data: any, e: MessageEvent) => void} */ handler) =>
      source.addEventListener(type, (event) => {
        if (this.source !== source) return;
        this._armWatchdog();
        let data = null;
        try {
          data = JSON.parse(/** @type {MessageEvent} */ (event).data);
        } catch {
          return; // not ours; never let one bad frame break the stream
        }
        handler(data, /** @type {MessageEvent} */ (event));
      });
    on("connection.established", (data) => {
      this.heartbeatMs = (Number(data.heartbeat_interval) || 30) * 1000;
      this.attempt = 0;
      this.autoRetries = 0;
      this._armWatchdog();
      this.everConnected = true;
      this._setState("connected", data);
      // Every change after lastEventId is replayed, reads and deletions included: no reload needed.
      if (!this.historyLoaded) this.refresh().catch(() => {});
    });
    on("notification", (data, event) => this._applyNotification(data, event.lastEventId));
    on("notification.updated", (data, event) => {
      if (event.lastEventId) this.lastEventId = event.lastEventId;
      this._applyRead(data.ids ?? [], Boolean(data.read));
    });
    on("notification.deleted", (data, event) => {
      if (event.lastEventId) this.lastEventId = event.lastEventId;
      this._applyDelete(data);
    });
    on("heartbeat", () => {});
    on("replay.truncated", (data) => {
      this.refresh()
        .catch(() => {})
        .then(() => this.options.onTruncated?.(data));
    });
    on("stream.closing", (data) => {
      this._setState("disconnected", { reason: data.reason });
      if (data.reason === "token_expired") this._renewToken();
      // Otherwise the server ends the response and the browser reconnects by itself with Last-Event-ID.
    });
    source.onerror = () => {
      if (this.source !== source) return;
      this.autoRetries += 1;
      // The browser retries a dropped stream by itself (sending Last-Event-ID); it gives up for good on an
      // HTTP error, and retries at a fixed pace when the server is down: then the client takes over.
      if (source.readyState === EventSource.CLOSED || this.autoRetries > 2) {
        this._closeSource();
        this._failed();
      } else {
        this._armWatchdog();
        this._setState("connecting", { automatic: true });
      }
    };
  }

  /** A connection attempt failed: find out why (a 401 needs a new token), then back off. */
  async _failed() {
    this._setState("error", { reason: "stream failed" });
    let status = 0;
    try {
      status = (await fetch(`${this.options.baseUrl}${API}?limit=1`, {
        headers: { Authorization: `Bearer ${this.token}` },
      })).status;
    } catch {
      status = 0; // the server is unreachable
    }
    if (!this.running || this.source) return;
    // Renew, then wait out the backoff: a getToken() whose tokens the server keeps refusing must not spin.
    if (status === 401) this._renewToken(true);
    else if (status === 403) this._setState("error", { reason: "forbidden" });
    else this._scheduleReconnect();
  }

  _scheduleReconnect() {
    const delay = backoffDelay(this.attempt, this.options.minBackoffMs, this.options.maxBackoffMs);
    this.attempt += 1;
    this._setState("disconnected", { retryInMs: delay });
    clearTimeout(this.timers.retry);
    this.timers.retry = setTimeout(() => this._connect(), delay);
  }

  /** @param {boolean} [backOff] reconnect after the backoff delay instead of at once */
  async _renewToken(backOff = false) {
    this._closeSource();
    try {
      this.token = await this.options.getToken();
    } catch (error) {
      this._setState("error", { reason: "getToken failed", error });
      this._scheduleReconnect();
      return;
    }
    const exp = tokenExpiry(this.token);
    if (exp !== null && exp * 1000 < Date.now() + 5000) {
      // getToken() handed back an expired token: do not spin, back off.
      this._setState("error", { reason: "getToken returned an expired token" });
      clearTimeout(this.timers.retry);
      this.timers.retry = setTimeout(() => this._renewToken(), backoffDelay(this.attempt++));
      return;
    }
    if (!this.running) return;
    if (backOff) this._scheduleReconnect();
    else this._connect();
  }

  _armWatchdog() {
    clearTimeout(this.timers.watchdog);
    this.timers.watchdog = setTimeout(() => {
      // No heartbeat for 2.5 intervals: the connection is dead even if the socket looks open.
      this._closeSource();
      this._setState("disconnected", { reason: "heartbeat timeout" });
      this._connect();
    }, this.heartbeatMs * 2.5);
  }

  _disarmWatchdog() {
    clearTimeout(this.timers.watchdog);
  }

  _closeSource() {
    this._disarmWatchdog();
    if (this.source) {
      this.source.close();
      this.source = null;
    }
  }

  // ---- keeping the list in step ----

  /**
   * A new notification or a new state of one (upsert by id). onNotification fires for a new one and when
   * one changes type (a content request that completed).
   * @param {Notification} n @param {string} [eventId]
   */
  _applyNotification(n, eventId) {
    if (!n || typeof n.id !== "string") return;
    if (eventId) this.lastEventId = eventId;
    const before = this.byId.get(n.id);
    this.byId.set(n.id, n);
    const wasUnread = before ? !before.read : false;
    if (wasUnread !== !n.read) this.unreadCount = Math.max(0, this.unreadCount + (n.read ? -1 : 1));
    if (!before || before.event_type !== n.event_type) this.options.onNotification?.(n);
    this._changed();
  }

  /** @param {string[]} ids @param {boolean} read */
  _applyRead(ids, read) {
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
    this._changed();
    // Changes to notifications older than the loaded page move the count in ways only the server knows.
    if (unknown) this._resyncSoon();
  }

  /** @param {{ids?: string[], all?: boolean}} data */
  _applyDelete(data) {
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
      if (unknown) this._resyncSoon();
    }
    this._changed();
  }

  _resyncSoon() {
    clearTimeout(this.timers.refresh);
    this.timers.refresh = setTimeout(() => this.refresh().catch(() => {}), 300);
  }

  _changed() {
    this.options.onChange?.(this.notifications, this.unreadCount);
  }

  /** @param {ConnectionState} state @param {Object} detail */
  _setState(state, detail = {}) {
    this.state = state;
    this.options.onStateChange?.(state, detail);
  }
}
