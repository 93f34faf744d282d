/**
 * TURN credentials of a room, on fake timers: fetched once at the start, fetched again at four
 * fifths of their lifetime (before they run out) and handed on, tried again after a passing
 * failure, and no more after a refusal that waiting cannot change or once stopped.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { IceCredentials, isPassing, renewalDelay } from './iceCredentials';
import { ConfabError, type IceGrant, type IceServer } from '../protocol/types';

const HOUR = 3_600_000;
const STUN: IceServer = { urls: ['stun:turn.test:3478'] };

function grant(n: number, expires: number | null = HOUR): IceGrant {
  const turn: IceServer = { urls: ['turn:turn.test:3478'], username: `${n}:@g:test`, credential: `secret-${n}` };
  return { ice_servers: expires === null ? [STUN] : [STUN, turn], expires_in_ms: expires };
}

/** A fetch that answers from `answers` in turn (a function throws), counting the calls. */
function fetcher(answers: Array<IceGrant | (() => never)>) {
  const calls = { n: 0 };
  const fetch = async (): Promise<IceGrant> => {
    const a = answers[Math.min(calls.n++, answers.length - 1)]!;
    return typeof a === 'function' ? a() : a;
  };
  return { fetch, calls };
}

const refused = (code: string, status: number) => () => {
  throw new ConfabError(code, code, status);
};

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('TURN credentials of a room', () => {
  it('are renewed at four fifths of their lifetime, before they run out, and handed on', async () => {
    expect(renewalDelay(HOUR)).toBe(48 * 60_000);
    const { fetch, calls } = fetcher([grant(1), grant(2), grant(3)]);
    const renewed: IceServer[][] = [];
    const ice = new IceCredentials({ fetch, onRenewed: (s) => renewed.push(s) });
    expect(await ice.start()).toEqual(grant(1).ice_servers);
    expect(calls.n).toBe(1);

    await vi.advanceTimersByTimeAsync(48 * 60_000 - 1);
    expect(calls.n).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls.n).toBe(2);
    expect(renewed).toEqual([grant(2).ice_servers]);
    // Well inside the first credentials' hour: they were never used past their end.
    await vi.advanceTimersByTimeAsync(48 * 60_000);
    expect(renewed).toEqual([grant(2).ice_servers, grant(3).ice_servers]);
    ice.stop();
    await vi.advanceTimersByTimeAsync(10 * HOUR);
    expect(calls.n).toBe(3);
  });

  it('follow the lifetime each answer gives', async () => {
    const { fetch, calls } = fetcher([grant(1, 60_000), grant(2, HOUR)]);
    const ice = new IceCredentials({ fetch, onRenewed: () => {} });
    await ice.start();
    await vi.advanceTimersByTimeAsync(48_000);
    expect(calls.n).toBe(2);
    await vi.advanceTimersByTimeAsync(48 * 60_000 - 1);
    expect(calls.n).toBe(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls.n).toBe(3);
    ice.stop();
  });

  it('are not asked for again without TURN, where nothing runs out', async () => {
    const { fetch, calls } = fetcher([grant(1, null)]);
    const ice = new IceCredentials({ fetch, onRenewed: () => {} });
    expect(await ice.start()).toEqual([STUN]);
    await vi.advanceTimersByTimeAsync(10 * HOUR);
    expect(calls.n).toBe(1);
  });

  it('a passing failure is tried again with backoff, then the schedule resumes', async () => {
    const network = () => {
      throw new ConfabError('network', 'The server cannot be reached', 0);
    };
    const { fetch, calls } = fetcher([grant(1), network, network, refused('unavailable', 503), grant(2), grant(3)]);
    const renewed: IceServer[][] = [];
    const ice = new IceCredentials({ fetch, onRenewed: (s) => renewed.push(s) });
    await ice.start();
    await vi.advanceTimersByTimeAsync(48 * 60_000);
    expect(calls.n).toBe(2); // failed
    await vi.advanceTimersByTimeAsync(2000);
    expect(calls.n).toBe(3); // failed again
    await vi.advanceTimersByTimeAsync(3999);
    expect(calls.n).toBe(3);
    await vi.advanceTimersByTimeAsync(1);
    expect(calls.n).toBe(4); // unavailable
    await vi.advanceTimersByTimeAsync(8000);
    expect(calls.n).toBe(5);
    expect(renewed).toEqual([grant(2).ice_servers]);
    // Back on the lifetime's schedule, the backoff forgotten.
    await vi.advanceTimersByTimeAsync(48 * 60_000);
    expect(calls.n).toBe(6);
    ice.stop();
  });

  it('a first fetch that fails gives nothing at once and its servers later', async () => {
    const { fetch, calls } = fetcher([refused('unavailable', 503), grant(1)]);
    const renewed: IceServer[][] = [];
    const ice = new IceCredentials({ fetch, onRenewed: (s) => renewed.push(s) });
    expect(await ice.start()).toBeNull();
    await vi.advanceTimersByTimeAsync(2000);
    expect(calls.n).toBe(2);
    expect(renewed).toEqual([grant(1).ice_servers]);
    ice.stop();
  });

  it('stop asking once refused: left, kicked, the room gone, the session gone', async () => {
    for (const [code, status] of [['not_member', 403], ['room_not_found', 404], ['unauthorized', 401]] as const) {
      const { fetch, calls } = fetcher([grant(1), refused(code, status)]);
      const renewed: IceServer[][] = [];
      const ice = new IceCredentials({ fetch, onRenewed: (s) => renewed.push(s) });
      await ice.start();
      await vi.advanceTimersByTimeAsync(48 * 60_000);
      expect(calls.n).toBe(2);
      await vi.advanceTimersByTimeAsync(10 * HOUR);
      expect(calls.n, code).toBe(2);
      expect(renewed).toEqual([]);
    }
    expect(isPassing(new ConfabError('rate_limited', 'slow down', 429, 5000))).toBe(true);
    expect(isPassing(new ConfabError('internal', 'bug', 500))).toBe(true);
    expect(isPassing(new TypeError('failed to fetch'))).toBe(true);
    expect(isPassing(new ConfabError('not_member', 'no', 403))).toBe(false);
  });

  it('a renewal answered after stop is not handed on', async () => {
    let answer: (g: IceGrant) => void = () => {};
    let n = 0;
    const fetch = () => (n++ === 0 ? Promise.resolve(grant(1)) : new Promise<IceGrant>((ok) => (answer = ok)));
    const renewed: IceServer[][] = [];
    const ice = new IceCredentials({ fetch, onRenewed: (s) => renewed.push(s) });
    await ice.start();
    await vi.advanceTimersByTimeAsync(48 * 60_000);
    expect(n).toBe(2);
    ice.stop();
    answer(grant(2));
    await vi.advanceTimersByTimeAsync(0);
    expect(renewed).toEqual([]);
  });
});
