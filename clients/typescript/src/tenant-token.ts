import { createHmac } from "node:crypto";

export interface TenantTokenOptions {
  /** The service's JWT_SECRET (at least 32 bytes). */
  secret: string;
  /** Becomes `sub`: the user whose bots the token reaches. */
  userId: string;
  /** Lifetime in seconds (default one hour). */
  ttlSeconds?: number;
  /** Seconds since the epoch (default now). */
  now?: number;
}

/**
 * A tenant JWT as the service checks it: HS256 under JWT_SECRET, with `sub`, `iat` and `exp`.
 * For a backend that holds JWT_SECRET and calls the tenant API on a user's behalf; the same token
 * as `strategy-executor token --user ID` mints.
 */
export function signTenantToken(options: TenantTokenOptions): string {
  const issued = Math.floor(options.now ?? Date.now() / 1000);
  const claims = { sub: options.userId, iat: issued, exp: issued + (options.ttlSeconds ?? 3600) };
  const encode = (part: object) => Buffer.from(JSON.stringify(part)).toString("base64url");
  const signed = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}`;
  return `${signed}.${createHmac("sha256", options.secret).update(signed).digest("base64url")}`;
}
