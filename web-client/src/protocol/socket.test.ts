/**
 * The WebSocket client against a tiny in-process server speaking PROTOCOL.md over a real socket
 * (the `ws` package), so framing, close codes and reconnects are the real thing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer, WebSocket as NodeWebSocket } from 'ws';
import type { AddressInfo } from 'node:net';
import { ConfabSocket, type SocketStatus, type WebSocketLike } from './socket';
import { ConfabError, type RoomEvent } from './types';
import { backoffDelay } from './backoff';

const ROOM = '!room:test';

interface Frame {
  type: string;
  id?: number | string;
  [k: string]: unknown;
}

/** A minimal homeserver: auth, subscribe with since, chat, ping. Hooks let a test misbehave on purpose. */
class TinyServer {
  readonly wss: WebSocketServer;
  readonly events: RoomEvent[] = [];
  readonly seen: Frame[] = [];
  readonly sockets = new Set<NodeWebSocket>();
  subscribers = new Set<NodeWebSocket>();
  /** Called before normal handling; return true to swallow the frame. */
  hook: ((ws: NodeWebSocket, f: Frame) => boolean) | null = null;
  connections = 0;

  constructor() {
    this.wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    this.wss.on('connection', (ws) => {
      this.connections++;
      this.sockets.add(ws);
      ws.on('close', () => {
        this.sockets.delete(ws);
        this.subscribers.delete(ws);
      });
      let authed = false;
      ws.on('message', (data) => {
        const f = JSON.parse(String(data)) as Frame;
        this.seen.push(f);
        if (this.hook?.(ws, f)) return;
        const reply = (result: unknown) => f.id !== undefined && ws.send(JSON.stringify({ type: 'ack', id: f.id, result }));
        const fail = (code: string) => ws.send(JSON.stringify({ type: 'error', id: f.id, request: f.type, code, reason: code }));
        if (!authed && f.type !== 'auth') return fail('not_authenticated');
        switch (f.type) {
          case 'auth':
            if (f.token !== 'good') {
              fail('unauthorized');
              ws.close(1008, 'auth');
              return;
            }
            authed = true;
            return reply({ user_id: '@me:test', device_id: 'D1', display_name: 'Guest' });
          case 'subscribe': {
            const since = Number(f.since ?? 0);
            reply({ room_id: ROOM, latest_seq: this.events.length, connected: [], members: [] });
            for (const ev of this.events) if (ev.seq > since) ws.send(JSON.stringify({ type: 'event', ...ev }));
            this.subscribers.add(ws);
            return;
          }
          case 'chat':
            reply(this.append(String(f.ciphertext)));
            return;
          case 'ping':
            return reply({});
          default:
            return fail('unknown_type');
        }
      });
    });
  }

  static async start(): Promise<TinyServer> {
    const s = new TinyServer();
    await new Promise<void>((r) => (s.wss.address() ? r() : s.wss.once('listening', () => r())));
    return s;
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}/_confab/client/v1/ws`;
  }

  append(ciphertext: string): { seq: number; ts: number } {
    const ev: RoomEvent = {
      room_id: ROOM,
      seq: this.events.length + 1,
      ts: Date.now(),
      sender: '@me:test',
      device_id: 'D1',
      content: { type: 'chat', kind: 'text', ciphertext },
    };
    this.events.push(ev);
    for (const s of this.subscribers) s.send(JSON.stringify({ type: 'event', ...ev }));
    return { seq: ev.seq, ts: ev.ts };
  }

  dropAll(code?: number): void {
    for (const s of this.sockets) code ? s.close(code, 'test') : s.terminate();
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.terminate();
    return new Promise((r) => this.wss.close(() => r()));
  }
}

/** Resolve when `pred` holds, re-checking on every status/event callback (no sleeps). */
function waiter() {
  const checks: Array<() => void> = [];
  return {
    poke: () => checks.slice().forEach((c) => c()),
    until: (pred: () => boolean, ms = 5000) =>
      new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('condition not met in time')), ms);
        const check = () => {
          if (pred()) {
            clearTimeout(t);
            checks.splice(checks.indexOf(check), 1);
            resolve();
          }
        };
        checks.push(check);
        check();
      }),
  };
}

let server: TinyServer;
let client: ConfabSocket | null = null;

function makeClient(token = 'good', extra: Partial<ConstructorParameters<typeof ConfabSocket>[0]> = {}) {
  const statuses: SocketStatus[] = [];
  const events: RoomEvent[] = [];
  const w = waiter();
  const c = new ConfabSocket({
    url: server.url,
    token,
    factory: (url) => new NodeWebSocket(url) as unknown as WebSocketLike,
    backoff: { baseMs: 5, maxMs: 40, factor: 2 },
    requestTimeoutMs: 2000,
    handlers: {
      status: (s) => {
        statuses.push(s);
        w.poke();
      },
      event: (e) => {
        events.push(e);
        w.poke();
      },
    },
    ...extra,
  });
  client = c;
  return { c, statuses, events, w };
}

afterEach(async () => {
  client?.stop();
  client = null;
  await server?.close();
});

describe('ConfabSocket', () => {
  it('authenticates first and pairs every ack and error with its request exactly once', async () => {
    server = await TinyServer.start();
    const { c, statuses, w } = makeClient();
    c.start();
    await w.until(() => c.isOnline);
    expect(server.seen[0]).toMatchObject({ type: 'auth', token: 'good' });
    expect(c.identity).toEqual({ user_id: '@me:test', device_id: 'D1', display_name: 'Guest' });
    expect(statuses.map((s) => s.state)).toEqual(['connecting', 'online']);

    // The server acks the same id twice and sends an error for it too: only the first counts.
    server.hook = (ws, f) => {
      if (f.type === 'ping') {
        ws.send(JSON.stringify({ type: 'ack', id: f.id, result: { n: 1 } }));
        ws.send(JSON.stringify({ type: 'ack', id: f.id, result: { n: 2 } }));
        ws.send(JSON.stringify({ type: 'error', id: f.id, request: 'ping', code: 'internal', reason: 'x' }));
        return true;
      }
      return false;
    };
    const [a, b] = await Promise.all([c.request({ type: 'ping' }), c.request({ type: 'ping' })]);
    expect(a).toEqual({ n: 1 });
    expect(b).toEqual({ n: 1 });
    server.hook = null;

    const err = await c.request({ type: 'typing', room_id: ROOM, typing: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfabError);
    expect((err as ConfabError).code).toBe('unknown_type');
    const ids = server.seen.filter((f) => f.id !== undefined).map((f) => f.id);
    expect(new Set(ids).size).toBe(ids.length); // ids are unique
  });

  it('hands id-less errors to the unpaired handler and times out unanswered requests once', async () => {
    server = await TinyServer.start();
    const unpaired: string[] = [];
    const { c, w } = makeClient('good', {
      requestTimeoutMs: 150,
      handlers: { unpairedError: (e, req) => unpaired.push(`${req}:${e.code}`) },
    });
    c.start();
    await new Promise<void>((r) => {
      const t = setInterval(() => c.isOnline && (clearInterval(t), r()), 5);
    });
    void w;
    server.hook = (ws, f) => {
      if (f.type === 'typing') {
        ws.send(JSON.stringify({ type: 'error', request: 'typing', code: 'not_subscribed', reason: 'no' }));
        return true;
      }
      if (f.type === 'ping') return true; // never answered
      return false;
    };
    expect(c.send({ type: 'typing', room_id: ROOM, typing: true })).toBe(true);
    const err = await c.request({ type: 'ping' }).catch((e: unknown) => e);
    expect((err as ConfabError).code).toBe('timeout');
    expect(unpaired).toEqual(['typing:not_subscribed']);
  });

  it('resumes with since = last seq after a drop, with no gap and no duplicate', async () => {
    server = await TinyServer.start();
    server.append('c1');
    server.append('c2');
    const { c, events, w, statuses } = makeClient();
    c.start();
    const summary = await c.subscribe(ROOM);
    expect(summary.room_id).toBe(ROOM);
    await w.until(() => events.length === 2);
    await c.request({ type: 'chat', room_id: ROOM, kind: 'text', ciphertext: 'c3' });
    await w.until(() => events.length === 3);

    // Misbehaving server: on resubscribe it also replays the last event it already sent.
    server.hook = (ws, f) => {
      if (f.type === 'subscribe') {
        const since = Number(f.since);
        ws.send(JSON.stringify({ type: 'ack', id: f.id, result: { room_id: ROOM } }));
        for (const ev of server.events) if (ev.seq >= since) ws.send(JSON.stringify({ type: 'event', ...ev }));
        server.subscribers.add(ws);
        return true;
      }
      return false;
    };
    const pendingDuringDrop = c.request({ type: 'ping' }).catch((e: unknown) => e);
    server.dropAll();
    expect(((await pendingDuringDrop) as ConfabError).code).toBe('disconnected');
    server.append('c4'); // written while the client is away
    await w.until(() => events.length === 4);
    expect(statuses.some((s) => s.state === 'reconnecting')).toBe(true);
    const subs = server.seen.filter((f) => f.type === 'subscribe');
    expect(subs.map((f) => f.since)).toEqual([0, 3]);
    await c.request({ type: 'chat', room_id: ROOM, kind: 'text', ciphertext: 'c5' });
    await w.until(() => events.length === 5);
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(c.lastSeq(ROOM)).toBe(5);
  });

  it('subscribes from a seq restored after a reload', async () => {
    server = await TinyServer.start();
    for (let i = 1; i <= 4; i++) server.append(`c${i}`);
    const { c, events, w } = makeClient();
    c.start();
    await c.subscribe(ROOM, 2);
    await w.until(() => events.length === 2);
    expect(events.map((e) => e.seq)).toEqual([3, 4]);
  });

  it('stops for good when authentication is refused', async () => {
    server = await TinyServer.start();
    const { c, statuses, w } = makeClient('bad');
    c.start();
    await w.until(() => statuses.some((s) => s.state === 'stopped'));
    const stopped = statuses.find((s) => s.state === 'stopped');
    expect(stopped).toMatchObject({ fatal: true });
    expect(server.connections).toBe(1);
  });

  it('reconnects after close codes 1012 and 4008 and after a shutdown message', async () => {
    server = await TinyServer.start();
    const { c, statuses, w } = makeClient();
    c.start();
    await w.until(() => c.isOnline);
    server.dropAll(1012);
    await w.until(() => server.connections === 2 && c.isOnline);
    expect(statuses.find((s) => s.state === 'reconnecting')).toMatchObject({ why: 'the server is restarting' });
    server.dropAll(4008);
    await w.until(() => server.connections === 3 && c.isOnline);
    for (const s of server.sockets) s.send(JSON.stringify({ type: 'shutdown', reason: 'maintenance', retry_after_ms: 20 }));
    await w.until(() => server.connections === 4 && c.isOnline);
    const last = statuses.filter((s) => s.state === 'reconnecting').pop();
    expect(last).toMatchObject({ why: 'server going away: maintenance' });
    expect((last as { inMs: number }).inMs).toBeGreaterThanOrEqual(20);
  });

  it('ends a subscription on kicked / replaced and does not resubscribe it', async () => {
    server = await TinyServer.start();
    const msgs: string[] = [];
    const { c, w } = makeClient('good', { handlers: { message: (m) => msgs.push(m.type) } });
    c.start();
    await c.subscribe(ROOM);
    for (const s of server.sockets) s.send(JSON.stringify({ type: 'replaced', room_id: ROOM }));
    await new Promise<void>((r) => {
      const t = setInterval(() => msgs.length && (clearInterval(t), r()), 5);
    });
    void w;
    expect(msgs).toEqual(['replaced']);
    expect(c.isSubscribed(ROOM)).toBe(false);
  });
});

describe('backoff', () => {
  it('grows exponentially with jitter and a cap', () => {
    const opts = { baseMs: 100, maxMs: 1000, factor: 2 };
    expect(backoffDelay(0, opts, () => 0)).toBe(50);
    expect(backoffDelay(0, opts, () => 0.999)).toBe(100);
    expect(backoffDelay(3, opts, () => 0)).toBe(400);
    expect(backoffDelay(10, opts, () => 0.999)).toBe(1000);
  });
});
