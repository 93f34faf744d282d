import { describe, expect, it } from 'vitest';
import { decodeKeyCheck, encodeKeyCheck, judgeKeys } from './keyCheck';

const GOOD = 'AAAAAAAAAAAAAAAAAAAAAA';
const BAD = 'BBBBBBBBBBBBBBBBBBBBBB';

describe('key check', () => {
  it('round-trips and is told apart from a sealed signal', () => {
    expect(decodeKeyCheck(encodeKeyCheck(GOOD, true))).toEqual({ check: GOOD, ask: true });
    expect(decodeKeyCheck(encodeKeyCheck(GOOD, false))).toEqual({ check: GOOD, ask: false });
    expect(decodeKeyCheck('djEAAAAA')).toBeNull(); // a v1 ciphertext
    expect(decodeKeyCheck('kc1.short.1')).toBeNull();
    expect(decodeKeyCheck(`kc1.${GOOD}.2`)).toBeNull();
  });
  it("marks peers whose check differs, and blames us when the host's differs", () => {
    const peers = new Map([
      ['@host:x|H', BAD],
      ['@carol:x|C', GOOD],
    ]);
    expect(judgeKeys(GOOD, peers, '@host:x', '@me:x')).toEqual({ mismatched: { '@host:x|H': true }, mineIsWrong: true });
    expect(judgeKeys(BAD, peers, '@host:x', '@me:x')).toEqual({ mismatched: { '@carol:x|C': true }, mineIsWrong: false });
  });
  it('never blames the host, and without the host blames us only when nobody matches', () => {
    const peers = new Map([['@eve:x|E', BAD]]);
    expect(judgeKeys(GOOD, peers, '@me:x', '@me:x').mineIsWrong).toBe(false);
    expect(judgeKeys(GOOD, peers, '@host:x', '@me:x').mineIsWrong).toBe(true);
    peers.set('@bob:x|B', GOOD);
    expect(judgeKeys(GOOD, peers, '@host:x', '@me:x').mineIsWrong).toBe(false);
    expect(judgeKeys(GOOD, new Map(), '@host:x', '@me:x')).toEqual({ mismatched: {}, mineIsWrong: false });
  });
  it('does not take a user whose id starts like the host for the host', () => {
    const peers = new Map([['@host:xy|H', BAD]]);
    // '@host:x|' is not a prefix of '@host:xy|H', so this is not the host: with nobody matching we are blamed anyway.
    expect(judgeKeys(GOOD, peers, '@host:x', '@me:x')).toEqual({ mismatched: { '@host:xy|H': true }, mineIsWrong: true });
  });
});
