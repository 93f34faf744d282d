/**
 * Peer-to-peer file transfers of a room. The offer (name, size, mime, SHA-256) travels as an
 * encrypted chat event; the bytes travel over each peer's data channel, pulled by the receiver:
 * it sends `want` once it has the offer and an open channel to the sender, the sender streams the
 * chunks within the receiver's window (`ack` as the receiver's sink writes), the receiver hashes
 * as it goes, verifies the hash and answers `done`. Pulling (rather than pushing on offer) means
 * chunks never arrive before their offer is known, and late joiners can still fetch. Either side
 * can stop a transfer: the receiver with `cancel`, the sender with `abort` (it stopped sharing).
 * Several transfers run at once, each under its own id.
 */
import {
  ACK_EVERY,
  CreditGate,
  FLOW_WINDOW,
  decodeChunk,
  IncomingFile,
  sendChunks,
  TransferCancelled,
  type ByteSource,
  type DataChannelLike,
  type FileOffer,
  type FileStore,
  type Hasher,
} from './chunks';
import { RateMeter, type RateView } from './rate';

type Control =
  | { t: 'want'; id: string }
  | { t: 'gone'; id: string }
  | { t: 'cancel'; id: string }
  | { t: 'abort'; id: string }
  | { t: 'ack'; id: string; bytes: number }
  | { t: 'done'; id: string; ok: boolean };

export type IncomingState = 'offered' | 'requested' | 'receiving' | 'verifying' | 'done' | 'corrupt' | 'unavailable' | 'failed' | 'cancelled';
export type OutgoingPeerState = 'sending' | 'sent' | 'verified' | 'rejected' | 'failed' | 'cancelled';

/** Why a transfer is not done, as a code the view words in the user's language. */
export type TransferProblem = 'connection-lost' | 'sender-gone' | 'mismatch' | 'sender-stopped' | 'storage' | 'too-large';

export interface IncomingView extends RateView {
  direction: 'in';
  offer: FileOffer;
  from: string;
  state: IncomingState;
  progress: number;
  /** The verified file, disk-backed when it came through the Origin Private File System. */
  blob?: Blob;
  problem?: TransferProblem;
}
export interface OutgoingView {
  direction: 'out';
  offer: FileOffer;
  /** false once the sender stopped sharing it */
  sharing: boolean;
  peers: Record<string, { state: OutgoingPeerState; progress: number } & RateView>;
}
export type TransferView = IncomingView | OutgoingView;

export interface FileTransfersOptions {
  createHasher(): Promise<Hasher>;
  store: FileStore;
  onChange(): void;
  now(): number;
  chunkBytes?: number;
  /** The receiver's window (tests make it small). */
  windowBytes?: number;
}

interface Outgoing {
  view: OutgoingView;
  source: ByteSource;
  sending: Map<string, { cancelled: boolean; gate: CreditGate; rate: RateMeter }>;
}
interface Incoming {
  view: IncomingView;
  file: IncomingFile | null;
  rate: RateMeter | null;
  /** Chunks arrive before the sink is open (opening is asynchronous): held here meanwhile. */
  early: Array<{ index: number; data: Uint8Array }>;
  opening: boolean;
  lastAck: number;
}

/** Progress alone is reported at most this often: a render per chunk costs the page more than the transfer. */
const PROGRESS_EVERY_MS = 100;

export class FileTransfers {
  private lastProgress = -Infinity;
  private readonly channels = new Map<string, DataChannelLike>();
  private readonly outgoing = new Map<string, Outgoing>();
  private readonly incoming = new Map<string, Incoming>();

  constructor(private readonly opts: FileTransfersOptions) {
    // The receiver acknowledges every ACK_EVERY bytes: a smaller window would never be reopened.
    if ((opts.windowBytes ?? FLOW_WINDOW) < 2 * ACK_EVERY) throw new Error('the flow window must hold at least two acknowledgement intervals');
  }

  /** Keys of peers whose data channel is open (sending is enabled per peer from then on). */
  openPeers(): string[] {
    return [...this.channels.entries()].filter(([, ch]) => ch.readyState === 'open').map(([k]) => k);
  }

  views(): TransferView[] {
    return [...[...this.outgoing.values()].map((o) => o.view), ...[...this.incoming.values()].map((i) => i.view)];
  }

  view(id: string): TransferView | undefined {
    return this.outgoing.get(id)?.view ?? this.incoming.get(id)?.view;
  }

  /** Register a local file whose offer this device has posted. */
  share(offer: FileOffer, source: ByteSource): void {
    this.outgoing.set(offer.id, { view: { direction: 'out', offer, sharing: true, peers: {} }, source, sending: new Map() });
    this.opts.onChange();
  }

  /** Stop sharing a file of ours: transfers under way are stopped, later requests answered `gone`. */
  stopSharing(id: string): void {
    const out = this.outgoing.get(id);
    if (!out) return;
    for (const [peer, s] of out.sending) {
      s.cancelled = true;
      s.gate.abort(new TransferCancelled('stopped by the sender'));
      const ch = this.channels.get(peer);
      if (ch) this.sendControl(ch, { t: 'abort', id });
      this.setPeer(out, peer, { state: 'cancelled' });
    }
    out.sending.clear();
    out.view = { ...out.view, sharing: false };
    this.opts.onChange();
  }

  /** The largest file this browser can receive (its store's limit); null: no limit but the disk. */
  get maxBytes(): number | null {
    return this.opts.store.maxBytes ?? null;
  }

  /**
   * A decrypted offer from `from` (a peer device key). One larger than the store takes is shown
   * as such at once (`too-large`), rather than failing part way through.
   */
  offered(offer: FileOffer, from: string): void {
    if (this.outgoing.has(offer.id) || this.incoming.has(offer.id)) return;
    const tooLarge = this.maxBytes !== null && offer.size > this.maxBytes;
    const view: IncomingView = { direction: 'in', offer, from, state: tooLarge ? 'failed' : 'offered', progress: 0, bytesPerSecond: null, secondsLeft: null, ...(tooLarge ? { problem: 'too-large' as const } : {}) };
    this.incoming.set(offer.id, { view, file: null, rate: null, early: [], opening: false, lastAck: 0 });
    this.opts.onChange();
  }

  /** Ask the sender for the bytes. Returns false while its channel is not open (retried on attach), and for a file too large for the store. */
  request(id: string): boolean {
    const inc = this.incoming.get(id);
    if (!inc || !['offered', 'requested', 'unavailable', 'failed', 'corrupt', 'cancelled'].includes(inc.view.state)) return false;
    if (inc.view.problem === 'too-large') return false;
    const ch = this.channels.get(inc.view.from);
    this.reset(inc, { state: 'requested' });
    this.opts.onChange();
    if (!ch || ch.readyState !== 'open') return false;
    this.sendControl(ch, { t: 'want', id });
    return true;
  }

  /** The receiver stops a transfer: the sender is told, the partial file thrown away. */
  cancel(id: string): void {
    const inc = this.incoming.get(id);
    if (!inc || !['requested', 'receiving', 'verifying'].includes(inc.view.state)) return;
    const ch = this.channels.get(inc.view.from);
    if (ch) this.sendControl(ch, { t: 'cancel', id });
    this.reset(inc, { state: 'cancelled' });
    this.opts.onChange();
  }

  private reset(inc: Incoming, v: Partial<IncomingView>): void {
    void inc.file?.abort();
    inc.file = null;
    inc.rate = null;
    inc.early = [];
    inc.opening = false;
    inc.lastAck = 0;
    inc.view = { ...inc.view, progress: 0, bytesPerSecond: null, secondsLeft: null, problem: undefined, blob: undefined, ...v };
  }

  attachChannel(peer: string, ch: DataChannelLike): void {
    this.channels.set(peer, ch);
    // Requests that were waiting for this sender's channel go out now.
    for (const [id, inc] of this.incoming) {
      if (inc.view.from === peer && inc.view.state === 'requested') this.sendControl(ch, { t: 'want', id });
    }
    this.opts.onChange();
  }

  detachChannel(peer: string): void {
    this.channels.delete(peer);
    for (const inc of this.incoming.values()) {
      if (inc.view.from === peer && (inc.view.state === 'receiving' || inc.view.state === 'requested')) this.reset(inc, { state: 'requested', problem: 'connection-lost' });
    }
    for (const out of this.outgoing.values()) {
      const s = out.sending.get(peer);
      if (!s) continue;
      s.cancelled = true;
      s.gate.abort(new TransferCancelled('channel closed'));
    }
    this.opts.onChange();
  }

  /** Everything that arrives on a peer's file channel. */
  handleMessage(peer: string, data: string | ArrayBuffer | Uint8Array): void {
    if (typeof data === 'string') {
      let msg: Control;
      try {
        msg = JSON.parse(data) as Control;
      } catch {
        return;
      }
      this.handleControl(peer, msg);
      return;
    }
    let chunk: ReturnType<typeof decodeChunk>;
    try {
      chunk = decodeChunk(data);
    } catch {
      return;
    }
    const inc = this.incoming.get(chunk.id);
    if (!inc || inc.view.from !== peer) return; // only the offer's sender may fill it
    if (inc.view.state === 'requested') {
      // A transfer starts at chunk 0. Later chunks of an earlier attempt (cancelled, or replaced by
      // this request) may still be on the ordered channel ahead of it: they are not this one's.
      if (chunk.index !== 0) return;
      inc.view = { ...inc.view, state: 'receiving' };
      void this.open(chunk.id, inc);
    }
    if (inc.view.state !== 'receiving') return;
    if (!inc.file) {
      inc.early.push({ index: chunk.index, data: chunk.data });
      return;
    }
    this.take(chunk.id, inc, chunk.index, chunk.data);
  }

  private async open(id: string, inc: Incoming): Promise<void> {
    inc.opening = true;
    const offer = inc.view.offer;
    let file: IncomingFile;
    try {
      const [sink, hasher] = await Promise.all([this.opts.store.create(offer.id), this.opts.createHasher()]);
      file = new IncomingFile(offer, sink, hasher, this.opts.chunkBytes, (written) => this.written(id, written));
    } catch {
      if (this.incoming.get(id) === inc && inc.opening) this.fail(id, inc, 'storage');
      return;
    }
    if (this.incoming.get(id) !== inc || !inc.opening || inc.view.state !== 'receiving') {
      void file.abort();
      return;
    }
    inc.opening = false;
    inc.file = file;
    inc.rate = new RateMeter(offer.size);
    for (const c of inc.early.splice(0)) this.take(id, inc, c.index, c.data);
    if (offer.size === 0) void this.verify(id, inc);
  }

  private take(id: string, inc: Incoming, index: number, data: Uint8Array): void {
    const file = inc.file!;
    const verdict = file.accept(index, data);
    if (verdict === 'duplicate') return;
    if (verdict === 'bad') return this.fail(id, inc, 'mismatch');
    const now = this.opts.now();
    const rate = inc.rate!.sample(now, file.receivedBytes);
    inc.view = { ...inc.view, progress: file.progress, ...rate };
    if (file.complete) void this.verify(id, inc);
    else this.progressed(now);
  }

  /** Tell the view about progress, at most every PROGRESS_EVERY_MS (state changes are told at once). */
  private progressed(now: number): void {
    if (now - this.lastProgress < PROGRESS_EVERY_MS) return;
    this.lastProgress = now;
    this.opts.onChange();
  }

  /** The sink wrote up to `bytes`: widen the sender's window. */
  private written(id: string, bytes: number): void {
    const inc = this.incoming.get(id);
    if (!inc || inc.view.state !== 'receiving') return;
    if (bytes - inc.lastAck < ACK_EVERY && bytes < inc.view.offer.size) return;
    inc.lastAck = bytes;
    const ch = this.channels.get(inc.view.from);
    if (ch) this.sendControl(ch, { t: 'ack', id, bytes });
  }

  private fail(id: string, inc: Incoming, problem: TransferProblem): void {
    const ch = this.channels.get(inc.view.from);
    if (ch) this.sendControl(ch, { t: 'cancel', id });
    this.reset(inc, { state: 'failed', problem });
    this.opts.onChange();
  }

  private async verify(id: string, inc: Incoming): Promise<void> {
    const file = inc.file;
    if (!file) return;
    inc.view = { ...inc.view, state: 'verifying', secondsLeft: 0 };
    this.opts.onChange();
    let result: Awaited<ReturnType<IncomingFile['finish']>>;
    try {
      result = await file.finish();
    } catch {
      if (this.incoming.get(id) === inc && inc.file === file) this.fail(id, inc, 'storage');
      return;
    }
    if (this.incoming.get(id) !== inc || inc.file !== file) return; // cancelled meanwhile
    inc.file = null;
    inc.view = result.ok
      ? { ...inc.view, state: 'done', progress: 1, blob: result.blob, secondsLeft: 0 }
      : { ...inc.view, state: 'corrupt', problem: 'mismatch' };
    const ch = this.channels.get(inc.view.from);
    if (ch) this.sendControl(ch, { t: 'done', id, ok: result.ok });
    this.opts.onChange();
  }

  private handleControl(peer: string, msg: Control): void {
    if (typeof msg?.id !== 'string') return;
    if (msg.t === 'want') {
      const out = this.outgoing.get(msg.id);
      const ch = this.channels.get(peer);
      if (!ch) return;
      if (!out || !out.view.sharing) {
        this.sendControl(ch, { t: 'gone', id: msg.id });
        return;
      }
      // A repeated want (the receiver started over) replaces the transfer under way.
      const running = out.sending.get(peer);
      if (running) {
        running.cancelled = true;
        running.gate.abort(new TransferCancelled('restarted'));
      }
      const state = { cancelled: false, gate: new CreditGate(this.opts.windowBytes), rate: new RateMeter(out.source.size) };
      out.sending.set(peer, state);
      this.setPeer(out, peer, { state: 'sending', progress: 0 });
      const size = out.source.size;
      sendChunks(
        ch,
        msg.id,
        out.source,
        (sent) => {
          if (!state.cancelled) this.setPeer(out, peer, { state: 'sending', progress: size === 0 ? 1 : sent / size, ...state.rate.sample(this.opts.now(), sent) }, true);
        },
        () => state.cancelled,
        this.opts.chunkBytes,
        state.gate,
      ).then(
        () => {
          if (out.sending.get(peer) === state) this.setPeer(out, peer, { state: 'sent', progress: 1, secondsLeft: 0 });
        },
        (err: unknown) => {
          if (out.sending.get(peer) !== state) return;
          out.sending.delete(peer);
          const current = out.view.peers[peer]?.state;
          if (current !== 'cancelled') this.setPeer(out, peer, { state: err instanceof TransferCancelled && state.cancelled ? 'cancelled' : 'failed', progress: 0 });
        },
      );
      return;
    }
    if (msg.t === 'ack') {
      if (typeof msg.bytes === 'number') this.outgoing.get(msg.id)?.sending.get(peer)?.gate.ack(msg.bytes);
      return;
    }
    if (msg.t === 'cancel') {
      const out = this.outgoing.get(msg.id);
      const s = out?.sending.get(peer);
      if (!out || !s) return;
      s.cancelled = true;
      s.gate.abort(new TransferCancelled('cancelled by the receiver'));
      this.setPeer(out, peer, { state: 'cancelled' });
      return;
    }
    if (msg.t === 'done') {
      const out = this.outgoing.get(msg.id);
      if (out) {
        out.sending.delete(peer);
        this.setPeer(out, peer, { state: msg.ok ? 'verified' : 'rejected', progress: 1 });
      }
      return;
    }
    if (msg.t === 'gone' || msg.t === 'abort') {
      const inc = this.incoming.get(msg.id);
      if (inc && inc.view.from === peer && !['done', 'corrupt'].includes(inc.view.state)) {
        this.reset(inc, msg.t === 'gone' ? { state: 'unavailable', problem: 'sender-gone' } : { state: 'cancelled', problem: 'sender-stopped' });
        this.opts.onChange();
      }
    }
  }

  private setPeer(out: Outgoing, peer: string, p: Partial<OutgoingView['peers'][string]>, progressOnly = false): void {
    if (this.outgoing.get(out.view.offer.id) !== out) return;
    const prev = out.view.peers[peer] ?? { state: 'sending' as const, progress: 0, bytesPerSecond: null, secondsLeft: null };
    out.view = { ...out.view, peers: { ...out.view.peers, [peer]: { ...prev, ...p } } };
    if (progressOnly) this.progressed(this.opts.now());
    else this.opts.onChange();
  }

  private sendControl(ch: DataChannelLike, msg: Control): void {
    if (ch.readyState === 'open') ch.send(JSON.stringify(msg));
  }

  /** Leaving the room: stop everything, throw partial files away. */
  close(): void {
    for (const out of this.outgoing.values()) for (const s of out.sending.values()) {
      s.cancelled = true;
      s.gate.abort(new TransferCancelled('closed'));
    }
    for (const inc of this.incoming.values()) void inc.file?.abort();
  }
}
