// Reconnect delays: exponential backoff with jitter, and the server's Retry-After.

/**
 * Delay before reconnect attempt number `attempt` (0-based): exponential from min to max, jittered over
 * the upper half so a fleet of browsers does not reconnect in step after a server restart.
 */
export function backoffDelay(attempt: number, min = 1000, max = 30000, random: () => number = Math.random): number {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** A Retry-After header (seconds or an HTTP date) in milliseconds from now, or null. */
export function retryAfterMs(header: string | null, now: number = Date.now()): number | null {
  if (header == null || header.trim() === "") return null;
  const value = header.trim();
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/** The wait before the next attempt: the backoff, but never less than what the server asked for (plus
 * up to a quarter more, so clients told the same Retry-After do not all come back at once). */
export function nextDelay(backoff: number, retryAfter: number | null, random: () => number = Math.random): number {
  if (retryAfter == null) return backoff;
  return Math.max(backoff, Math.round(retryAfter * (1 + random() / 4)));
}
