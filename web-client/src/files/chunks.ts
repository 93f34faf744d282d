/**
 * Files over RTCDataChannel: fixed-size binary chunks with a small header, a sender loop that
 * respects the channel's buffer (bufferedAmountLowThreshold) so large files never flood memory or
 * the SCTP send queue, and a receiver that writes each chunk in place and checks SHA-256 at the end.
 *
 * Frame: byte 0 = FRAME_CHUNK, bytes 1..16 = transfer id, bytes 17..20 = chunk index (u32 BE), then data.
 * The channel is reliable and ordered, but the receiver does not rely on order, only on indices.
 */

export const CHUNK_BYTES = 16 * 1024;
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

/** Receives the chunks of one offered file into a buffer of the announced size. */
export class Reassembler {
  private readonly buffer: Uint8Array;
  private readonly have: Uint8Array;
  private received = 0;
  private bytes = 0;
  readonly total: number;

  constructor(
    readonly offer: FileOffer,
    private readonly chunkBytes = CHUNK_BYTES,
  ) {
    if (!Number.isSafeInteger(offer.size) || offer.size < 0) throw new Error('bad file size');
    this.buffer = new Uint8Array(offer.size);
    this.total = chunkCount(offer.size, chunkBytes);
    this.have = new Uint8Array(this.total);
  }

  /** Returns false for a chunk that is out of range, the wrong length, or a duplicate. */
  accept(index: number, data: Uint8Array): boolean {
    if (!Number.isInteger(index) || index < 0 || index >= this.total || this.have[index]) return false;
    const start = index * this.chunkBytes;
    const expected = Math.min(this.chunkBytes, this.offer.size - start);
    if (data.length !== expected) return false;
    this.buffer.set(data, start);
    this.have[index] = 1;
    this.received++;
    this.bytes += data.length;
    return true;
  }

  get receivedBytes(): number {
    return this.bytes;
  }
  get complete(): boolean {
    return this.received === this.total;
  }
  get progress(): number {
    return this.offer.size === 0 ? 1 : this.bytes / this.offer.size;
  }

  /** Verify the whole file; the bytes are returned only when the hash matches the offer. */
  async finish(hash: (data: Uint8Array) => Promise<string>): Promise<{ ok: true; data: Uint8Array } | { ok: false; actual: string }> {
    if (!this.complete) throw new Error('transfer incomplete');
    const actual = await hash(this.buffer);
    return actual === this.offer.sha256.toLowerCase() ? { ok: true, data: this.buffer } : { ok: false, actual };
  }
}

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
): Promise<void> {
  ch.bufferedAmountLowThreshold = LOW_WATER;
  const total = chunkCount(source.size, chunkBytes);
  // Read ahead in larger slices: one Blob read per 64 chunks keeps file reads off the hot path.
  const SLICE = chunkBytes * 64;
  let slice: Uint8Array = new Uint8Array(0);
  let sliceStart = 0;
  for (let index = 0; index < total; index++) {
    if (isCancelled()) throw new TransferCancelled('cancelled');
    if (ch.readyState !== 'open') throw new TransferCancelled('channel closed');
    const start = index * chunkBytes;
    const end = Math.min(source.size, start + chunkBytes);
    if (end > sliceStart + slice.length || start < sliceStart) {
      sliceStart = start;
      slice = await source.read(start, Math.min(source.size, start + SLICE));
    }
    if (ch.bufferedAmount > HIGH_WATER) await waitForDrain(ch);
    ch.send(encodeChunk(id, index, slice.subarray(start - sliceStart, end - sliceStart)));
    onProgress(end);
  }
}
