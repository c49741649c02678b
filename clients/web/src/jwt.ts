// Claims read from a JWT without verifying it: only to refresh early and to name the tab group.

function claims(token: string): Record<string, unknown> | null {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(part + "=".repeat((4 - (part.length % 4)) % 4));
    const json = new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
    const value: unknown = JSON.parse(json);
    return value !== null && typeof value === "object" ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** The `exp` claim of a JWT in seconds, or null. */
export function tokenExpiry(token: string): number | null {
  const exp = claims(token)?.exp;
  return typeof exp === "number" ? exp : null;
}

/** The `sub` claim of a JWT, or null. */
export function tokenSubject(token: string): string | null {
  const sub = claims(token)?.sub;
  return typeof sub === "string" && sub ? sub : null;
}
