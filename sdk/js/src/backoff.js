// Reconnect policy: jittered exponential backoff, as the Go SDK's
// ReconnectPolicy (pkg/sdk/reconnect.go).

/**
 * withDefaults fills a reconnect policy: minDelayMs 250, maxDelayMs 30000,
 * maxAttempts 0 (forever), keepAliveMs 30000 (negative: none),
 * attemptTimeoutMs 20000.
 */
export function withDefaults(p) {
  const o = { ...(p || {}) };
  if (!(o.minDelayMs > 0)) o.minDelayMs = 250;
  if (!(o.maxDelayMs > 0)) o.maxDelayMs = 30000;
  o.maxDelayMs = Math.max(o.maxDelayMs, o.minDelayMs);
  if (!(o.maxAttempts > 0)) o.maxAttempts = 0;
  if (o.keepAliveMs === undefined || o.keepAliveMs === 0) o.keepAliveMs = 30000;
  if (!(o.attemptTimeoutMs > 0)) o.attemptTimeoutMs = 20000;
  return o;
}

/**
 * delay is the wait before redial attempt n (0 is the first): minDelayMs
 * doubled n times, at most maxDelayMs, drawn between half and all of it
 * so that clients cut off together do not all come back at one instant.
 */
export function delay(p, n, random = Math.random) {
  let d = p.minDelayMs;
  for (let i = 0; i < n && d < p.maxDelayMs; i++) d *= 2;
  d = Math.min(d, p.maxDelayMs);
  return d / 2 + random() * (d / 2);
}
