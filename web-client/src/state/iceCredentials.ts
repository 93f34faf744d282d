/**
 * The ICE servers of one joined room: the homeserver gives TURN credentials only to a session that
 * is a member of a live room (`GET /rooms/{room}/ice_servers`), for a limited time (an hour by
 * default), so they are fetched once the session is in the room and fetched again before they run
 * out, at four fifths of their lifetime. A refusal that waiting cannot change (left, kicked, the
 * room gone) ends the renewals; a passing failure (network, server busy) is tried again with
 * backoff. The fetch is injected and the timers are the global ones: no DOM, no network here.
 */
import { ConfabError, retryDelay, type IceGrant, type IceServer } from '../protocol/types';

/** When to fetch new credentials, from their lifetime: at four fifths of it (an hour: after 48 minutes). */
export function renewalDelay(expiresInMs: number): number {
  return Math.max(1000, Math.floor(expiresInMs * 0.8));
}

/** First wait after a passing failure, doubled per failure up to `RETRY_MAX_MS`. */
const RETRY_BASE_MS = 2000;
const RETRY_MAX_MS = 60_000;

/** Whether asking again may succeed: not after a 4xx refusal (other than rate limiting). */
export function isPassing(err: unknown): boolean {
  if (!(err instanceof ConfabError)) return true;
  if (retryDelay(err) !== null) return true;
  return err.status === 0 || err.status >= 500;
}

export interface IceCredentialsOptions {
  /** Asks the homeserver for the room's ICE servers with the session's token. */
  fetch(): Promise<IceGrant>;
  /** The servers of each renewal (the first fetch's are what `start` returns). */
  onRenewed(servers: IceServer[]): void;
  log?(msg: string, err?: unknown): void;
}

export class IceCredentials {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  private failures = 0;

  constructor(private readonly o: IceCredentialsOptions) {}

  /**
   * The first grant's servers; null if it failed, and then a passing failure is tried again, the
   * servers it gets going to `onRenewed`.
   */
  async start(): Promise<IceServer[] | null> {
    try {
      const grant = await this.o.fetch();
      this.granted(grant);
      return grant.ice_servers;
    } catch (err) {
      this.failed(err);
      return null;
    }
  }

  /** No more renewals (the room was left, closed, or the page is going). */
  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private granted(grant: IceGrant): void {
    this.failures = 0;
    // Without TURN nothing runs out.
    if (grant.expires_in_ms !== null) this.arm(renewalDelay(grant.expires_in_ms));
  }

  private arm(ms: number): void {
    if (this.stopped) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.renew(), ms);
  }

  private async renew(): Promise<void> {
    this.timer = null;
    if (this.stopped) return;
    let grant: IceGrant;
    try {
      grant = await this.o.fetch();
    } catch (err) {
      this.failed(err);
      return;
    }
    if (this.stopped) return;
    this.o.onRenewed(grant.ice_servers);
    this.granted(grant);
  }

  private failed(err: unknown): void {
    if (this.stopped) return;
    if (!isPassing(err)) {
      this.o.log?.('TURN credentials refused; no more renewals', err);
      return;
    }
    this.failures++;
    const backoff = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (this.failures - 1));
    const delay = Math.max(backoff, retryDelay(err) ?? 0);
    this.o.log?.(`TURN credentials not fetched; trying again in ${delay} ms`, err);
    this.arm(delay);
  }
}
