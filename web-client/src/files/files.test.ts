import { describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import {
  bytesSource,
  chunkCount,
  CHUNK_BYTES,
  decodeChunk,
  encodeChunk,
  CreditGate,
  HIGH_WATER,
  IncomingFile,
  sendChunks,
  type DataChannelLike,
  type FileOffer,
} from './chunks';
import { FileTransfers, type FileTransfersOptions, type IncomingView, type OutgoingView } from './transfers';
import { createSha256, hashSource } from './hash';
import { memoryFileStore } from './memoryStore';
import { RateMeter } from './rate';

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
  sentBytes = 0;
  peer: FakeChannel | null = null;
  onmessage: (data: string | Uint8Array) => void = () => {};
  private queue: Array<string | Uint8Array> = [];
  private listeners: Record<string, Set<() => void>> = { bufferedamountlow: new Set(), close: new Set() };
  private scheduled = false;

  send(data: string | Uint8Array): void {
    if (this.readyState !== 'open') throw new Error('InvalidStateError');
    const copy = typeof data === 'string' ? data : data.slice();
    this.queue.push(copy);
    this.sentBytes += typeof data === 'string' ? 0 : data.length;
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

const blobBytes = async (b: Blob) => new Uint8Array(await b.arrayBuffer());

describe('receiving a file', () => {
  it('takes chunks in order, hashing and writing as it goes, ignores duplicates, and keeps the file only if the hash matches', async () => {
    const data = new Uint8Array(randomBytes(CHUNK_BYTES * 3 + 100));
    const offer: FileOffer = { id: newId(), name: 'x', size: data.length, mime: '', sha256: sha(data) };
    const store = memoryFileStore();
    const f = new IncomingFile(offer, await store.create(offer.id), await createSha256());
    const chunk = (i: number) => data.subarray(i * CHUNK_BYTES, Math.min(data.length, (i + 1) * CHUNK_BYTES));
    expect(f.accept(0, chunk(0))).toBe('ok');
    expect(f.accept(0, chunk(0))).toBe('duplicate');
    expect(f.accept(2, chunk(2))).toBe('bad'); // out of order
    expect(f.accept(1, chunk(1).subarray(1))).toBe('bad'); // wrong length
    expect(f.accept(9, chunk(1))).toBe('bad'); // out of range
    for (const i of [1, 2, 3]) expect(f.accept(i, chunk(i))).toBe('ok');
    expect(f.complete).toBe(true);
    const r = await f.finish();
    expect(r.ok).toBe(true);
    expect(sha(await blobBytes((r as { blob: Blob }).blob))).toBe(offer.sha256);
    expect(store.live()).toBe(0);
  });

  it('discards a file whose hash does not match, and an empty file verifies', async () => {
    const data = new Uint8Array(randomBytes(1000));
    const store = memoryFileStore();
    const bad = new IncomingFile({ id: newId(), name: 'x', size: 1000, mime: '', sha256: '00'.repeat(32) }, await store.create('b'), await createSha256());
    bad.accept(0, data);
    expect((await bad.finish()).ok).toBe(false);
    const empty = new IncomingFile({ id: newId(), name: 'e', size: 0, mime: '', sha256: sha(new Uint8Array()) }, await store.create('e'), await createSha256());
    expect(empty.complete).toBe(true);
    expect((await empty.finish()).ok).toBe(true);
    expect(store.live()).toBe(0);
  });

  it('hashes a source slice by slice to the same SHA-256 as the whole', async () => {
    const data = new Uint8Array(randomBytes(5 * 1024 * 1024 + 3));
    expect(await hashSource(bytesSource(data), createSha256, 1024 * 1024)).toBe(sha(data));
    expect(await hashSource(bytesSource(new Uint8Array()))).toBe(sha(new Uint8Array()));
  });
});

describe('the receiver window', () => {
  it('holds the sender until the receiver has written, and lets an abort through', async () => {
    const gate = new CreditGate(100);
    await gate.reserve(100);
    let passed = false;
    const p = gate.reserve(250).then(() => (passed = true));
    await Promise.resolve();
    expect(passed).toBe(false);
    gate.ack(100);
    await Promise.resolve();
    expect(passed).toBe(false);
    gate.ack(150);
    await p;
    expect(passed).toBe(true);
    const q = gate.reserve(1000);
    gate.abort(new Error('stopped'));
    await expect(q).rejects.toThrow('stopped');
    await expect(gate.reserve(0)).rejects.toThrow('stopped');
  });
});

describe('speed and time left', () => {
  it('comes from the last seconds of samples', () => {
    const r = new RateMeter(10_000_000);
    expect(r.sample(0, 0)).toEqual({ bytesPerSecond: null, secondsLeft: null });
    expect(r.sample(100, 100_000).bytesPerSecond).toBeNull(); // too soon to tell
    const v = r.sample(1000, 1_000_000);
    expect(v.bytesPerSecond).toBe(1_000_000);
    expect(v.secondsLeft).toBe(9);
    // The speed halves: within the window the estimate follows.
    for (let t = 2000; t <= 6000; t += 1000) r.sample(t, 1_000_000 + ((t - 1000) / 1000) * 500_000);
    expect(r.sample(7000, 4_000_000).bytesPerSecond).toBeCloseTo(500_000, -3);
  });
});

describe('sending with backpressure', () => {
  it('never lets the channel buffer grow far beyond the high-water mark', async () => {
    const [a, b] = channelPair();
    const data = new Uint8Array(randomBytes(4 * 1024 * 1024 + 7));
    const id = newId();
    const re = new IncomingFile({ id, name: 'big', size: data.length, mime: '', sha256: sha(data) }, await memoryFileStore().create(id), await createSha256());
    b.onmessage = (frame) => {
      const c = decodeChunk(frame as Uint8Array);
      re.accept(c.index, c.data);
    };
    let last = 0;
    await sendChunks(a, id, bytesSource(data), (n) => (last = n));
    await until(() => re.complete);
    expect(last).toBe(data.length);
    expect(a.maxBuffered).toBeLessThanOrEqual(HIGH_WATER + CHUNK_BYTES + 64);
    expect((await re.finish()).ok).toBe(true);
  });

  it('sends nothing more once cancelled while waiting for the channel to drain', async () => {
    let low: (() => void) | null = null;
    const sent: number[] = [];
    const ch: DataChannelLike = {
      readyState: 'open',
      bufferedAmount: HIGH_WATER + 1, // full from the start
      bufferedAmountLowThreshold: 0,
      send: (d) => void sent.push((d as Uint8Array).length),
      addEventListener: (type, fn) => void (type === 'bufferedamountlow' && (low = fn)),
      removeEventListener: () => undefined,
    };
    let cancelled = false;
    const p = sendChunks(ch, newId(), bytesSource(new Uint8Array(CHUNK_BYTES * 4)), () => {}, () => cancelled);
    await until(() => low !== null);
    cancelled = true; // the receiver cancelled (or asked again) meanwhile
    (ch as { bufferedAmount: number }).bufferedAmount = 0;
    low!();
    await expect(p).rejects.toThrow(/cancelled/);
    expect(sent).toEqual([]);
  });

  it('stops when the channel closes mid-transfer', async () => {
    const [a] = channelPair();
    const data = new Uint8Array(3 * 1024 * 1024);
    const p = sendChunks(a, newId(), bytesSource(data), () => {});
    setTimeout(() => a.close(), 0);
    await expect(p).rejects.toThrow(/closed/);
  });
});

const opts = (onChange: () => void = () => undefined, more: Partial<FileTransfersOptions> = {}): FileTransfersOptions => ({ createHasher: createSha256, store: memoryFileStore(), onChange, now: () => Date.now(), ...more });
const inView = (t: FileTransfers, id: string) => t.view(id) as IncomingView | undefined;
const outView = (t: FileTransfers, id: string) => t.view(id) as OutgoingView | undefined;

/** A sender and a receiver joined by a channel pair; the receiver's store is returned for checks. */
function pairOfTransfers(more: Partial<FileTransfersOptions> = {}) {
  const [chA, chB] = channelPair();
  const store = memoryFileStore();
  const sender = new FileTransfers(opts(undefined, more));
  const receiver = new FileTransfers(opts(undefined, { store, ...more }));
  chA.onmessage = (d) => sender.handleMessage('B', d);
  chB.onmessage = (d) => receiver.handleMessage('A', d);
  sender.attachChannel('B', chA);
  receiver.attachChannel('A', chB);
  return { sender, receiver, store, chA, chB };
}

const fileOf = (data: Uint8Array, name = 'f.bin'): FileOffer => ({ id: newId(), name, size: data.length, mime: 'application/octet-stream', sha256: sha(data) });

describe('FileTransfers (offer → want → chunks → done)', () => {
  it('moves a several-MB file between two peers with progress on both sides and a verified hash', async () => {
    const [chA, chB] = channelPair();
    let changes = 0;
    const sender = new FileTransfers(opts(() => changes++));
    const receiver = new FileTransfers(opts(() => changes++));
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
    const got = inView(receiver, offer.id)!;
    expect(got).toMatchObject({ state: 'done', progress: 1 });
    expect(sha(await blobBytes(got.blob!))).toBe(offer.sha256);
    await until(() => (sender.view(offer.id) as { peers: Record<string, { state: string }> }).peers['B']?.state === 'verified');
    expect(progress.some((p) => p > 0 && p < 1)).toBe(true);
    expect(changes).toBeGreaterThan(10);
  });

  it('marks a file whose bytes do not match the offer as corrupt, and an unknown file as unavailable', async () => {
    const [chA, chB] = channelPair();
    const sender = new FileTransfers(opts());
    const receiver = new FileTransfers(opts());
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
    const receiver = new FileTransfers(opts());
    const data = new Uint8Array(10);
    const offer: FileOffer = { id: newId(), name: 'a', size: 10, mime: '', sha256: sha(data) };
    receiver.offered(offer, 'A');
    receiver.request(offer.id);
    receiver.handleMessage('MALLORY', encodeChunk(offer.id, 0, data));
    expect(receiver.view(offer.id)).toMatchObject({ state: 'requested', progress: 0 });
  });

  it('the receiver cancels: the sender stops, the partial file is thrown away, and it can be asked for again', async () => {
    const { sender, receiver, store, chA } = pairOfTransfers({ windowBytes: 2 * 1024 * 1024 });
    const data = new Uint8Array(randomBytes(4 * 1024 * 1024));
    const offer = fileOf(data);
    sender.share(offer, bytesSource(data));
    receiver.offered(offer, 'A');
    receiver.request(offer.id);
    await until(() => (inView(receiver, offer.id)?.progress ?? 0) > 0.05);
    receiver.cancel(offer.id);
    expect(inView(receiver, offer.id)?.state).toBe('cancelled');
    await until(() => outView(sender, offer.id)?.peers.B?.state === 'cancelled');
    const sentThen = chA.sentBytes;
    await until(() => store.live() === 0);
    // Nothing more is sent for it (the channel drains what was queued, then stays quiet).
    await new Promise((r) => setTimeout(r, 20));
    expect(chA.sentBytes - sentThen).toBeLessThanOrEqual(HIGH_WATER + CHUNK_BYTES);
    receiver.request(offer.id);
    await until(() => inView(receiver, offer.id)?.state === 'done');
    expect(sha(await blobBytes(inView(receiver, offer.id)!.blob!))).toBe(offer.sha256);
  });

  it('the sender stops sharing: the receiver is told, later requests get "gone"', async () => {
    const { sender, receiver, store } = pairOfTransfers({ windowBytes: 2 * 1024 * 1024 });
    const data = new Uint8Array(randomBytes(4 * 1024 * 1024));
    const offer = fileOf(data);
    sender.share(offer, bytesSource(data));
    receiver.offered(offer, 'A');
    receiver.request(offer.id);
    await until(() => (inView(receiver, offer.id)?.progress ?? 0) > 0.05);
    sender.stopSharing(offer.id);
    await until(() => inView(receiver, offer.id)?.state === 'cancelled');
    expect(inView(receiver, offer.id)?.problem).toBe('sender-stopped');
    await until(() => store.live() === 0);
    receiver.request(offer.id);
    await until(() => inView(receiver, offer.id)?.state === 'unavailable');
  });

  it('several transfers at once, both verified, with speed and time left while under way', async () => {
    const files = [new Uint8Array(randomBytes(3 * 1024 * 1024)), new Uint8Array(randomBytes(2 * 1024 * 1024 + 17))];
    const offers = files.map((d, i) => fileOf(d, `f${i}`));
    let sawBoth = false;
    let sawRate = false;
    // Checked on every change, so an overlap is not missed between two looks.
    // A clock that moves 10 ms per reading: speed is known after a quarter of a second of it.
    let clock = 0;
    const { sender, receiver } = pairOfTransfers({ now: () => (clock += 10) });
    const watch = () => {
      const vs = offers.map((o) => inView(receiver, o.id));
      if (vs.every((v) => v && v.progress > 0 && v.progress < 1)) sawBoth = true;
      if (vs.some((v) => (v?.bytesPerSecond ?? 0) > 0 && v?.secondsLeft !== null)) sawRate = true;
    };
    (receiver as unknown as { opts: FileTransfersOptions }).opts.onChange = watch;
    offers.forEach((o, i) => sender.share(o, bytesSource(files[i]!)));
    for (const o of offers) {
      receiver.offered(o, 'A');
      receiver.request(o.id);
    }
    await until(() => offers.every((o) => inView(receiver, o.id)?.state === 'done'));
    expect(sawBoth).toBe(true);
    expect(sawRate).toBe(true);
    for (const [i, o] of offers.entries()) expect(sha(await blobBytes(inView(receiver, o.id)!.blob!))).toBe(sha(files[i]!));
  });

  it('keeps what the receiver holds unwritten within the window when its disk is slow', async () => {
    let unwritten = 0;
    let peak = 0;
    const slowStore = memoryFileStore();
    const slow: FileTransfersOptions['store'] = {
      create: async (id) => {
        const sink = await slowStore.create(id);
        return {
          write: async (d) => {
            unwritten += d.length;
            peak = Math.max(peak, unwritten);
            await new Promise((r) => setTimeout(r, 1)); // a slow disk
            await sink.write(d);
            unwritten -= d.length;
          },
          commit: sink.commit,
          discard: sink.discard,
        };
      },
    };
    const window = 2 * 1024 * 1024;
    const { sender, receiver } = pairOfTransfers({ windowBytes: window });
    const r2 = new FileTransfers(opts(undefined, { store: slow, windowBytes: window }));
    const [chA, chB] = channelPair();
    chA.onmessage = (d) => sender.handleMessage('C', d);
    chB.onmessage = (d) => r2.handleMessage('A', d);
    sender.attachChannel('C', chA);
    r2.attachChannel('A', chB);
    void receiver;
    const data = new Uint8Array(randomBytes(6 * 1024 * 1024));
    const offer = fileOf(data);
    sender.share(offer, bytesSource(data));
    r2.offered(offer, 'A');
    r2.request(offer.id);
    await until(() => inView(r2, offer.id)?.state === 'done', 30_000);
    // The window plus what the channel had queued when the gate closed, and one ack interval.
    expect(peak).toBeLessThanOrEqual(window + HIGH_WATER + CHUNK_BYTES);
    expect(peak).toBeGreaterThan(0);
  });
});

describe('a store with a size limit (memory, where OPFS cannot be written)', () => {
  it('shows a larger offer as too large at once and never asks the sender for it; one within the limit arrives', async () => {
    const limit = 3 * CHUNK_BYTES;
    const { sender, receiver, chB } = pairOfTransfers({ store: memoryFileStore(limit) });
    const wants: string[] = [];
    const send = chB.send.bind(chB);
    chB.send = (d) => {
      if (typeof d === 'string') wants.push(d);
      send(d);
    };
    expect(receiver.maxBytes).toBe(limit);

    const big = new Uint8Array(randomBytes(limit + 1));
    const bigOffer = fileOf(big, 'big.bin');
    sender.share(bigOffer, bytesSource(big));
    receiver.offered(bigOffer, 'A');
    expect(inView(receiver, bigOffer.id)).toMatchObject({ state: 'failed', problem: 'too-large' });
    expect(receiver.request(bigOffer.id)).toBe(false);
    expect(inView(receiver, bigOffer.id)).toMatchObject({ state: 'failed', problem: 'too-large' });

    const small = new Uint8Array(randomBytes(limit));
    const smallOffer = fileOf(small, 'small.bin');
    sender.share(smallOffer, bytesSource(small));
    receiver.offered(smallOffer, 'A');
    expect(receiver.request(smallOffer.id)).toBe(true);
    await until(() => inView(receiver, smallOffer.id)?.state === 'done');
    expect(wants.filter((w) => w.includes(bigOffer.id))).toEqual([]);
    expect(wants.some((w) => w.includes(smallOffer.id))).toBe(true);
  });

  it('refuses to hold more than its limit, whatever it is fed', async () => {
    const sink = await memoryFileStore(10).create('x');
    await sink.write(new Uint8Array(6));
    await expect(sink.write(new Uint8Array(5))).rejects.toThrow(/more than 10 bytes/);
    expect(memoryFileStore().maxBytes).toBeUndefined();
  });
});
