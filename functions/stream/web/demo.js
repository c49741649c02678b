// The demo notification center at /demo: a bell, a panel, toasts, and (in local runs) a publish form.
import { NotificationClient, tokenExpiry } from "/api/v1/notifications/client.js";

const ICONS = {
  "content_request.created": "created",
  "content_request.queued": "queued",
  "content_generation.started": "started",
  "content_generation.progress": "progress",
  "content_generation.completed": "completed",
  "content_generation.failed": "failed",
  "system.maintenance": "maintenance",
  "system.update": "update",
  "user.session_expires_soon": "session",
};

const $ = (/** @type {string} */ selector) => /** @type {HTMLElement} */ (document.querySelector(selector));
const bell = $('[data-testid="notification-bell"]');
const badge = $('[data-testid="notification-unread-badge"]');
const panel = $('[data-testid="notification-popover"]');
const indicator = $('[data-testid="notification-connection-indicator"]');
const list = $(".list");

// ---- the token: ?token= once, then the local run's dev endpoint for fresh ones ----

const params = new URLSearchParams(location.search);
let initialToken = params.get("token");
const ttl = params.get("ttl");
let user = params.get("user") || "demo-user";
if (initialToken) {
  user = subject(initialToken) || user;
  params.delete("token"); // keep the credential out of the address bar and of bookmarks
  history.replaceState(null, "", `${location.pathname}${params.size ? `?${params}` : ""}`);
}

/** @param {string} token */
function subject(token) {
  try {
    return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).sub;
  } catch {
    return null;
  }
}

async function getToken() {
  if (initialToken) {
    const token = initialToken;
    initialToken = null;
    const exp = tokenExpiry(token);
    if (exp === null || exp * 1000 > Date.now() + 5000) return token;
  }
  const query = new URLSearchParams({ user });
  if (ttl) query.set("ttl", ttl);
  const response = await fetch(`/demo/token?${query}`, { cache: "no-store" });
  if (!response.ok) {
    showFatal("The token expired and this server hands out no fresh ones: reopen the page with a new ?token=.");
    throw new Error(`token endpoint answered ${response.status}`);
  }
  return (await response.json()).token;
}

// ---- cards: one per content request, showing its latest event by timestamp ----

/**
 * Group notifications into cards. A request's card shows the event with the latest `timestamp`, so a
 * progress event that arrives late never moves the card backwards.
 * @param {import("/api/v1/notifications/client.js").Notification[]} notifications newest first
 */
export function cards(notifications) {
  /** @type {Map<string, {key: string, shown: any, ids: string[], unread: boolean}>} */
  const groups = new Map();
  for (const n of notifications) {
    const key = n.content_request_id ? `request:${n.content_request_id}` : `id:${n.id}`;
    const group = groups.get(key);
    if (!group) {
      groups.set(key, { key, shown: n, ids: [n.id], unread: !n.read });
      continue;
    }
    group.ids.push(n.id);
    group.unread ||= !n.read;
    if (later(n, group.shown)) group.shown = n;
  }
  return [...groups.values()].sort((a, b) => (a.shown.id < b.shown.id ? 1 : -1));
}

function later(a, b) {
  const ta = Date.parse(a.timestamp) || 0;
  const tb = Date.parse(b.timestamp) || 0;
  return ta !== tb ? ta > tb : a.id > b.id;
}

function render(notifications, unreadCount) {
  badge.textContent = unreadCount > 99 ? "99+" : String(unreadCount);
  badge.hidden = unreadCount === 0;
  bell.setAttribute("aria-label", `Notifications, ${unreadCount ? `${unreadCount} unread` : "none unread"}`);
  const focused = document.activeElement instanceof HTMLElement && list.contains(document.activeElement)
    ? [document.activeElement.closest("li")?.dataset.key, document.activeElement.dataset.action] : null;
  const groups = cards(notifications);
  list.replaceChildren(...groups.map(card));
  $(".empty").hidden = groups.length > 0;
  $(".more").hidden = !client.hasMore;
  if (focused) {
    const again = list.querySelector(`li[data-key="${CSS.escape(focused[0] ?? "")}"] [data-action="${focused[1]}"]`);
    (again ?? bell).focus();
  }
}

function card(group) {
  const n = group.shown;
  const li = document.createElement("li");
  li.className = `card ${group.unread ? "unread" : "read"} type-${(ICONS[n.event_type] ?? "update")}`;
  li.dataset.key = group.key;
  li.dataset.testid = "notification-item";
  li.dataset.eventType = n.event_type;
  if (n.content_request_id) li.dataset.requestId = n.content_request_id;
  const icon = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  icon.setAttribute("class", "icon");
  icon.setAttribute("aria-hidden", "true");
  const use = document.createElementNS("http://www.w3.org/2000/svg", "use");
  use.setAttribute("href", `#icon-${ICONS[n.event_type] ?? "update"}`);
  icon.append(use);
  const body = document.createElement("div");
  body.className = "body";
  const title = element("p", "title", n.title);
  const message = element("p", "message", n.message);
  const time = element("time", "time", new Date(n.timestamp || n.created_at).toLocaleTimeString());
  time.setAttribute("datetime", n.timestamp || n.created_at);
  body.append(title, message);
  if (n.event_type === "content_generation.progress" || n.event_type === "content_generation.started") {
    const value = Math.max(0, Math.min(100, Number(n.progress_percentage) || 0));
    const bar = element("div", "progress", "");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", String(value));
    bar.setAttribute("aria-label", `${n.title}: ${value}%`);
    bar.dataset.testid = "notification-progress";
    const fill = element("span", "fill", "");
    fill.style.width = `${value}%`;
    bar.append(fill);
    body.append(bar);
  }
  body.append(time);
  const actions = element("div", "actions", "");
  const toggle = button(group.unread ? "Mark read" : "Mark unread", group.unread ? "mark-read" : "mark-unread");
  toggle.setAttribute("aria-label", `${group.unread ? "Mark read" : "Mark unread"}: ${n.title}`);
  toggle.addEventListener("click", () =>
    act(group.unread ? client.markRead(group.ids) : client.markUnread(group.ids)));
  const remove = button("Delete", "delete");
  remove.setAttribute("aria-label", `Delete: ${n.title}`);
  remove.addEventListener("click", () => act(Promise.all(group.ids.map((id) => client.remove(id)))));
  actions.append(toggle, remove);
  li.append(icon, body, actions);
  return li;
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  el.className = className;
  el.textContent = text;
  return el;
}

function button(text, action) {
  const b = element("button", "", text);
  b.type = "button";
  b.dataset.action = action;
  return b;
}

/** Run a history call; on failure say so and resync from the server. @param {Promise<any>} promise */
function act(promise) {
  promise.catch((error) => {
    toast("failed", "That did not work", String(error.message ?? error));
    client.refresh().catch(() => {});
  });
}

// ---- toasts and the connection indicator ----

function toast(kind, title, message) {
  const box = element("div", `toast ${kind}`, "");
  box.setAttribute("role", kind === "failed" ? "alert" : "status");
  box.dataset.testid = "notification-toast";
  box.append(element("strong", "", title), element("span", "", message));
  const close = button("Dismiss", "dismiss");
  close.addEventListener("click", () => box.remove());
  box.append(close);
  $(".toasts").append(box);
  setTimeout(() => box.remove(), 6000);
}

function showState(state, detail) {
  indicator.dataset.connected = String(state === "connected");
  indicator.dataset.state = state;
  const label = detail?.retryInMs ? `${state}, retrying in ${Math.round(detail.retryInMs / 1000)} s` : state;
  indicator.querySelector(".label").textContent = label;
}

function showFatal(text) {
  const fatal = $(".fatal");
  fatal.textContent = text;
  fatal.hidden = false;
}

// ---- the panel: open/close with the bell, Escape, or a click outside ----

function setOpen(open) {
  panel.hidden = !open;
  bell.setAttribute("aria-expanded", String(open));
  if (open) (panel.querySelector("button") ?? panel).focus();
}

bell.addEventListener("click", () => setOpen(panel.hidden));
panel.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    setOpen(false);
    bell.focus();
  }
});
document.addEventListener("click", (event) => {
  // composedPath: a click may re-render (and so detach) the button it landed on.
  if (!panel.hidden && !event.composedPath().includes($(".bell-wrap"))) setOpen(false);
});
panel.querySelector('[data-action="mark-all-read"]').addEventListener("click", () => act(client.markAllRead()));
panel.querySelector('[data-action="clear-all"]').addEventListener("click", () => act(client.clearAll()));
panel.querySelector('[data-action="load-more"]').addEventListener("click", () => act(client.loadMore()));

// ---- the client ----

const client = new NotificationClient({
  getToken,
  onChange: render,
  onStateChange: showState,
  onNotification: (n) => {
    if (n.event_type === "content_generation.completed") toast("completed", n.title, n.message);
    if (n.event_type === "content_generation.failed") toast("failed", n.title, n.message);
  },
});
// For the browser tests and for poking around in the console.
Object.assign(window, { notificationClient: client });
$(".user-id").textContent = user;
client.start().catch((error) => showFatal(`Could not start: ${error.message ?? error}`));

// ---- the local run's publish form (the endpoint exists only under `make run`) ----

fetch("/demo/local", { cache: "no-store" }).then((response) => {
  if (!response.ok) return;
  const form = /** @type {HTMLFormElement} */ ($(".publish"));
  form.hidden = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    const body = { event_type: data.event_type, title: data.title, message: data.message };
    if (data.content_request_id) body.content_request_id = data.content_request_id;
    if (data.progress_percentage !== "") body.progress_percentage = Number(data.progress_percentage);
    const result = $(".publish-result");
    try {
      const response = await fetch("/demo/publish", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${client.token}` },
        body: JSON.stringify(body),
      });
      const answer = await response.json();
      result.textContent = response.ok ? `published (${answer.via})` : `refused: ${answer.error?.message}`;
    } catch (error) {
      result.textContent = `failed: ${error.message ?? error}`;
    }
  });
}).catch(() => {});
