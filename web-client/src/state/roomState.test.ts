import { describe, expect, it } from 'vitest';
import { addChatItem, applyKnock, applyMember, applyPresence, applyRole, applySummary, applyTyping, initialRoomState, isHostUser, setChatOpen, typingNames, waitingKnocks, whoIsHere, type ChatItem, type RoomViewState } from './roomState';
import type { Member } from '../protocol/types';
import { inviteFragment, neutralLabel, parseRoute, routeFromPastedLink } from './links';
import { LocalMemory, memoryStore } from './storage';

const me = { userId: '@me:x', deviceId: 'D0' };
const item = (seq: number, sender = '@bob:x', mid?: string): ChatItem => ({ seq, ts: seq, sender, deviceId: 'D1', kind: 'text', status: 'ok', text: `m${seq}`, mid });

describe('timeline', () => {
  it('orders by seq and drops duplicates by seq and by mid', () => {
    let s = initialRoomState('!r:x', me, 'Me', false);
    for (const seq of [1, 3, 2, 3, 1]) s = addChatItem(s, item(seq));
    expect(s.timeline.map((i) => i.seq)).toEqual([1, 2, 3]);
    s = addChatItem(s, item(4, '@bob:x', 'abc'));
    s = addChatItem(s, item(5, '@bob:x', 'abc')); // resent after a lost ack
    expect(s.timeline.map((i) => i.seq)).toEqual([1, 2, 3, 4]);
  });

  it('counts unread only while the panel is closed and only for others', () => {
    let s = setChatOpen(initialRoomState('!r:x', me, 'Me', false), false);
    s = addChatItem(s, item(1));
    s = addChatItem(s, item(2, me.userId));
    s = addChatItem(s, { ...item(3), kind: 'system' });
    expect(s.unread).toBe(1);
    expect(setChatOpen(s, true).unread).toBe(0);
  });
});

describe('presence and typing', () => {
  it('counts devices per user and clears typing when a device leaves', () => {
    let s = initialRoomState('!r:x', me, 'Me', false);
    s = applyPresence(s, '@bob:x', 'A', 'Guest 1', true);
    s = applyPresence(s, '@bob:x', 'B', 'Guest 1', true);
    s = applyPresence(s, '@bob:x', 'B', 'Guest 1', true);
    s = { ...s, names: { '@bob:x': 'Bob' } };
    expect(whoIsHere(s)).toEqual([{ userId: '@bob:x', name: 'Bob', devices: 2, isHost: false }]);
    s = applyTyping(s, '@bob:x', 'A', true);
    expect(typingNames(s)).toEqual(['Bob']);
    s = applyPresence(s, '@bob:x', 'A', 'Guest 1', false);
    expect(typingNames(s)).toEqual([]);
    expect(whoIsHere(s)[0]?.devices).toBe(1);
  });
});

describe('links', () => {
  it('round-trips invite links with and without the secret', () => {
    const f = inviteFragment('!abc:srv.example', 'tok/en', 's3cr3t');
    expect(parseRoute(f + '?name=alice&mic=0&cam=1&screen=0')).toEqual({
      page: 'join',
      roomId: '!abc:srv.example',
      token: 'tok/en',
      secret: 's3cr3t',
      prefs: { name: 'alice', mic: false, cam: true, screen: false },
    });
    expect(parseRoute(inviteFragment('!abc:srv', 'tok', null))).toMatchObject({ token: 'tok', secret: null });
    expect(routeFromPastedLink('https://h.example/#/join/%21a%3Ah/t/s')).toMatchObject({ page: 'join', roomId: '!a:h' });
    expect(routeFromPastedLink('nonsense')).toBeNull();
    expect(parseRoute('#/room/%21a%3Ah')).toMatchObject({ page: 'room', roomId: '!a:h' });
    expect(parseRoute('')).toMatchObject({ page: 'home' });
  });

  it('makes neutral labels', () => {
    expect(neutralLabel(() => 0.2)).toMatch(/^Guest [0-9a-f]{4}$/);
  });
});

describe('local memory', () => {
  it('keeps the first joined seq and forgets rooms', () => {
    const m = new LocalMemory(memoryStore());
    m.rememberRoom('!r:x', { passphrase: 'p', joinedSeq: 5 });
    m.rememberRoom('!r:x', { joinedSeq: 9 });
    expect(m.room('!r:x')).toMatchObject({ passphrase: 'p', joinedSeq: 5 });
    m.forgetRoom('!r:x');
    expect(m.room('!r:x')).toBeNull();
    m.displayName = 'Ann';
    expect(m.displayName).toBe('Ann');
  });
});

describe('live items and replayed history', () => {
  const summary = (latest: number) => ({ room_id: '!r:x', origin: 'x', host: '@bob:x', locked: false, max_participants: 8, members: [], connected: [], latest_seq: latest, is_host: false, guests_may_share: false, can_share: false, lobby: false, role: 'guest' as const, knocks: [], created_ts: 0, expires_ts: null });

  it('announces nothing before the subscription, then only items above the seq it started at', () => {
    let s = initialRoomState('!r:x', me, 'Me', false);
    s = addChatItem(s, item(1));
    expect(s.lastLive).toBeNull();
    s = applySummary(s, summary(3));
    s = addChatItem(s, item(2)); // replayed history, arriving after the summary
    s = addChatItem(s, item(3));
    expect(s.lastLive).toBeNull();
    s = addChatItem(s, item(4));
    expect(s.lastLive?.seq).toBe(4);
    // A reconnect replays what was missed: not announced one by one either.
    s = applySummary(s, summary(7));
    s = addChatItem(s, item(6));
    expect(s.lastLive?.seq).toBe(4);
    s = addChatItem(s, item(8));
    expect(s.lastLive?.seq).toBe(8);
  });
});

describe('roles and the lobby', () => {
  const member = (user_id: string, role: Member['role']): Member => ({ user_id, display_name: user_id, role, membership: 'joined' });
  const base = (): RoomViewState => ({
    ...initialRoomState('!r:x', me, 'Me', false),
    host: '@host:x',
    members: [member('@host:x', 'host'), member(me.userId, 'guest'), member('@bob:x', 'guest')],
  });

  it('a promotion makes us a host; a demotion takes it away', () => {
    let s = applyRole(base(), me.userId, 'cohost');
    expect([s.role, s.isHost, isHostUser(s, me.userId)]).toEqual(['cohost', true, true]);
    expect(isHostUser(s, '@bob:x')).toBe(false);
    s = applyRole(s, me.userId, 'guest');
    expect([s.role, s.isHost]).toEqual(['guest', false]);
  });

  it('a succession names the new host and makes the old one a guest, for everyone', () => {
    let s = applyRole(base(), '@bob:x', 'host', '@host:x');
    expect(s.host).toBe('@bob:x');
    expect(s.members.map((m) => [m.user_id, m.role])).toEqual([['@host:x', 'guest'], [me.userId, 'guest'], ['@bob:x', 'host']]);
    expect(isHostUser(s, '@host:x')).toBe(false);
    s = applyRole(s, me.userId, 'host', '@bob:x');
    expect([s.host, s.role, s.isHost]).toEqual([me.userId, 'host', true]);
  });

  it('keeps the knocks waiting, drops answered and lapsed ones, and one who came in', () => {
    let s = applyRole(base(), me.userId, 'cohost');
    s = applyKnock(s, { type: 'knock', user_id: '@k1:x', display_name: 'Kim', state: 'pending', expires_ts: 2000 });
    s = applyKnock(s, { type: 'knock', user_id: '@k2:x', display_name: 'Ray', state: 'pending', expires_ts: 1500 });
    s = applyKnock(s, { type: 'knock', user_id: '@k3:x', display_name: 'Old', state: 'pending', expires_ts: 500 });
    expect(waitingKnocks(s, 1000)).toEqual([{ userId: '@k2:x', name: 'Ray' }, { userId: '@k1:x', name: 'Kim' }]);
    s = applyKnock(s, { type: 'knock', user_id: '@k2:x', display_name: 'Ray', state: 'refused', expires_ts: 9000 });
    s = applyMember(s, '@k1:x', 'Kim', 'joined');
    expect(waitingKnocks(s, 1000)).toEqual([]);
    // A host made a guest again sees no knocks.
    s = applyKnock(s, { type: 'knock', user_id: '@k4:x', display_name: 'New', state: 'pending', expires_ts: 9000 });
    expect(applyRole(s, me.userId, 'guest').knocks).toEqual({});
  });

  it('leaving ends a co-host’s role', () => {
    let s = applyRole(base(), '@bob:x', 'cohost');
    expect(isHostUser(s, '@bob:x')).toBe(true);
    s = applyMember(s, '@bob:x', 'bob', 'left');
    expect(isHostUser(s, '@bob:x')).toBe(false);
  });
});
