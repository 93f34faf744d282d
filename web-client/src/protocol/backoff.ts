/**
 * Reconnect delays: exponential growth with "equal jitter" (half fixed, half random) so a server
 * restart is not met by every client at the same instant, capped so a long outage retries steadily.
 */
export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
  factor: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 30_000, factor: 2 };

/** Delay before reconnect attempt number `attempt` (0 = first retry). `random` returns [0, 1). */
export function backoffDelay(attempt: number, opts: BackoffOptions = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const exp = Math.min(opts.maxMs, opts.baseMs * Math.pow(opts.factor, Math.max(0, attempt)));
  const half = exp / 2;
  return Math.round(half + random() * half);
}
