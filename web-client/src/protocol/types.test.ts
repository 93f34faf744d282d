import { describe, expect, it } from 'vitest';
import { ConfabError, describeError, retryDelay } from './types';

describe('retryDelay', () => {
  it('waits what the server said for errors that pass', () => {
    expect(retryDelay(new ConfabError('unavailable', 'database away', 503, 1000))).toBe(1000);
    expect(retryDelay(new ConfabError('rate_limited', 'slow down', 429, 250))).toBe(250);
    expect(retryDelay(new ConfabError('unavailable', 'database away', 503))).toBe(1000);
  });

  it('gives up on errors that waiting does not change', () => {
    expect(retryDelay(new ConfabError('event_too_large', 'too large', 413))).toBeNull();
    expect(retryDelay(new ConfabError('not_member', 'not a member', 403))).toBeNull();
    expect(retryDelay(new Error('network'))).toBeNull();
  });
});

describe('describeError', () => {
  it('shows the server reason where no sentence of its own fits better', () => {
    const limited = new ConfabError('rate_limited', 'too many refused joins from here; try again in 20 s', 429, 20_000);
    expect(describeError(limited)).toBe('too many refused joins from here; try again in 20 s');
    expect(describeError(new ConfabError('room_full', 'full', 409))).toBe('The room is full.');
  });
});
