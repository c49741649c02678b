// useNotifications: the client as a React hook. One client per mounted hook; the tabs of a browser
// still share one stream (a hook in each tab follows the tab that holds it).

import { useEffect, useRef, useState, useSyncExternalStore } from "react";
import { NotificationClient } from "../client.js";
import type { ClientOptions, ConnectionState, Notification, Snapshot, TabRole } from "../types.js";

export type UseNotificationsOptions = ClientOptions;

export interface UseNotificationsResult {
  /** Newest first. */
  notifications: readonly Notification[];
  unreadCount: number;
  connection: ConnectionState;
  isConnected: boolean;
  role: TabRole;
  hasMore: boolean;
  markAsRead: (ids: string[]) => Promise<unknown>;
  markAsUnread: (ids: string[]) => Promise<unknown>;
  markAllAsRead: () => Promise<unknown>;
  deleteNotification: (id: string) => Promise<unknown>;
  clearAll: () => Promise<unknown>;
  loadMore: () => Promise<unknown>;
  /** The client itself, once mounted (null during the first render). */
  client: NotificationClient | null;
}

const EMPTY: Snapshot = { notifications: [], unreadCount: 0, state: "connecting", role: "solo", hasMore: false };
const noSubscription = () => () => {};
const emptySnapshot = () => EMPTY;
const notMounted = () => Promise.reject(new Error("the notification client is not started yet"));

export function useNotifications(options: UseNotificationsOptions): UseNotificationsResult {
  // Callbacks may change on every render; the client calls whatever is current.
  const latest = useRef(options);
  latest.current = options;
  const [client, setClient] = useState<NotificationClient | null>(null);
  const { baseUrl, pageSize, shareTabs, streamAuth, minBackoffMs, maxBackoffMs } = options;

  useEffect(() => {
    const created = new NotificationClient({
      baseUrl,
      pageSize,
      shareTabs,
      streamAuth,
      minBackoffMs,
      maxBackoffMs,
      getToken: () => latest.current.getToken(),
      onChange: (list, unread) => latest.current.onChange?.(list, unread),
      onNotification: (n) => latest.current.onNotification?.(n),
      onStateChange: (state, detail) => latest.current.onStateChange?.(state, detail),
      onTruncated: (info) => latest.current.onTruncated?.(info),
    });
    setClient(created);
    created.start().catch(() => {}); // its state says why (onStateChange, connection)
    return () => created.stop();
  }, [baseUrl, pageSize, shareTabs, streamAuth, minBackoffMs, maxBackoffMs]);

  const snapshot = useSyncExternalStore(
    client ? client.subscribe : noSubscription,
    client ? client.getSnapshot : emptySnapshot,
    emptySnapshot,
  );
  return {
    notifications: snapshot.notifications,
    unreadCount: snapshot.unreadCount,
    connection: snapshot.state,
    isConnected: snapshot.state === "connected",
    role: snapshot.role,
    hasMore: snapshot.hasMore,
    markAsRead: (ids) => (client ? client.markRead(ids) : notMounted()),
    markAsUnread: (ids) => (client ? client.markUnread(ids) : notMounted()),
    markAllAsRead: () => (client ? client.markAllRead() : notMounted()),
    deleteNotification: (id) => (client ? client.remove(id) : notMounted()),
    clearAll: () => (client ? client.clearAll() : notMounted()),
    loadMore: () => (client ? client.loadMore() : notMounted()),
    client,
  };
}
