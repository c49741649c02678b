// What the stream service sends and the client holds (SPEC sections 3 to 5).

/** A notification as the service serves it (SPEC section 3). */
export interface Notification {
  /** 24 hex digits; comparing ids as strings orders them by persistence time. */
  id: string;
  event_type: string;
  user_id: string;
  content_request_id: string | null;
  title: string;
  message: string;
  progress_percentage: number | null;
  metadata: Record<string, unknown>;
  /** When the event happened (ISO 8601). */
  timestamp: string;
  /** When it was stored (ISO 8601). */
  created_at: string;
  updated_at?: string;
  read: boolean;
}

export type ConnectionState = "connecting" | "connected" | "disconnected" | "error";

/** Which tab holds the stream: "leader" holds it for every tab of this origin and user, "follower"
 * gets its events relayed, "solo" holds its own (the browser lacks Web Locks or BroadcastChannel,
 * or sharing is off). */
export type TabRole = "leader" | "follower" | "solo";

export interface StateDetail {
  reason?: string;
  attempt?: number;
  retryInMs?: number;
  status?: number;
  error?: unknown;
  [key: string]: unknown;
}

export interface HistoryPage {
  notifications: Notification[];
  unread_count: number;
  next_cursor: string | null;
  stream_cursor?: string;
}

/** What the client holds, as one immutable object that changes identity on every change (React's
 * useSyncExternalStore compares it by identity). */
export interface Snapshot {
  /** Newest first. */
  notifications: readonly Notification[];
  unreadCount: number;
  state: ConnectionState;
  role: TabRole;
  /** Whether older notifications than the loaded ones exist (see loadMore). */
  hasMore: boolean;
}

export interface ClientOptions {
  /** Returns a valid access token (may be async); called at start, when the server says the token
   * expired, and after a 401. */
  getToken: () => string | Promise<string>;
  /** Where the API lives; default: the page's origin. */
  baseUrl?: string;
  /** History page loaded at start and after gaps (default 20). */
  pageSize?: number;
  /** The list changed (newest first). */
  onChange?: (notifications: Notification[], unreadCount: number) => void;
  /** A notification arrived that this tab had not seen in this state: new, or changed to another event
   * (a collapsed request that completed); once per tab, whether live, replayed or found on a resync. */
  onNotification?: (notification: Notification) => void;
  onStateChange?: (state: ConnectionState, detail: StateDetail) => void;
  /** The server could not replay everything (the client has already reloaded the history page). */
  onTruncated?: (info: { missed_at_least: number }) => void;
  /** Default 1000. */
  minBackoffMs?: number;
  /** Default 30000. */
  maxBackoffMs?: number;
  /** One stream for every tab of this origin and user (default true). */
  shareTabs?: boolean;
  /** How the stream is authenticated: "ticket" (default) asks POST /stream-ticket with the bearer
   * token and opens the stream with ?ticket=; "token" puts the JWT itself in ?token= (discouraged:
   * URLs end up in request logs). */
  streamAuth?: "ticket" | "token";
}
