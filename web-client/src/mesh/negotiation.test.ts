import { describe, expect, it } from 'vitest';
import {
  deviceKey,
  isPolite,
  PerfectNegotiator,
  type IceCandidateLike,
  type NegotiablePeerConnection,
  type NegotiationMessage,
  type SessionDescriptionLike,
} from './negotiation';
import { IncarnationTracker } from './incarnation';
import { encodingFor, gridShape } from './encoding';

/**
 * A connection that follows the JSEP signaling state machine (RFC 8829 §3.2/§4.1.8) closely enough
 * to exercise negotiation: offers carry a generation counter so we can check both ends agree.
 * setRemoteDescription(offer) in have-local-offer throws, like engines without implicit rollback.
 */
class FakePeerConnection implements NegotiablePeerConnection {
  signalingState: 'stable' | 'have-local-offer' | 'have-remote-offer' | 'closed' = 'stable';
  localDescription: SessionDescriptionLike | null = null;
  remoteDescription: SessionDescriptionLike | null = null;
  candidates: Array<IceCandidateLike | null> = [];
  /** sdp of the last offer/answer pair applied on this side */
  currentOffer: string | null = null;
  restarts = 0;
  private offers = 0;
  onnegotiationneeded: (() => void) | null = null;
  private pendingNegotiation = false;

  constructor(readonly name: string) {}

  private async tick(): Promise<void> {
    await Promise.resolve(); // real engines answer asynchronously
  }

  async setLocalDescription(desc?: SessionDescriptionLike): Promise<void> {
    await this.tick();
    if (desc?.type === 'rollback') {
      if (this.signalingState !== 'have-local-offer' && this.signalingState !== 'have-remote-offer') throw new Error('InvalidStateError: rollback in ' + this.signalingState);
      this.signalingState = 'stable';
      this.localDescription = null;
      this.pendingNegotiation = true;
      this.fireNegotiationIfNeeded();
      return;
    }
    if (this.signalingState === 'stable') {
      this.localDescription = { type: 'offer', sdp: `${this.name}-offer-${++this.offers}` };
      this.signalingState = 'have-local-offer';
      this.pendingNegotiation = false;
    } else if (this.signalingState === 'have-remote-offer') {
      this.localDescription = { type: 'answer', sdp: `answer-to:${this.remoteDescription?.sdp}` };
      this.currentOffer = this.remoteDescription?.sdp ?? null;
      this.signalingState = 'stable';
      this.fireNegotiationIfNeeded();
    } else {
      throw new Error('InvalidStateError: setLocalDescription in ' + this.signalingState);
    }
  }

  async setRemoteDescription(desc: SessionDescriptionLike): Promise<void> {
    await this.tick();
    if (desc.type === 'offer') {
      if (this.signalingState !== 'stable') throw new Error('InvalidStateError: offer in ' + this.signalingState);
      this.remoteDescription = desc;
      this.signalingState = 'have-remote-offer';
    } else if (desc.type === 'answer') {
      if (this.signalingState !== 'have-local-offer') throw new Error('InvalidStateError: answer in ' + this.signalingState);
      if (desc.sdp !== `answer-to:${this.localDescription?.sdp}`) throw new Error('answer does not match our offer');
      this.remoteDescription = desc;
      this.currentOffer = this.localDescription?.sdp ?? null;
      this.signalingState = 'stable';
      this.fireNegotiationIfNeeded();
    }
  }

  async addIceCandidate(c?: IceCandidateLike | null): Promise<void> {
    await this.tick();
    if (!this.remoteDescription) throw new Error('InvalidStateError: no remote description');
    this.candidates.push(c ?? null);
  }

  restartIce(): void {
    this.restarts++;
    this.needNegotiation();
  }

  /** Like adding a track: negotiation becomes needed. */
  needNegotiation(): void {
    this.pendingNegotiation = true;
    this.fireNegotiationIfNeeded();
  }

  /** Like the spec: queued as a task, and re-checked when it runs (state must still be stable). */
  private fireNegotiationIfNeeded(): void {
    if (!this.pendingNegotiation || this.signalingState !== 'stable') return;
    setTimeout(() => {
      if (this.pendingNegotiation && this.signalingState === 'stable') {
        this.pendingNegotiation = false;
        this.onnegotiationneeded?.();
      }
    }, 0);
  }
}

/** Two negotiators joined by queues that the test drains in any order it likes. */
function pair() {
  const keyA = deviceKey('@a:x', 'D1');
  const keyB = deviceKey('@b:x', 'D2');
  const pcA = new FakePeerConnection('A');
  const pcB = new FakePeerConnection('B');
  const toB: NegotiationMessage[] = [];
  const toA: NegotiationMessage[] = [];
  const log: string[] = [];
  const negA = new PerfectNegotiator(pcA, isPolite(keyA, keyB), (m) => toB.push(m), {
    rollback: () => log.push('A rollback'),
    ignoredOffer: () => log.push('A ignored'),
    error: (e) => log.push('A error ' + String(e)),
  });
  const negB = new PerfectNegotiator(pcB, isPolite(keyB, keyA), (m) => toA.push(m), {
    rollback: () => log.push('B rollback'),
    ignoredOffer: () => log.push('B ignored'),
    error: (e) => log.push('B error ' + String(e)),
  });
  pcA.onnegotiationneeded = () => void negA.negotiationNeeded();
  pcB.onnegotiationneeded = () => void negB.negotiationNeeded();
  const settle = async () => {
    for (let i = 0; i < 3; i++) await new Promise((r) => setTimeout(r, 0));
  };
  /** Deliver everything in flight until both queues are empty and nothing new appears. */
  const drain = async () => {
    for (let round = 0; round < 50; round++) {
      await settle();
      if (!toA.length && !toB.length) return;
      const forB = toB.splice(0);
      const forA = toA.splice(0);
      await Promise.all([...forB.map((m) => negB.receive(m)), ...forA.map((m) => negA.receive(m))]);
    }
    throw new Error('negotiation did not converge');
  };
  return { pcA, pcB, negA, negB, toA, toB, log, drain, settle };
}

describe('roles', () => {
  it('gives exactly one polite side, decided by user_id|device_id order', () => {
    const a = deviceKey('@alice:x', 'AAA');
    const b = deviceKey('@alice:x', 'BBB'); // same user, other device
    expect(isPolite(a, b)).toBe(!isPolite(b, a));
    expect(isPolite(a, b)).toBe(true);
    expect(() => isPolite(a, a)).toThrow();
  });
});

describe('perfect negotiation', () => {
  it('negotiates a one-sided offer', async () => {
    const t = pair();
    t.pcB.needNegotiation();
    await t.drain();
    expect(t.pcA.signalingState).toBe('stable');
    expect(t.pcB.signalingState).toBe('stable');
    expect(t.pcA.currentOffer).toBe('B-offer-1');
    expect(t.pcB.currentOffer).toBe('B-offer-1');
    expect(t.log).toEqual([]);
  });

  it('has no glare when two devices meet: the polite side says hello and waits for the offer', async () => {
    const t = pair();
    // Both add tracks at once; only the impolite side (B) offers, A (polite) asks for an offer.
    t.pcA.needNegotiation();
    t.pcB.needNegotiation();
    await t.settle();
    expect(t.pcA.signalingState).toBe('stable');
    expect(t.pcB.signalingState).toBe('have-local-offer');
    expect(t.toB).toEqual([{ hello: true }]);
    await t.drain();
    expect(t.pcA.signalingState).toBe('stable');
    expect(t.pcB.signalingState).toBe('stable');
    expect(t.log).toEqual([]);
    // The polite side's own change is negotiated afterwards, so both end on the same description.
    expect(t.pcA.currentOffer).toBe(t.pcB.currentOffer);
    expect(t.pcA.currentOffer).toMatch(/^A-offer-/);
  });

  it('a hello alone makes the impolite side offer', async () => {
    const t = pair();
    t.pcA.needNegotiation();
    await t.drain();
    expect(t.pcB.currentOffer).toBe('A-offer-1'); // B-offer-1, then A's own change
    expect(t.negA.established && t.negB.established).toBe(true);
  });

  it('resolves glare on a later renegotiation: polite side rolls back, impolite ignores', async () => {
    const t = pair();
    t.pcB.needNegotiation();
    await t.drain();
    t.pcA.needNegotiation();
    t.pcB.needNegotiation();
    await t.settle();
    expect(t.pcA.signalingState).toBe('have-local-offer');
    expect(t.pcB.signalingState).toBe('have-local-offer');
    await t.drain();
    expect(t.pcA.signalingState).toBe('stable');
    expect(t.pcB.signalingState).toBe('stable');
    expect(t.log).toContain('A rollback'); // A is polite ('@a' < '@b')
    expect(t.log).toContain('B ignored');
    expect(t.log.filter((l) => l.includes('error'))).toEqual([]);
    expect(t.pcA.currentOffer).toBe(t.pcB.currentOffer);
    expect(t.pcA.currentOffer).toMatch(/^A-offer-/);
  });

  it('renegotiates on later track changes and applies candidates in order', async () => {
    const t = pair();
    t.pcB.needNegotiation();
    await t.drain();
    t.negB.localCandidate({ candidate: 'candidate:1', sdpMid: '0' });
    t.negB.localCandidate(null);
    t.pcA.needNegotiation(); // e.g. screen share added on A
    await t.drain();
    expect(t.pcA.candidates).toEqual([{ candidate: 'candidate:1', sdpMid: '0' }, null]);
    expect(t.pcA.currentOffer).toBe('A-offer-1');
    expect(t.pcB.currentOffer).toBe('A-offer-1');
  });

  it('drops candidates of an ignored offer without failing', async () => {
    const t = pair();
    t.pcB.needNegotiation();
    await t.drain();
    t.pcA.needNegotiation();
    t.pcB.needNegotiation();
    await t.settle();
    t.negA.localCandidate({ candidate: 'candidate:for-ignored-offer' });
    // B (impolite) will ignore A's offer, then A's candidate cannot apply: no error surfaces.
    await t.drain();
    expect(t.log.filter((l) => l.includes('error'))).toEqual([]);
  });

  it('restarts ICE on failure through a new offer', async () => {
    const t = pair();
    t.pcA.needNegotiation();
    await t.drain();
    t.negB.iceFailed();
    await t.drain();
    expect(t.pcB.restarts).toBe(1);
    // B-offer-1 answered A's hello; the restart is B's next offer.
    expect(t.pcB.currentOffer).toBe('B-offer-2');
    expect(t.pcA.currentOffer).toBe('B-offer-2');
  });

  it('resyncs after lost signaling by rolling back an undelivered offer', async () => {
    const t = pair();
    t.pcB.needNegotiation();
    await t.settle();
    t.toA.splice(0); // the offer is lost with the socket
    expect(t.pcB.signalingState).toBe('have-local-offer');
    await t.negB.resync();
    await t.drain();
    expect(t.log).toContain('B rollback');
    expect(t.pcA.signalingState).toBe('stable');
    expect(t.pcB.signalingState).toBe('stable');
    expect(t.pcA.currentOffer).toBe(t.pcB.currentOffer);
  });

  it('ignores a stale answer to a rolled-back offer', async () => {
    const t = pair();
    t.pcB.needNegotiation();
    await t.drain();
    t.pcA.needNegotiation();
    await t.settle();
    const offer = t.toB.splice(0);
    await t.negA.resync(); // A rolls back and makes a new offer
    await t.settle();
    const newOffer = t.toB.splice(0);
    // B answers the old offer first: A may refuse that answer, but must recover with the new one.
    for (const m of offer) await t.negB.receive(m);
    const oldAnswer = t.toA.splice(0);
    for (const m of oldAnswer) await t.negA.receive(m).catch(() => undefined);
    for (const m of newOffer) await t.negB.receive(m);
    await t.drain();
    expect(t.pcA.signalingState).toBe('stable');
    expect(t.pcB.signalingState).toBe('stable');
  });
});

describe('incarnations', () => {
  it('resets on a remote reload once, and drops stale signals both ways', () => {
    const tr = new IncarnationTracker('me1');
    expect(tr.classify('k', 'r1', null)).toBe('accept');
    expect(tr.classify('k', 'r1', 'me1')).toBe('accept');
    expect(tr.classify('k', 'r2', null)).toBe('reset'); // the remote reloaded
    expect(tr.classify('k', 'r1', 'me1')).toBe('stale'); // late signal from the old page
    expect(tr.classify('k', 'r2', 'me0')).toBe('stale'); // addressed to a page of ours that is gone
    expect(tr.classify('k', 'r2', 'me1')).toBe('accept');
    tr.forget('k'); // went offline: the same page may come back after a socket drop
    expect(tr.classify('k', 'r2', null)).toBe('accept');
    expect(tr.classify('k', 'r1', null)).toBe('stale');
  });
});

describe('encodings and grid', () => {
  it('lowers bitrate and resolution as the mesh grows', () => {
    let prev = encodingFor('camera', 1);
    for (let n = 2; n <= 8; n++) {
      const e = encodingFor('camera', n);
      expect(e.maxBitrate).toBeLessThanOrEqual(prev.maxBitrate);
      expect(e.scaleResolutionDownBy ?? 1).toBeGreaterThanOrEqual(prev.scaleResolutionDownBy ?? 1);
      prev = e;
    }
    expect(encodingFor('camera', 7).maxBitrate).toBeLessThan(encodingFor('camera', 1).maxBitrate);
  });

  it('fits tiles to the box', () => {
    expect(gridShape(1, 1600, 900)).toEqual({ cols: 1, rows: 1 });
    expect(gridShape(4, 1600, 900)).toEqual({ cols: 2, rows: 2 });
    expect(gridShape(3, 390, 800).cols).toBe(1); // phone portrait: one column
    const s = gridShape(8, 1600, 900);
    expect(s.cols * s.rows).toBeGreaterThanOrEqual(8);
  });
});
