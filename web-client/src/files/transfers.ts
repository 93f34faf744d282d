/**
 * Peer-to-peer file transfers of a room. The offer (name, size, mime, SHA-256) travels as an
 * encrypted chat event; the bytes travel over each peer's data channel, pulled by the receiver:
 * it sends `want` once it has the offer and an open channel to the sender, the sender streams the
 * chunks, the receiver verifies the hash and answers `done`. Pulling (rather than pushing on
 * offer) means chunks never arrive before their offer is known, and late joiners can still fetch.
 */
import {
  decodeChunk,
  Reassembler,
  sendChunks,
  TransferCancelled,
  type ByteSource,
  type DataChannelLike,
  type FileOffer,
} from './chunks';

type Control =
  | { t: 'want'; id: string }
  | { t: 'gone'; id: string }
  | { t: 'cancel'; id: string }
  | { t: 'done'; id: string; ok: boolean };

export type IncomingState = 'offered' | 'requested' | 'receiving' | 'verifying' | 'done' | 'corrupt' | 'unavailable' | 'failed';
export type OutgoingPeerState = 'sending' | 'sent' | 'verified' | 'rejected' | 'failed';

export interface IncomingView {
  direction: 'in';
  offer: FileOffer;
  from: string;
  state: IncomingState;
  progress: number;
  data?: Uint8Array;
  error?: string;
}
export interface OutgoingView {
  direction: 'out';
  offer: FileOffer;
  peers: Record<string, { state: OutgoingPeerState; progress: number }>;
}
export type TransferView = IncomingView | OutgoingView;

export interface FileTransfersOptions {
  hash(data: Uint8Array): Promise<string>;
  onChange(): void;
  chunkBytes?: number;
}

export class FileTransfers {
  private readonly channels = new Map<string, DataChannelLike>();
  private readonly outgoing = new Map<string, { view: OutgoingView; source: ByteSource; cancelled: Set<string> }>();
  private readonly incoming = new Map<string, { view: IncomingView; re: Reassembler | null }>();

  constructor(private readonly opts: FileTransfersOptions) {}

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
    this.outgoing.set(offer.id, { view: { direction: 'out', offer, peers: {} }, source, cancelled: new Set() });
    this.opts.onChange();
  }

  /** A decrypted offer from `from` (a peer device key). */
  offered(offer: FileOffer, from: string): void {
    if (this.outgoing.has(offer.id) || this.incoming.has(offer.id)) return;
    this.incoming.set(offer.id, { view: { direction: 'in', offer, from, state: 'offered', progress: 0 }, re: null });
    this.opts.onChange();
  }

  /** Ask the sender for the bytes. Returns false while its channel is not open (retried on attach). */
  request(id: string): boolean {
    const inc = this.incoming.get(id);
    if (!inc || !['offered', 'requested', 'unavailable', 'failed', 'corrupt'].includes(inc.view.state)) return false;
    const ch = this.channels.get(inc.view.from);
    inc.view = { ...inc.view, state: 'requested', progress: 0, error: undefined };
    inc.re = null;
    this.opts.onChange();
    if (!ch || ch.readyState !== 'open') return false;
    this.sendControl(ch, { t: 'want', id });
    return true;
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
      if (inc.view.from === peer && inc.view.state === 'receiving') {
        inc.view = { ...inc.view, state: 'requested', error: 'connection lost, will retry' };
        inc.re = null;
      }
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
      inc.re = new Reassembler(inc.view.offer, this.opts.chunkBytes);
      inc.view = { ...inc.view, state: 'receiving' };
    }
    if (inc.view.state !== 'receiving' || !inc.re) return;
    if (!inc.re.accept(chunk.index, chunk.data)) return;
    inc.view = { ...inc.view, progress: inc.re.progress };
    if (inc.re.complete) void this.verify(peer, chunk.id);
    this.opts.onChange();
  }

  private async verify(peer: string, id: string): Promise<void> {
    const inc = this.incoming.get(id);
    if (!inc?.re) return;
    const re = inc.re;
    inc.view = { ...inc.view, state: 'verifying' };
    this.opts.onChange();
    const result = await re.finish(this.opts.hash);
    inc.re = null;
    inc.view = result.ok
      ? { ...inc.view, state: 'done', progress: 1, data: result.data }
      : { ...inc.view, state: 'corrupt', error: 'the file does not match its announced SHA-256' };
    const ch = this.channels.get(peer);
    if (ch) this.sendControl(ch, { t: 'done', id, ok: result.ok });
    this.opts.onChange();
  }

  private handleControl(peer: string, msg: Control): void {
    if (msg.t === 'want') {
      const out = this.outgoing.get(msg.id);
      const ch = this.channels.get(peer);
      if (!ch) return;
      if (!out) {
        this.sendControl(ch, { t: 'gone', id: msg.id });
        return;
      }
      if (out.view.peers[peer]?.state === 'sending') return;
      out.cancelled.delete(peer);
      this.setPeer(out.view, peer, { state: 'sending', progress: 0 });
      const size = out.source.size;
      sendChunks(
        ch,
        msg.id,
        out.source,
        (sent) => this.setPeer(out.view, peer, { state: 'sending', progress: size === 0 ? 1 : sent / size }),
        () => out.cancelled.has(peer),
        this.opts.chunkBytes,
      ).then(
        () => this.setPeer(out.view, peer, { state: 'sent', progress: 1 }),
        (err: unknown) => this.setPeer(out.view, peer, { state: err instanceof TransferCancelled ? 'failed' : 'failed', progress: 0 }),
      );
      return;
    }
    if (msg.t === 'cancel') {
      this.outgoing.get(msg.id)?.cancelled.add(peer);
      return;
    }
    if (msg.t === 'done') {
      const out = this.outgoing.get(msg.id);
      if (out) this.setPeer(out.view, peer, { state: msg.ok ? 'verified' : 'rejected', progress: 1 });
      return;
    }
    if (msg.t === 'gone') {
      const inc = this.incoming.get(msg.id);
      if (inc && inc.view.from === peer) {
        inc.view = { ...inc.view, state: 'unavailable', error: 'the sender no longer has this file' };
        this.opts.onChange();
      }
    }
  }

  private setPeer(view: OutgoingView, peer: string, p: { state: OutgoingPeerState; progress: number }): void {
    const out = this.outgoing.get(view.offer.id);
    if (!out) return;
    out.view = { ...out.view, peers: { ...out.view.peers, [peer]: p } };
    this.opts.onChange();
  }

  private sendControl(ch: DataChannelLike, msg: Control): void {
    if (ch.readyState === 'open') ch.send(JSON.stringify(msg));
  }
}
