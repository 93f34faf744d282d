/**
 * Knocking at a locked room's lobby: a join answered `knocking` is asked again every few seconds
 * (each ask keeps the knock alive and reads the hosts' answer) until it succeeds, a host refuses
 * (`knock_refused`), another error comes, or the caller gives up. No DOM: the wait is injected.
 */
import { ConfabError } from '../protocol/types';

export interface KnockOptions {
  /** Between two asks. */
  intervalMs: number;
  /** Waits `ms` (resolves early, or rejects, when the caller gives up). */
  wait(ms: number): Promise<void>;
  /** Told each time the answer is still `knocking`. */
  onKnocking?(): void;
  /** True once the caller gave up (the page was left). */
  cancelled?(): boolean;
}

/** Runs `join` until it is answered with something other than `knocking`. */
export async function joinThroughLobby<T>(join: () => Promise<T>, opts: KnockOptions): Promise<T> {
  for (;;) {
    try {
      return await join();
    } catch (e) {
      if (!(e instanceof ConfabError) || e.code !== 'knocking') throw e;
      opts.onKnocking?.();
      await opts.wait(opts.intervalMs);
      if (opts.cancelled?.()) throw new ConfabError('cancelled', 'the knock was given up');
    }
  }
}
