// @content-notifications/web: the browser client of the notifications service.
export { NotificationClient } from "./client.js";
export { ApiError } from "./errors.js";
export { backoffDelay, retryAfterMs } from "./backoff.js";
export { tokenExpiry, tokenSubject } from "./jwt.js";
export type {
  ClientOptions,
  ConnectionState,
  HistoryPage,
  Notification,
  Snapshot,
  StateDetail,
  TabRole,
} from "./types.js";
