/**
 * The live stream: one WebSocket per tab. Owns authentication (token in the first message), request
 * ids with exactly-one settlement of each request (ack, error, timeout or disconnect — whichever comes
 * first, later ones ignored), room subscriptions that resume with `since` = the last seq seen after a
 * reconnect, dedupe of events by seq, reconnect with jittered backoff, and the close codes and
 * `shutdown`/`replaced`/`kicked`/`room_closed` messages of PROTOCOL.md.
 */
import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff';
import {
  ConfabError,
  type ClientRequest,
  type RequestId,
  type RoomEvent,
  type RoomSummary,
  type ServerMessage,
  type Whoami,
} from './types';

/** The part of the WHATWG WebSocket this client uses; the browser's and the `ws` package's both fit. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type WebSocketFactory = (url: string) => WebSocketLike;

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}
const realTimers: Timers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (h) => globalThis.clearTimeout(h as ReturnType<typeof setTimeout>),
};

export type SocketStatus =
  | { state: 'connecting'; attempt: number }
  | { state: 'online' }
  | { state: 'reconnecting'; attempt: number; inMs: number; why: string }
  | { state: 'stopped'; why: string; fatal: boolean };

/** Messages handed to the application once the socket has dealt with its own part. */
export type LiveMessage = Exclude<ServerMessage, { type: 'ack' } | { type: 'error' } | { type: 'event' } | { type: 'shutdown' }>;

export interface SocketHandlers {
  status?(s: SocketStatus): void;
  /** A persisted event, each seq at most once per room. */
  event?(ev: RoomEvent): void;
  /** Subscription (re)established; `resumed` is true after a reconnect. */
  subscribed?(summary: RoomSummary, resumed: boolean): void;
  /** presence, typing, signal, kicked, room_closed, replaced. */
  message?(msg: LiveMessage): void;
  /** An `error` without id (a fire-and-forget request failed). */
  unpairedError?(err: ConfabError, request: string | undefined): void;
}

export interface SocketOptions {
  url: string;
  token: string;
  factory: WebSocketFactory;
  handlers: SocketHandlers;
  backoff?: BackoffOptions;
  timers?: Timers;
  random?: () => number;
  requestTimeoutMs?: number;
  /** Application ping period; a missed reply means a dead link (browsers cannot see one otherwise). */
  pingIntervalMs?: number;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  timer: unknown;
  type: string;
}

interface Subscription {
  lastSeq: number;
  /** Resolved by the first successful subscribe after subscribe() was called. */
  waiters: Array<{ resolve(s: RoomSummary): void; reject(e: unknown): void }>;
}

const OPEN = 1;

/** Close codes after which reconnecting cannot help (PROTOCOL.md "Close codes"). */
const FATAL_CLOSE: Record<number, string> = {
  1008: 'The server refused this connection (authentication or origin).',
};

export class ConfabSocket {
  private ws: WebSocketLike | null = null;
  private nextId = 1;
  private readonly pending = new Map<RequestId, Pending>();
  private readonly subs = new Map<string, Subscription>();
  private attempt = 0;
  private stopped = true;
  private online = false;
  private everOnline = false;
  private reconnectTimer: unknown = null;
  private pingTimer: unknown = null;
  private forcedDelayMs: number | null = null;
  private whoami: Whoami | null = null;
  private readonly timers: Timers;
  private readonly random: () => number;
  private readonly requestTimeoutMs: number;
  private readonly pingIntervalMs: number;

  constructor(private readonly opts: SocketOptions) {
    this.timers = opts.timers ?? realTimers;
    this.random = opts.random ?? Math.random;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 15_000;
    this.pingIntervalMs = opts.pingIntervalMs ?? 20_000;
  }

  get isOnline(): boolean {
    return this.online;
  }
  get identity(): Whoami | null {
    return this.whoami;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  /** Close for good; every pending request is rejected. */
  stop(why = 'closed by the client', fatal = false): void {
    this.stopped = true;
    this.clearTimers();
    this.failPending(new ConfabError('disconnected', why));
    for (const sub of this.subs.values()) this.rejectWaiters(sub, new ConfabError('disconnected', why));
    const ws = this.ws;
    this.ws = null;
    this.online = false;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.close(1000, 'bye');
    }
    this.emitStatus({ state: 'stopped', why, fatal });
  }

  /** Drop the current socket as if the network had failed (also used by `shutdown`). */
  reconnectNow(why: string, delayMs?: number): void {
    if (this.stopped) return;
    if (delayMs !== undefined) this.forcedDelayMs = delayMs;
    const ws = this.ws;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      try {
        ws.close(4000, why);
      } catch {
        /* already closing */
      }
    }
    this.handleClose(4000, why);
  }

  /** Send a request with an id; settles exactly once. Rejects at once when not connected. */
  request<T = unknown>(msg: ClientRequest, opts: { beforeAuth?: boolean } = {}): Promise<T> {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN || (!this.online && !opts.beforeAuth)) {
      return Promise.reject(new ConfabError('disconnected', 'Not connected to the server.'));
    }
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        if (this.pending.delete(id)) reject(new ConfabError('timeout', `No reply to ${msg.type} in time.`));
      }, this.requestTimeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer, type: msg.type });
      ws.send(JSON.stringify({ ...msg, id }));
    });
  }

  /** Fire-and-forget (no id): only an error can come back. Returns false when not connected. */
  send(msg: ClientRequest): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN || !this.online) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  /**
   * Subscribe to a room and keep the subscription across reconnects. `since` is the last seq the
   * caller already has (e.g. restored after a reload); later resumes use the last seq seen.
   */
  subscribe(roomId: string, since = 0): Promise<RoomSummary> {
    let sub = this.subs.get(roomId);
    if (!sub) {
      sub = { lastSeq: since, waiters: [] };
      this.subs.set(roomId, sub);
    } else if (since > sub.lastSeq) {
      sub.lastSeq = since;
    }
    const p = new Promise<RoomSummary>((resolve, reject) => sub.waiters.push({ resolve, reject }));
    if (this.online) this.doSubscribe(roomId, false);
    return p;
  }

  unsubscribe(roomId: string): Promise<unknown> {
    this.subs.delete(roomId);
    if (!this.online) return Promise.resolve({});
    return this.request({ type: 'unsubscribe', room_id: roomId });
  }

  lastSeq(roomId: string): number {
    return this.subs.get(roomId)?.lastSeq ?? 0;
  }

  isSubscribed(roomId: string): boolean {
    return this.subs.has(roomId);
  }

  // ---- internals ----

  private emitStatus(s: SocketStatus): void {
    this.opts.handlers.status?.(s);
  }

  private connect(): void {
    this.emitStatus({ state: 'connecting', attempt: this.attempt });
    let ws: WebSocketLike;
    try {
      ws = this.opts.factory(this.opts.url);
    } catch (e) {
      this.handleClose(1006, String(e));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.request<Whoami>({ type: 'auth', token: this.opts.token }, { beforeAuth: true }).then(
        (who) => this.onAuthenticated(ws, who),
        (err: unknown) => {
          if (this.ws !== ws) return;
          if (err instanceof ConfabError && err.code !== 'disconnected' && err.code !== 'timeout') {
            this.fatal(`Authentication failed: ${err.reason}`);
          } else {
            this.reconnectNow('authentication timed out');
          }
        },
      );
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.onFrame(typeof ev.data === 'string' ? ev.data : String(ev.data));
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.handleClose(ev.code, ev.reason);
    };
    ws.onerror = () => {
      /* a close event always follows */
    };
  }

  private onAuthenticated(ws: WebSocketLike, who: Whoami): void {
    if (this.ws !== ws) return;
    this.whoami = who;
    this.online = true;
    const resumed = this.everOnline;
    this.everOnline = true;
    this.attempt = 0;
    this.emitStatus({ state: 'online' });
    for (const roomId of this.subs.keys()) this.doSubscribe(roomId, resumed);
    this.schedulePing();
  }

  private doSubscribe(roomId: string, resumed: boolean): void {
    const sub = this.subs.get(roomId);
    if (!sub) return;
    const since = sub.lastSeq;
    this.request<RoomSummary>({ type: 'subscribe', room_id: roomId, since }).then(
      (summary) => {
        if (this.subs.get(roomId) !== sub) return;
        this.opts.handlers.subscribed?.(summary, resumed);
        const waiters = sub.waiters.splice(0);
        for (const w of waiters) w.resolve(summary);
      },
      (err: unknown) => {
        if (err instanceof ConfabError && (err.code === 'disconnected' || err.code === 'timeout')) return; // retried on reconnect
        if (this.subs.get(roomId) === sub) this.subs.delete(roomId);
        this.rejectWaiters(sub, err);
      },
    );
  }

  private rejectWaiters(sub: Subscription, err: unknown): void {
    const waiters = sub.waiters.splice(0);
    for (const w of waiters) w.reject(err);
  }

  private schedulePing(): void {
    if (this.pingTimer !== null) this.timers.clearTimeout(this.pingTimer);
    this.pingTimer = this.timers.setTimeout(() => {
      this.pingTimer = null;
      if (!this.online) return;
      const ws = this.ws;
      this.request({ type: 'ping' }).then(
        () => this.schedulePing(),
        (err: unknown) => {
          if (this.ws === ws && err instanceof ConfabError && err.code === 'timeout') this.reconnectNow('the server stopped answering');
        },
      );
    }, this.pingIntervalMs);
  }

  private onFrame(text: string): void {
    let msg: ServerMessage;
    try {
      msg = JSON.parse(text) as ServerMessage;
    } catch {
      return; // not ours to crash on; the server speaks JSON
    }
    switch (msg.type) {
      case 'ack': {
        const p = this.pending.get(msg.id);
        if (!p) return; // late reply to a timed-out request: already settled
        this.pending.delete(msg.id);
        this.timers.clearTimeout(p.timer);
        p.resolve(msg.result);
        return;
      }
      case 'error': {
        const err = new ConfabError(msg.code, msg.reason, 0, msg.retry_after_ms);
        if (msg.id !== undefined && msg.id !== null) {
          const p = this.pending.get(msg.id);
          if (!p) return;
          this.pending.delete(msg.id);
          this.timers.clearTimeout(p.timer);
          p.reject(err);
        } else {
          this.opts.handlers.unpairedError?.(err, msg.request);
        }
        return;
      }
      case 'event': {
        const sub = this.subs.get(msg.room_id);
        if (!sub) return;
        if (msg.seq <= sub.lastSeq) return; // duplicate after a resume
        sub.lastSeq = msg.seq;
        const { type: _t, ...ev } = msg;
        this.opts.handlers.event?.(ev);
        return;
      }
      case 'shutdown':
        this.reconnectNow(`server going away: ${msg.reason}`, msg.retry_after_ms);
        return;
      case 'kicked':
      case 'room_closed':
      case 'replaced':
        // The server ended this subscription; resubscribing automatically would fight the other tab
        // (replaced) or be refused (kicked, closed).
        this.subs.delete(msg.room_id);
        this.opts.handlers.message?.(msg);
        return;
      default:
        this.opts.handlers.message?.(msg as LiveMessage);
    }
  }

  private failPending(err: ConfabError): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      this.timers.clearTimeout(p.timer);
      p.reject(err);
    }
  }

  private clearTimers(): void {
    if (this.reconnectTimer !== null) this.timers.clearTimeout(this.reconnectTimer);
    if (this.pingTimer !== null) this.timers.clearTimeout(this.pingTimer);
    this.reconnectTimer = null;
    this.pingTimer = null;
  }

  private fatal(why: string): void {
    this.stop(why, true);
  }

  private handleClose(code: number, reason: string): void {
    this.ws = null;
    this.online = false;
    this.clearTimers();
    this.failPending(new ConfabError('disconnected', 'The connection to the server dropped.'));
    if (this.stopped) return;
    const fatalWhy = FATAL_CLOSE[code];
    if (fatalWhy) {
      this.fatal(reason ? `${fatalWhy} (${reason})` : fatalWhy);
      return;
    }
    const why =
      code === 1012 ? 'the server is restarting'
      : code === 4008 ? 'the connection fell behind'
      : code === 4029 ? 'too many connections for this session'
      : code === 1009 ? 'a message was too large'
      : reason || 'the connection dropped';
    let delay = backoffDelay(this.attempt, this.opts.backoff ?? DEFAULT_BACKOFF, this.random);
    if (code === 4029) delay = Math.max(delay, (this.opts.backoff ?? DEFAULT_BACKOFF).maxMs / 2);
    if (this.forcedDelayMs !== null) {
      delay = this.forcedDelayMs + Math.round(this.random() * Math.min(1000, this.forcedDelayMs + 1));
      this.forcedDelayMs = null;
    }
    const attempt = this.attempt++;
    this.emitStatus({ state: 'reconnecting', attempt, inMs: delay, why });
    this.reconnectTimer = this.timers.setTimeout(() => {
      this.reconnectTimer = null;
      if (!this.stopped) this.connect();
    }, delay);
  }
}
