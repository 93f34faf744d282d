/**
 * An in-memory homeserver for one room, speaking the client protocol (PROTOCOL.md) over fake
 * WebSockets: auth, subscribe with `since` (ack with the summary, then the missed events), chat
 * (sequenced, fanned out), signal relay, presence, kick and `replaced`. Tests can drop a device's
 * socket as a network failure would, or hold what the server sends.
 */
import type { WebSocketLike } from '../protocol/socket';
import type { KickResult, RoomEvent, RoomSummary } from '../protocol/types';

export const ROOM = '!room:test';

interface Identity {
  user_id: string;
  device_id: string;
  display_name: string;
}

export class FakeServerSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  who: Identity | null = null;
  subscribed = false;

  constructor(private readonly server: FakeRoomServer) {
    setTimeout(() => {
      if (this.readyState !== 0) return;
      this.readyState = 1;
      this.onopen?.({});
    }, 0);
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('InvalidStateError: not open');
    setTimeout(() => this.readyState === 1 && this.server.receive(this, JSON.parse(data) as Frame), 0);
  }

  close(code = 1000, reason = ''): void {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    this.server.closed(this);
    setTimeout(() => this.onclose?.({ code, reason }), 0);
  }

  /** From the server side. */
  push(msg: unknown): void {
    if (this.readyState !== 1) return;
    const data = JSON.stringify(msg);
    setTimeout(() => this.readyState === 1 && this.onmessage?.({ data }), 0);
  }

  /** The network failed under this socket (no close frame). */
  fail(): void {
    this.close(1006, '');
  }
}

type Frame = { type: string; id?: number; [k: string]: unknown };

export class FakeRoomServer {
  readonly tokens = new Map<string, Identity>();
  readonly events: RoomEvent[] = [];
  readonly sockets = new Set<FakeServerSocket>();
  readonly frames: Array<Frame & { from: string }> = [];
  /** Chat transaction ids seen, per device, with the number each got (as the homeserver keeps them). */
  private readonly txns = new Map<string, number>();
  /** Commit the next chat message, then drop the socket before its ack. */
  loseNextChatAck = false;
  host = '';
  guestsMayShare = false;
  private clock = 1_000_000;

  /** A guest session; the first one made is the host. */
  guest(user: string, device: string): string {
    const token = `tok-${user}-${device}`;
    this.tokens.set(token, { user_id: user, device_id: device, display_name: `Guest ${user}` });
    if (!this.host) this.host = user;
    return token;
  }

  factory = (): WebSocketLike => {
    const s = new FakeServerSocket(this);
    this.sockets.add(s);
    return s;
  };

  socketOf(user: string, device: string): FakeServerSocket | undefined {
    return [...this.sockets].find((s) => s.readyState === 1 && s.who?.user_id === user && s.who.device_id === device);
  }

  private subscribers(): FakeServerSocket[] {
    return [...this.sockets].filter((s) => s.subscribed && s.readyState === 1);
  }

  private append(sender: Identity, content: RoomEvent['content']): RoomEvent {
    const ev: RoomEvent = { room_id: ROOM, seq: this.events.length + 1, ts: ++this.clock, sender: sender.user_id, device_id: sender.device_id, content };
    this.events.push(ev);
    for (const s of this.subscribers()) s.push({ type: 'event', ...ev });
    return ev;
  }

  summary(forUser: string): RoomSummary {
    const members = [...new Map([...this.tokens.values()].map((i) => [i.user_id, i])).values()]
      .filter((i) => this.events.some((e) => e.content.type === 'member' && e.content.user_id === i.user_id))
      .map((i) => ({ user_id: i.user_id, display_name: i.display_name, role: i.user_id === this.host ? 'host' : 'guest', membership: 'joined' }));
    return {
      room_id: ROOM,
      origin: 'test',
      host: this.host,
      locked: false,
      max_participants: 8,
      members,
      connected: this.subscribers().map((s) => ({ user_id: s.who!.user_id, device_id: s.who!.device_id, display_name: s.who!.display_name })),
      latest_seq: this.events.length,
      is_host: forUser === this.host,
      guests_may_share: this.guestsMayShare,
      can_share: forUser === this.host || this.guestsMayShare,
      created_ts: 0,
      expires_ts: null,
    } as unknown as RoomSummary;
  }

  receive(ws: FakeServerSocket, f: Frame): void {
    this.frames.push({ ...f, from: ws.who ? `${ws.who.user_id}|${ws.who.device_id}` : '?' });
    const reply = (result: unknown) => f.id !== undefined && ws.push({ type: 'ack', id: f.id, result });
    if (f.type === 'auth') {
      const who = this.tokens.get(String(f.token));
      if (!who) return void ws.close(1008, 'auth');
      ws.who = who;
      return void reply(who);
    }
    const who = ws.who;
    if (!who) return void ws.push({ type: 'error', id: f.id, request: f.type, code: 'not_authenticated', reason: 'auth first' });
    switch (f.type) {
      case 'subscribe': {
        for (const other of this.subscribers()) {
          if (other !== ws && other.who!.user_id === who.user_id && other.who!.device_id === who.device_id) {
            other.subscribed = false;
            other.push({ type: 'replaced', room_id: ROOM });
          }
        }
        if (!this.events.some((e) => e.content.type === 'member' && e.content.user_id === who.user_id)) {
          this.append(who, { type: 'member', user_id: who.user_id, display_name: who.display_name, membership: 'joined' });
        }
        ws.subscribed = true;
        reply(this.summary(who.user_id));
        const since = Number(f.since ?? 0);
        for (const ev of this.events) if (ev.seq > since) ws.push({ type: 'event', ...ev });
        for (const s of this.subscribers()) if (s !== ws) s.push({ type: 'presence', room_id: ROOM, user_id: who.user_id, device_id: who.device_id, display_name: who.display_name, online: true });
        return;
      }
      case 'chat': {
        const key = f.txn_id === undefined ? null : `${who.user_id}|${who.device_id}|${String(f.txn_id)}`;
        const seen = key === null ? undefined : this.txns.get(key);
        if (seen !== undefined) return void reply({ seq: seen });
        const ev = this.append(who, { type: 'chat', kind: String(f.kind), ciphertext: String(f.ciphertext) });
        if (key !== null) this.txns.set(key, ev.seq);
        if (this.loseNextChatAck) {
          this.loseNextChatAck = false;
          return void ws.fail();
        }
        return void reply({ seq: ev.seq });
      }
      case 'signal': {
        const to = f.to as { user_id: string; device_id: string };
        const target = this.subscribers().find((s) => s.who!.user_id === to.user_id && s.who!.device_id === to.device_id);
        target?.push({ type: 'signal', room_id: ROOM, from: { user_id: who.user_id, device_id: who.device_id }, payload: f.payload });
        return;
      }
      case 'typing':
        for (const s of this.subscribers()) if (s !== ws) s.push({ type: 'typing', room_id: ROOM, user_id: who.user_id, device_id: who.device_id, typing: f.typing });
        return;
      case 'ping':
        return void reply({});
      default:
        ws.push({ type: 'error', id: f.id, request: f.type, code: 'unknown_type', reason: f.type });
    }
  }

  closed(ws: FakeServerSocket): void {
    const was = ws.subscribed && ws.who;
    ws.subscribed = false;
    this.sockets.delete(ws);
    if (!was) return;
    const stillThere = this.subscribers().some((s) => s.who!.user_id === ws.who!.user_id && s.who!.device_id === ws.who!.device_id);
    if (stillThere) return;
    for (const s of this.subscribers()) s.push({ type: 'presence', room_id: ROOM, user_id: ws.who!.user_id, device_id: ws.who!.device_id, display_name: ws.who!.display_name, online: false });
  }

  /** The host changed the room's settings: a `settings` event with every setting, as the origin sends. */
  setGuestsMayShare(on: boolean): void {
    this.guestsMayShare = on;
    const host = [...this.tokens.values()].find((i) => i.user_id === this.host)!;
    this.append(host, { type: 'settings', guests_may_share: on, changed: ['guests_may_share'] });
  }

  /**
   * The host removed `user`: their sockets are told and closed, the others see them go. The answer
   * is the real server's shape; the fake knows no invites, so it names the one link everyone here
   * is taken to have joined with.
   */
  kick(user: string): KickResult {
    for (const s of [...this.sockets]) {
      if (s.who?.user_id !== user) continue;
      s.push({ type: 'kicked', room_id: ROOM });
      s.subscribed = false;
    }
    const who = [...this.tokens.values()].find((i) => i.user_id === user)!;
    this.append(who, { type: 'member', user_id: user, display_name: who.display_name, membership: 'kicked' } as RoomEvent['content']);
    return { room_id: ROOM, user_id: user, kicked: true, invite_revoked: true, revoked_invites: ['the-link'] };
  }
}
