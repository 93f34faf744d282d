/**
 * Files over RTCDataChannel: fixed-size binary chunks with a small header, a sender loop that
 * respects the channel's buffer (bufferedAmountLowThreshold) and the receiver's window (CreditGate)
 * so files of any size never flood memory or the SCTP send queue, and a receiver that hashes each
 * chunk as it comes and appends it to a sink (OPFS), checking SHA-256 before keeping the file.
 *
 * Frame: byte 0 = FRAME_CHUNK, bytes 1..16 = transfer id, bytes 17..20 = chunk index (u32 BE), then data.
 * The channel is reliable and ordered and the sender sends in order: the receiver insists on it, which
 * is what lets it hash incrementally and append instead of holding the whole file.
 */

/** 64 KiB: well under the 256 KiB messages Chromium and Firefox take, and few enough messages per MB to go fast. */
export const CHUNK_BYTES = 64 * 1024;
export const FRAME_CHUNK = 1;
const HEADER = 1 + 16 + 4;
/** Pause sending above this many queued bytes; resume when the channel drains to the low threshold. */
export const HIGH_WATER = 1024 * 1024;
export const LOW_WATER = 256 * 1024;

export interface FileOffer {
  /** 32 hex characters (16 random bytes). */
  id: string;
  name: string;
  size: number;
  mime: string;
  /** Lowercase hex SHA-256 of the whole file. */
  sha256: string;
}

export function chunkCount(size: number, chunkBytes = CHUNK_BYTES): number {
  return Math.ceil(size / chunkBytes);
}

export function idToBytes(id: string): Uint8Array {
  if (!/^[0-9a-f]{32}$/.test(id)) throw new Error('bad transfer id');
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(id.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export function bytesToId(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

export function encodeChunk(id: string, index: number, data: Uint8Array): Uint8Array {
  const frame = new Uint8Array(HEADER + data.length);
  frame[0] = FRAME_CHUNK;
  frame.set(idToBytes(id), 1);
  new DataView(frame.buffer).setUint32(17, index);
  frame.set(data, HEADER);
  return frame;
}

export function decodeChunk(frame: ArrayBuffer | Uint8Array): { id: string; index: number; data: Uint8Array } {
  const b = frame instanceof Uint8Array ? frame : new Uint8Array(frame);
  if (b.length < HEADER || b[0] !== FRAME_CHUNK) throw new Error('not a chunk frame');
  const index = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(17);
  return { id: bytesToId(b.subarray(1, 17)), index, data: b.subarray(HEADER) };
}

/** An incremental SHA-256 (hash-wasm in the app, see hash.ts). */
export interface Hasher {
  update(data: Uint8Array): void;
  /** Lowercase hex. */
  digest(): string;
}

/** Where received bytes go, appended in order: the Origin Private File System in the browser. */
export interface FileSink {
  write(data: Uint8Array): Promise<void>;
  /** Keep the file; returns it (disk-backed in the browser). */
  commit(): Promise<Blob>;
  /** Throw the bytes away. */
  discard(): Promise<void>;
}

export interface FileStore {
  create(id: string): Promise<FileSink>;
  /** The largest file this store takes (memory, where the browser cannot write files to disk); absent: what the disk holds. */
  maxBytes?: number;
}

/**
 * Receives one offered file: chunks must come in order (the channel is ordered and the sender
 * sends in order), each is hashed and appended to the sink as it arrives, so memory holds only
 * what the sink has not written yet (bounded by the sender's window, see CreditGate).
 */
export class IncomingFile {
  private next = 0;
  private bytes = 0;
  private written = 0;
  private writing: Promise<void> = Promise.resolve();
  private failed: unknown = null;
  /** Chunks are gathered into batches (one write per MiB, not per chunk: each write is an IPC round trip). */
  private batch: Uint8Array | null = null;
  private batchFill = 0;
  /** Batch buffers whose write finished, for reuse (no garbage per MiB received). */
  private readonly spare: Uint8Array[] = [];
  readonly total: number;

  constructor(
    readonly offer: FileOffer,
    private readonly sink: FileSink,
    private readonly hasher: Hasher,
    private readonly chunkBytes = CHUNK_BYTES,
    private readonly onWritten: (bytes: number) => void = () => undefined,
  ) {
    if (!Number.isSafeInteger(offer.size) || offer.size < 0) throw new Error('bad file size');
    this.total = chunkCount(offer.size, chunkBytes);
  }

  /** 'duplicate' for a chunk already taken; 'bad' for one out of order, out of range or of the wrong length. */
  accept(index: number, data: Uint8Array): 'ok' | 'duplicate' | 'bad' {
    if (!Number.isInteger(index) || index < 0 || index >= this.total) return 'bad';
    if (index < this.next) return 'duplicate';
    if (index > this.next) return 'bad';
    const expected = Math.min(this.chunkBytes, this.offer.size - index * this.chunkBytes);
    if (data.length !== expected) return 'bad';
    this.hasher.update(data);
    this.next++;
    this.bytes += data.length;
    let off = 0;
    while (off < data.length) {
      this.batch ??= this.spare.pop() ?? new Uint8Array(WRITE_BATCH);
      const n = Math.min(WRITE_BATCH - this.batchFill, data.length - off);
      this.batch.set(data.subarray(off, off + n), this.batchFill);
      this.batchFill += n;
      off += n;
      if (this.batchFill === WRITE_BATCH) this.flush();
    }
    if (this.complete) this.flush();
    return 'ok';
  }

  private flush(): void {
    const buf = this.batch;
    const len = this.batchFill;
    if (!buf || len === 0) return;
    this.batch = null;
    this.batchFill = 0;
    this.writing = this.writing.then(async () => {
      if (this.failed) return;
      try {
        await this.sink.write(buf.subarray(0, len));
        this.written += len;
        this.onWritten(this.written);
      } catch (e) {
        this.failed = e;
      } finally {
        if (this.spare.length < 4) this.spare.push(buf);
      }
    });
  }

  get receivedBytes(): number {
    return this.bytes;
  }
  get writtenBytes(): number {
    return this.written;
  }
  get complete(): boolean {
    return this.next === this.total;
  }
  get progress(): number {
    return this.offer.size === 0 ? 1 : this.bytes / this.offer.size;
  }

  /** After the last chunk: the file is kept only if its hash matches the offer. */
  async finish(): Promise<{ ok: true; blob: Blob } | { ok: false; actual: string }> {
    if (!this.complete) throw new Error('transfer incomplete');
    await this.writing;
    if (this.failed) throw this.failed;
    const actual = this.hasher.digest();
    if (actual !== this.offer.sha256.toLowerCase()) {
      await this.sink.discard();
      return { ok: false, actual };
    }
    return { ok: true, blob: await this.sink.commit() };
  }

  async abort(): Promise<void> {
    this.failed ??= new TransferCancelled('cancelled');
    await this.writing;
    await this.sink.discard().catch(() => undefined);
  }
}

/**
 * The sender's window per receiver: at most `window` bytes sent and not yet written by the
 * receiver (it acknowledges what its sink wrote). The channel's own buffer limit keeps the send
 * queue small; this keeps the receiver's memory small when its disk is slower than the link.
 */
export class CreditGate {
  private acked = 0;
  private waiter: { need: number; resolve(): void; reject(e: unknown): void } | null = null;
  private error: unknown = null;

  constructor(readonly window = FLOW_WINDOW) {}

  ack(bytes: number): void {
    if (bytes > this.acked) this.acked = bytes;
    if (this.waiter && this.waiter.need - this.acked <= this.window) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve();
    }
  }

  /** Resolves once `sentBytes` are within the window. */
  reserve(sentBytes: number): Promise<void> {
    if (this.error) return Promise.reject(this.error);
    if (sentBytes - this.acked <= this.window) return Promise.resolve();
    return new Promise((resolve, reject) => (this.waiter = { need: sentBytes, resolve, reject }));
  }

  abort(err: unknown): void {
    this.error = err;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(err);
  }
}

/** The receiver appends to its sink in pieces of this size. */
export const WRITE_BATCH = 1024 * 1024;
/** Bytes a sender may have in flight to one receiver beyond what that receiver has written: two
 * acknowledgement intervals, the least that keeps the channel busy; more only grows the receiving
 * renderer (4 MiB took it to the edge of the 64 MB the 200 MB test allows). */
export const FLOW_WINDOW = 2 * 1024 * 1024;
/** The receiver acknowledges after every this many bytes written. */
export const ACK_EVERY = 1024 * 1024;

/** The part of RTCDataChannel the sender needs. */
export interface DataChannelLike {
  readonly readyState: string;
  readonly bufferedAmount: number;
  bufferedAmountLowThreshold: number;
  send(data: string | Uint8Array): void;
  addEventListener(type: 'bufferedamountlow' | 'close', fn: () => void): void;
  removeEventListener(type: 'bufferedamountlow' | 'close', fn: () => void): void;
}

/** A readable source: File/Blob in the browser, a Uint8Array in tests. */
export interface ByteSource {
  readonly size: number;
  read(start: number, end: number): Promise<Uint8Array>;
  /**
   * The bytes from `start` on, in pieces; each piece is valid only until the next is asked for
   * (the browser's reads one buffer over and over, so a 2 GB file makes no garbage to collect).
   */
  pieces?(start: number): AsyncIterable<Uint8Array>;
}

/** Pieces of `source` from `start` on: its own reader where it has one, else slices of `sliceBytes`. */
export async function* piecesOf(source: ByteSource, start = 0, sliceBytes = 1024 * 1024): AsyncIterable<Uint8Array> {
  if (source.pieces) {
    yield* source.pieces(start);
    return;
  }
  for (let at = start; at < source.size; at += sliceBytes) yield await source.read(at, Math.min(source.size, at + sliceBytes));
}

export function bytesSource(data: Uint8Array): ByteSource {
  return { size: data.length, read: async (s, e) => data.subarray(s, e) };
}

export class TransferCancelled extends Error {
  constructor(why: string) {
    super(why);
    this.name = 'TransferCancelled';
  }
}

function waitForDrain(ch: DataChannelLike): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = () => {
      ch.removeEventListener('bufferedamountlow', done);
      ch.removeEventListener('close', closed);
      resolve();
    };
    const closed = () => {
      ch.removeEventListener('bufferedamountlow', done);
      ch.removeEventListener('close', closed);
      reject(new TransferCancelled('channel closed'));
    };
    ch.addEventListener('bufferedamountlow', done);
    ch.addEventListener('close', closed);
  });
}

/** Stream `source` as chunks of transfer `id`, waiting whenever the channel's buffer is full. */
export async function sendChunks(
  ch: DataChannelLike,
  id: string,
  source: ByteSource,
  onProgress: (sentBytes: number) => void,
  isCancelled: () => boolean = () => false,
  chunkBytes = CHUNK_BYTES,
  gate?: CreditGate,
): Promise<void> {
  ch.bufferedAmountLowThreshold = LOW_WATER;
  // One frame buffer for the whole file: send() copies what it is given, so the buffer is free
  // again at once, and sending makes no garbage however large the file.
  const frame = new Uint8Array(HEADER + chunkBytes);
  frame[0] = FRAME_CHUNK;
  frame.set(idToBytes(id), 1);
  const header = new DataView(frame.buffer);
  let index = 0;
  let fill = 0;
  let sent = 0;
  const emit = async () => {
    if (isCancelled()) throw new TransferCancelled('cancelled');
    if (ch.readyState !== 'open') throw new TransferCancelled('channel closed');
    if (gate) await gate.reserve(sent + fill);
    if (isCancelled()) throw new TransferCancelled('cancelled');
    if (ch.bufferedAmount > HIGH_WATER) await waitForDrain(ch);
    // Checked again after every wait: a transfer cancelled (or replaced by a new request) while
    // this one waited must not put another chunk on the channel ahead of the new one's.
    if (isCancelled()) throw new TransferCancelled('cancelled');
    if (ch.readyState !== 'open') throw new TransferCancelled('channel closed');
    header.setUint32(17, index++);
    ch.send(frame.subarray(0, HEADER + fill));
    sent += fill;
    fill = 0;
    onProgress(sent);
  };
  for await (const piece of piecesOf(source)) {
    let off = 0;
    while (off < piece.length) {
      const n = Math.min(chunkBytes - fill, piece.length - off);
      frame.set(piece.subarray(off, off + n), HEADER + fill);
      fill += n;
      off += n;
      if (fill === chunkBytes) await emit();
    }
  }
  if (fill > 0) await emit();
}
