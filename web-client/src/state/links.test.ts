import { describe, expect, it } from 'vitest';
import { carriedQuery, iceTransportPolicy, parseRoute } from './links';

describe('link settings', () => {
  it('reads relay=1 after the fragment and carries it from home to the room', () => {
    const home = parseRoute('#/?relay=1');
    expect(home).toEqual({ page: 'home', prefs: { relay: true } });
    const join = parseRoute(`#/join/${encodeURIComponent('!r:x')}${carriedQuery(home.prefs)}`);
    expect(join.page === 'join' && join.prefs.relay).toBe(true);
    expect(iceTransportPolicy(join.prefs)).toBe('relay');
  });

  it('defaults to every transport, and relay=0 turns relaying off', () => {
    expect(iceTransportPolicy(parseRoute('#/room/abc').prefs)).toBe('all');
    const off = parseRoute('#/room/abc?relay=0').prefs;
    expect(iceTransportPolicy(off)).toBe('all');
    expect(carriedQuery(off)).toBe('');
    expect(carriedQuery({ screen: true, relay: true, name: 'x', mic: false })).toBe('?screen=1&relay=1');
  });
});
