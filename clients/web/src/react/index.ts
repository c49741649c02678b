// @content-notifications/web/react: the hook and the notification center (React 18 or newer).
export { useNotifications } from "./useNotifications.js";
export type { UseNotificationsOptions, UseNotificationsResult } from "./useNotifications.js";
export { NotificationCenter, NotificationCenterView, badgeText } from "./NotificationCenter.js";
export type { Announcement, NotificationCenterProps, NotificationCenterViewProps, Toast } from "./NotificationCenter.js";
