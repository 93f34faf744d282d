import { describe, expect, it } from 'vitest';
import { ConfabError } from '../protocol/types';
import { joinThroughLobby } from './knock';

const knocking = () => new ConfabError('knocking', 'wait', 403);

describe('knocking at the lobby', () => {
  it('asks again while knocking, telling each time, and returns the join once admitted', async () => {
    const answers: Array<() => Promise<string>> = [
      () => Promise.reject(knocking()),
      () => Promise.reject(knocking()),
      () => Promise.resolve('joined'),
    ];
    const waits: number[] = [];
    let told = 0;
    const result = await joinThroughLobby(() => answers.shift()!(), {
      intervalMs: 2000,
      wait: async (ms) => void waits.push(ms),
      onKnocking: () => told++,
    });
    expect(result).toBe('joined');
    expect(waits).toEqual([2000, 2000]);
    expect(told).toBe(2);
  });

  it('stops at a refusal or any other error, without asking again', async () => {
    let asks = 0;
    const refused = joinThroughLobby(
      () => {
        asks++;
        return Promise.reject(asks === 1 ? knocking() : new ConfabError('knock_refused', 'no', 403));
      },
      { intervalMs: 10, wait: async () => undefined },
    );
    await expect(refused).rejects.toMatchObject({ code: 'knock_refused' });
    expect(asks).toBe(2);
    await expect(joinThroughLobby(() => Promise.reject(new ConfabError('room_locked', 'locked', 403)), { intervalMs: 10, wait: async () => undefined })).rejects.toMatchObject({ code: 'room_locked' });
  });

  it('gives up when the caller does', async () => {
    let asks = 0;
    const run = joinThroughLobby(
      () => {
        asks++;
        return Promise.reject(knocking());
      },
      { intervalMs: 10, wait: async () => undefined, cancelled: () => asks >= 3 },
    );
    await expect(run).rejects.toMatchObject({ code: 'cancelled' });
    expect(asks).toBe(3);
  });
});
