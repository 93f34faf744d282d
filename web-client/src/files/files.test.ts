import { describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import {
  bytesSource,
  chunkCount,
  CHUNK_BYTES,
  decodeChunk,
  encodeChunk,
  HIGH_WATER,
  Reassembler,
  sendChunks,
  type DataChannelLike,
  type FileOffer,
} from './chunks';
import { FileTransfers } from './transfers';
import { sha256Hex } from '../crypto/e2ee';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const newId = () => randomBytes(16).toString('hex');

/**
 * One end of a channel pair. Sent bytes sit in `bufferedAmount` until a timer delivers a batch to
 * the other end, so a sender that ignores backpressure would grow the buffer without bound.
 */
class FakeChannel implements DataChannelLike {
  readyState = 'open';
  bufferedAmount = 0;
  bufferedAmountLowThreshold = 0;
  maxBuffered = 0;
  peer: FakeChannel | null = null;
  onmessage: (data: string | Uint8Array) => void = () => {};
  private queue: Array<string | Uint8Array> = [];
  private listeners: Record<string, Set<() => void>> = { bufferedamountlow: new Set(), close: new Set() };
  private scheduled = false;

  send(data: string | Uint8Array): void {
    if (this.readyState !== 'open') throw new Error('InvalidStateError');
    const copy = typeof data === 'string' ? data : data.slice();
    this.queue.push(copy);
    this.bufferedAmount += typeof data === 'string' ? data.length : data.length;
    this.maxBuffered = Math.max(this.maxBuffered, this.bufferedAmount);
    if (!this.scheduled) {
      this.scheduled = true;
      setTimeout(() => this.flush(), 0);
    }
  }

  private flush(): void {
    this.scheduled = false;
    // Deliver up to 40 frames per tick, like a link of finite speed.
    for (const item of this.queue.splice(0, 40)) {
      const before = this.bufferedAmount;
      this.bufferedAmount -= typeof item === 'string' ? item.length : item.length;
      this.peer?.onmessage(item);
      if (before > this.bufferedAmountLowThreshold && this.bufferedAmount <= this.bufferedAmountLowThreshold) {
        for (const l of [...this.listeners.bufferedamountlow!]) l();
      }
    }
    if (this.queue.length && !this.scheduled) {
      this.scheduled = true;
      setTimeout(() => this.flush(), 0);
    }
  }

  close(): void {
    this.readyState = 'closed';
    for (const l of [...this.listeners.close!]) l();
  }

  addEventListener(type: 'bufferedamountlow' | 'close', fn: () => void): void {
    this.listeners[type]!.add(fn);
  }
  removeEventListener(type: 'bufferedamountlow' | 'close', fn: () => void): void {
    this.listeners[type]!.delete(fn);
  }
}

function channelPair(): [FakeChannel, FakeChannel] {
  const a = new FakeChannel();
  const b = new FakeChannel();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

function until(pred: () => boolean, ms = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const check = () => (pred() ? resolve() : Date.now() - started > ms ? reject(new Error('timeout')) : setTimeout(check, 1));
    check();
  });
}

describe('chunk frames', () => {
  it('round-trips header and data', () => {
    const id = newId();
    const data = randomBytes(100);
    const frame = encodeChunk(id, 70000, data);
    const back = decodeChunk(frame.buffer as ArrayBuffer);
    expect(back.id).toBe(id);
    expect(back.index).toBe(70000);
    expect(Buffer.from(back.data).equals(data)).toBe(true);
    expect(() => decodeChunk(new Uint8Array([9, 9, 9]))).toThrow();
  });

  it('counts chunks for edge sizes', () => {
    expect(chunkCount(0)).toBe(0);
    expect(chunkCount(1)).toBe(1);
    expect(chunkCount(CHUNK_BYTES)).toBe(1);
    expect(chunkCount(CHUNK_BYTES + 1)).toBe(2);
  });
});

describe('reassembly', () => {
  it('accepts chunks in any order, refuses duplicates, wrong sizes and out-of-range indices, and checks the hash', async () => {
    const data = new Uint8Array(randomBytes(CHUNK_BYTES * 3 + 123));
    const offer: FileOffer = { id: newId(), name: 'x.bin', size: data.length, mime: 'application/octet-stream', sha256: sha(data) };
    const re = new Reassembler(offer);
    const chunk = (i: number) => data.subarray(i * CHUNK_BYTES, Math.min(data.length, (i + 1) * CHUNK_BYTES));
    expect(re.accept(3, chunk(3))).toBe(true);
    expect(re.accept(3, chunk(3))).toBe(false);
    expect(re.accept(4, chunk(3))).toBe(false);
    expect(re.accept(1, chunk(0).subarray(1))).toBe(false);
    expect(re.accept(0, chunk(0))).toBe(true);
    expect(re.accept(2, chunk(2))).toBe(true);
    expect(re.complete).toBe(false);
    await expect(re.finish(sha256Hex)).rejects.toThrow();
    expect(re.accept(1, chunk(1))).toBe(true);
    const res = await re.finish(sha256Hex);
    expect(res.ok).toBe(true);

    const bad = new Reassembler({ ...offer, sha256: '00'.repeat(32) });
    for (let i = 0; i < 4; i++) bad.accept(i, chunk(i));
    expect(await bad.finish(sha256Hex)).toMatchObject({ ok: false, actual: offer.sha256 });
  });

  it('handles an empty file', async () => {
    const re = new Reassembler({ id: newId(), name: 'e', size: 0, mime: '', sha256: sha(new Uint8Array()) });
    expect(re.complete).toBe(true);
    expect((await re.finish(sha256Hex)).ok).toBe(true);
  });
});

describe('sending with backpressure', () => {
  it('never lets the channel buffer grow far beyond the high-water mark', async () => {
    const [a, b] = channelPair();
    const data = new Uint8Array(randomBytes(4 * 1024 * 1024 + 7));
    const id = newId();
    const re = new Reassembler({ id, name: 'big', size: data.length, mime: '', sha256: sha(data) });
    b.onmessage = (frame) => {
      const c = decodeChunk(frame as Uint8Array);
      re.accept(c.index, c.data);
    };
    let last = 0;
    await sendChunks(a, id, bytesSource(data), (n) => (last = n));
    await until(() => re.complete);
    expect(last).toBe(data.length);
    expect(a.maxBuffered).toBeLessThanOrEqual(HIGH_WATER + CHUNK_BYTES + 64);
    expect((await re.finish(sha256Hex)).ok).toBe(true);
  });

  it('stops when the channel closes mid-transfer', async () => {
    const [a] = channelPair();
    const data = new Uint8Array(3 * 1024 * 1024);
    const p = sendChunks(a, newId(), bytesSource(data), () => {});
    setTimeout(() => a.close(), 0);
    await expect(p).rejects.toThrow(/closed/);
  });
});

describe('FileTransfers (offer → want → chunks → done)', () => {
  it('moves a several-MB file between two peers with progress on both sides and a verified hash', async () => {
    const [chA, chB] = channelPair();
    let changes = 0;
    const sender = new FileTransfers({ hash: sha256Hex, onChange: () => changes++ });
    const receiver = new FileTransfers({ hash: sha256Hex, onChange: () => changes++ });
    chA.onmessage = (d) => sender.handleMessage('B', d);
    chB.onmessage = (d) => receiver.handleMessage('A', d);

    const data = new Uint8Array(randomBytes(3 * 1024 * 1024 + 5));
    const offer: FileOffer = { id: newId(), name: 'clip.bin', size: data.length, mime: 'application/octet-stream', sha256: sha(data) };
    sender.share(offer, bytesSource(data));
    receiver.offered(offer, 'A');
    expect(receiver.request(offer.id)).toBe(false); // no channel yet: waits
    sender.attachChannel('B', chA);
    receiver.attachChannel('A', chB); // the pending request goes out now
    expect(sender.openPeers()).toEqual(['B']);

    const progress: number[] = [];
    await until(() => {
      const v = receiver.view(offer.id);
      if (v?.direction === 'in') progress.push(v.progress);
      return v?.direction === 'in' && (v.state === 'done' || v.state === 'corrupt');
    });
    const inView = receiver.view(offer.id);
    expect(inView).toMatchObject({ state: 'done', progress: 1 });
    expect(sha((inView as { data: Uint8Array }).data)).toBe(offer.sha256);
    await until(() => (sender.view(offer.id) as { peers: Record<string, { state: string }> }).peers['B']?.state === 'verified');
    expect(progress.some((p) => p > 0 && p < 1)).toBe(true);
    expect(changes).toBeGreaterThan(10);
  });

  it('marks a file whose bytes do not match the offer as corrupt, and an unknown file as unavailable', async () => {
    const [chA, chB] = channelPair();
    const sender = new FileTransfers({ hash: sha256Hex, onChange: () => {} });
    const receiver = new FileTransfers({ hash: sha256Hex, onChange: () => {} });
    chA.onmessage = (d) => sender.handleMessage('B', d);
    chB.onmessage = (d) => receiver.handleMessage('A', d);
    sender.attachChannel('B', chA);
    receiver.attachChannel('A', chB);
    const data = new Uint8Array(randomBytes(50_000));
    const offer: FileOffer = { id: newId(), name: 'a', size: data.length, mime: '', sha256: sha(data) };
    sender.share(offer, bytesSource(data.map((x) => x ^ 1)));
    receiver.offered(offer, 'A');
    receiver.request(offer.id);
    await until(() => receiver.view(offer.id)?.direction === 'in' && (receiver.view(offer.id) as { state: string }).state === 'corrupt');

    const ghost: FileOffer = { ...offer, id: newId() };
    receiver.offered(ghost, 'A');
    receiver.request(ghost.id);
    await until(() => (receiver.view(ghost.id) as { state: string }).state === 'unavailable');
  });

  it('ignores chunks from a peer that is not the offer sender', () => {
    const receiver = new FileTransfers({ hash: sha256Hex, onChange: () => {} });
    const data = new Uint8Array(10);
    const offer: FileOffer = { id: newId(), name: 'a', size: 10, mime: '', sha256: sha(data) };
    receiver.offered(offer, 'A');
    receiver.request(offer.id);
    receiver.handleMessage('MALLORY', encodeChunk(offer.id, 0, data));
    expect(receiver.view(offer.id)).toMatchObject({ state: 'requested', progress: 0 });
  });
});
