// NotificationCenter: a bell with the unread count, a panel with the list and its actions, toasts for
// finished and failed videos, and a live region that tells screen readers what arrived.
//
// Keyboard: the bell is a button (Enter/Space opens the panel and moves focus into it), Tab walks the
// panel's buttons, Escape closes it and gives focus back to the bell. Styles: import
// "@content-notifications/web/styles.css" (classes start with "nc-", colours are CSS variables).

import { useCallback, useEffect, useId, useRef, useState, type ReactNode } from "react";
import type { Notification } from "../types.js";
import { useNotifications, type UseNotificationsOptions, type UseNotificationsResult } from "./useNotifications.js";

const TOAST_TYPES: Record<string, "completed" | "failed"> = {
  "content_generation.completed": "completed",
  "content_generation.failed": "failed",
};
const PROGRESS_TYPES = new Set(["content_generation.started", "content_generation.progress"]);
const ANNOUNCEMENTS_KEPT = 3;

export interface NotificationCenterViewProps {
  /** What useNotifications returned. */
  value: UseNotificationsResult;
  /** Toasts shown by the caller (see NotificationCenter); none by default. */
  toasts?: readonly Toast[];
  onDismissToast?: (id: string) => void;
  /** Texts for the live region, oldest first. */
  announcements?: readonly Announcement[];
  /** The panel's heading (default "Notifications"). */
  title?: string;
  /** The content of one item; default: title, message, progress, time. */
  renderItem?: (notification: Notification) => ReactNode;
}

export interface NotificationCenterProps extends UseNotificationsOptions {
  /** How long a toast stays, in ms (default 6000; 0 keeps it until dismissed). */
  toastTimeoutMs?: number;
  title?: string;
  renderItem?: (notification: Notification) => ReactNode;
}

export interface Toast {
  id: string;
  kind: "completed" | "failed";
  notification: Notification;
}

export interface Announcement {
  key: number;
  text: string;
}

/** The badge text: the count, capped at "99+". */
export function badgeText(count: number): string {
  return count > 99 ? "99+" : String(count);
}

/** The bell, the panel, toasts and the live region, with a client of its own (useNotifications). */
export function NotificationCenter(props: NotificationCenterProps) {
  const { toastTimeoutMs = 6000, title, renderItem, ...options } = props;
  const [toasts, setToasts] = useState<Toast[]>([]);
  const [announcements, setAnnouncements] = useState<Announcement[]>([]);
  const counter = useRef(0);
  const timers = useRef(new Map<string, ReturnType<typeof setTimeout>>());

  const dismiss = useCallback((id: string) => {
    clearTimeout(timers.current.get(id));
    timers.current.delete(id);
    setToasts((list) => list.filter((toast) => toast.id !== id));
  }, []);

  const onNotification = (notification: Notification) => {
    const key = ++counter.current;
    const prefix = TOAST_TYPES[notification.event_type] === "failed" ? "Failed" : "New notification";
    setAnnouncements((list) =>
      [...list, { key, text: `${prefix}: ${notification.title}. ${notification.message}` }].slice(-ANNOUNCEMENTS_KEPT),
    );
    const kind = TOAST_TYPES[notification.event_type];
    if (kind) {
      const id = `${notification.id}-${key}`;
      setToasts((list) => [...list, { id, kind, notification }]);
      if (toastTimeoutMs > 0) timers.current.set(id, setTimeout(() => dismiss(id), toastTimeoutMs));
    }
    props.onNotification?.(notification);
  };

  useEffect(() => {
    const pending = timers.current;
    return () => pending.forEach((timer) => clearTimeout(timer));
  }, []);

  const value = useNotifications({ ...options, onNotification });
  return (
    <NotificationCenterView
      value={value}
      toasts={toasts}
      onDismissToast={dismiss}
      announcements={announcements}
      title={title}
      renderItem={renderItem}
    />
  );
}

/** The same UI over a useNotifications result the caller holds (to share it with other components). */
export function NotificationCenterView(props: NotificationCenterViewProps) {
  const { value, toasts = [], onDismissToast, announcements = [], title = "Notifications", renderItem } = props;
  const [open, setOpen] = useState(false);
  const [failure, setFailure] = useState<string | null>(null);
  const root = useRef<HTMLDivElement>(null);
  const bell = useRef<HTMLButtonElement>(null);
  const panel = useRef<HTMLDivElement>(null);
  const panelId = useId();
  const headingId = useId();
  const unread = value.unreadCount;

  const close = useCallback((focusBell: boolean) => {
    setOpen(false);
    if (focusBell) bell.current?.focus();
  }, []);

  useEffect(() => {
    if (!open) return;
    // Into the panel, so Tab walks its buttons and Escape is heard.
    (panel.current?.querySelector<HTMLElement>("button") ?? panel.current)?.focus();
    const outside = (event: MouseEvent) => {
      if (root.current && !event.composedPath().includes(root.current)) close(false);
    };
    document.addEventListener("mousedown", outside);
    return () => document.removeEventListener("mousedown", outside);
  }, [open, close]);

  const act = (action: () => Promise<unknown>) => {
    setFailure(null);
    action().catch((error: unknown) => {
      setFailure(error instanceof Error ? error.message : String(error));
      value.client?.refresh().catch(() => {});
    });
  };

  return (
    <div className="nc" ref={root} data-testid="notification-center" data-connection={value.connection}>
      <button
        ref={bell}
        type="button"
        className="nc-bell"
        data-testid="notification-bell"
        aria-label={`${title}, ${unread ? `${unread} unread` : "none unread"}`}
        aria-haspopup="dialog"
        aria-expanded={open}
        aria-controls={open ? panelId : undefined}
        onClick={() => (open ? close(false) : setOpen(true))}
      >
        <svg className="nc-bell-icon" viewBox="0 0 24 24" aria-hidden="true" focusable="false">
          <path d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2Z" />
        </svg>
        {unread > 0 && (
          <span className="nc-badge" data-testid="notification-unread-badge" aria-hidden="true">
            {badgeText(unread)}
          </span>
        )}
      </button>
      {open && (
        <div
          ref={panel}
          id={panelId}
          className="nc-panel"
          role="dialog"
          aria-labelledby={headingId}
          data-testid="notification-panel"
          tabIndex={-1}
          onKeyDown={(event) => {
            if (event.key === "Escape") {
              event.stopPropagation();
              close(true);
            }
          }}
        >
          <div className="nc-head">
            <h2 id={headingId} className="nc-title">
              {title}
            </h2>
            <span className={`nc-state nc-state-${value.connection}`} title={value.connection}>
              {value.isConnected ? "live" : value.connection}
            </span>
            <button type="button" className="nc-link" disabled={!unread} onClick={() => act(value.markAllAsRead)}>
              Mark all read
            </button>
            <button
              type="button"
              className="nc-link"
              disabled={!value.notifications.length}
              onClick={() => act(value.clearAll)}
            >
              Clear all
            </button>
          </div>
          {failure && (
            <p className="nc-failure" role="alert">
              That did not work: {failure}
            </p>
          )}
          {value.notifications.length === 0 ? (
            <p className="nc-empty">No notifications yet.</p>
          ) : (
            <ul className="nc-list">
              {value.notifications.map((n) => (
                <li
                  key={n.id}
                  className={`nc-item ${n.read ? "nc-read" : "nc-unread"} nc-type-${n.event_type.replace(/\W/g, "-")}`}
                  data-testid="notification-item"
                  data-id={n.id}
                  data-read={String(n.read)}
                >
                  <span className="nc-dot" aria-hidden="true" />
                  <div className="nc-body">{renderItem ? renderItem(n) : <Item notification={n} />}</div>
                  <div className="nc-actions">
                    <button
                      type="button"
                      aria-label={`${n.read ? "Mark unread" : "Mark read"}: ${n.title}`}
                      onClick={() => act(() => (n.read ? value.markAsUnread([n.id]) : value.markAsRead([n.id])))}
                    >
                      {n.read ? "Mark unread" : "Mark read"}
                    </button>
                    <button
                      type="button"
                      aria-label={`Delete: ${n.title}`}
                      onClick={() => act(() => value.deleteNotification(n.id))}
                    >
                      Delete
                    </button>
                  </div>
                </li>
              ))}
            </ul>
          )}
          {value.hasMore && (
            <button type="button" className="nc-more" onClick={() => act(value.loadMore)}>
              Load older
            </button>
          )}
        </div>
      )}
      <div className="nc-toasts">
        {toasts.map((toast) => (
          <div
            key={toast.id}
            className={`nc-toast nc-toast-${toast.kind}`}
            role="group"
            aria-label={toast.notification.title}
            data-testid="notification-toast"
            data-kind={toast.kind}
          >
            <strong>{toast.notification.title}</strong>
            <span>{toast.notification.message}</span>
            <button type="button" onClick={() => onDismissToast?.(toast.id)}>
              Dismiss
            </button>
          </div>
        ))}
      </div>
      {/* One polite live region for every new notification (the toasts are not live regions, so nothing is
          read twice). role="log": additions are read in order. */}
      <div className="nc-sr-only" role="log" aria-live="polite" data-testid="notification-announcer">
        {announcements.map((announcement) => (
          <p key={announcement.key}>{announcement.text}</p>
        ))}
      </div>
    </div>
  );
}

function Item({ notification: n }: { notification: Notification }) {
  const when = n.timestamp || n.created_at;
  const progress = Math.max(0, Math.min(100, Number(n.progress_percentage) || 0));
  return (
    <>
      <p className="nc-item-title">{n.title}</p>
      {n.message && <p className="nc-item-message">{n.message}</p>}
      {PROGRESS_TYPES.has(n.event_type) && (
        <div
          className="nc-progress"
          role="progressbar"
          aria-valuemin={0}
          aria-valuemax={100}
          aria-valuenow={progress}
          aria-label={`${n.title}: ${progress}%`}
        >
          <span style={{ width: `${progress}%` }} />
        </div>
      )}
      <time className="nc-time" dateTime={when}>
        {new Date(when).toLocaleString()}
      </time>
    </>
  );
}
