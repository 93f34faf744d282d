/**
 * The mesh with fake peer connections (testing/fakeRtc.ts) and an in-memory signaling relay that a
 * test can hold, drop or reorder: first contact, glare on renegotiation, ICE restart, a peer
 * leaving mid-negotiation, a reloaded peer, and a signaling outage in the middle of an offer.
 */
import { describe, expect, it } from 'vitest';
import { Mesh, type SignalEnvelope } from './mesh';
import { deviceKey } from './negotiation';
import type { DeviceRef } from '../protocol/types';
import { asStream, cameraStream, FakeRtcWorld, FakeStream, FakeTrack, until, type FakePeerConnection } from '../testing/fakeRtc';

interface Node {
  ref: DeviceRef;
  key: string;
  mesh: Mesh;
  log: string[];
  filesOpen: Set<string>;
}

/** Devices whose signals travel through one relay; `hold` keeps them until `release`. */
class Relay {
  readonly world = new FakeRtcWorld();
  readonly nodes = new Map<string, Node>();
  held: Array<() => void> = [];
  hold = false;
  /** Drop signals instead of delivering them (the socket is down). */
  down = false;
  delivered = 0;

  add(user: string, device: string, sid = `sid-${user}-${device}`): Node {
    const ref = { user_id: user, device_id: device };
    const key = deviceKey(user, device);
    const log: string[] = [];
    const filesOpen = new Set<string>();
    const mesh = new Mesh({
      self: ref,
      sid,
      iceServers: [],
      iceTransportPolicy: 'all',
      createPeerConnection: this.world.create,
      sendSignal: (to, env) => this.route(ref, to, env),
      onChange: () => undefined,
      onFilesChannel: (peer, ch) => (ch ? filesOpen.add(peer) : filesOpen.delete(peer)),
      onFilesMessage: () => undefined,
      log: (m) => log.push(m),
    });
    const node = { ref, key, mesh, log, filesOpen };
    this.nodes.set(key, node);
    return node;
  }

  private route(from: DeviceRef, to: DeviceRef, env: SignalEnvelope): void {
    if (this.down) return;
    // Signals are serialised to JSON on the wire: deliver a copy, as the socket would.
    const copy = JSON.parse(JSON.stringify(env)) as SignalEnvelope;
    const deliver = () => {
      this.delivered++;
      this.nodes.get(deviceKey(to.user_id, to.device_id))?.mesh.handleSignal(from, copy);
    };
    if (this.hold) this.held.push(deliver);
    else setTimeout(deliver, 0);
  }

  release(): void {
    const now = this.held.splice(0);
    for (const d of now) setTimeout(d, 0);
  }

  /** The connection `a` holds to `b`. */
  pc(a: Node, b: Node): FakePeerConnection {
    const link = (a.mesh as unknown as { peers: Map<string, { pc: FakePeerConnection }> }).peers.get(b.key);
    if (!link) throw new Error(`${a.key} has no connection to ${b.key}`);
    return link.pc;
  }

  has(a: Node, b: Node): boolean {
    return (a.mesh as unknown as { peers: Map<string, unknown> }).peers.has(b.key);
  }

  connected(a: Node, b: Node): boolean {
    return this.has(a, b) && this.has(b, a) && this.pc(a, b).connectionState === 'connected' && this.pc(b, a).connectionState === 'connected' && this.pc(a, b).signalingState === 'stable' && this.pc(b, a).signalingState === 'stable';
  }

  /** Both directions negotiated and every track of `a` arrived at `b` and vice versa. */
  async settled(a: Node, b: Node, what: string): Promise<void> {
    await until(() => {
      if (!this.connected(a, b)) return false;
      const sent = (x: Node, y: Node) => this.pc(x, y).senders.filter((s) => s.track).map((s) => s.track!.id).sort().join();
      const got = (x: Node, y: Node) => [...this.pc(y, x).remoteTracks.keys()].sort().join();
      return sent(a, b) === got(a, b) && sent(b, a) === got(b, a);
    }, what);
  }
}

// a < b by key, so `a` is polite.
const users = () => {
  const r = new Relay();
  return { r, a: r.add('@a:x', 'DA'), b: r.add('@b:x', 'DB') };
};

describe('mesh', () => {
  it('first contact: the polite side says hello, the impolite side offers, media and channels flow', async () => {
    const { r, a, b } = users();
    a.mesh.addStream(asStream(cameraStream()), 'camera');
    b.mesh.addStream(asStream(cameraStream()), 'camera');
    a.mesh.ensurePeer(b.ref);
    b.mesh.ensurePeer(a.ref);
    await r.settled(a, b, 'a and b connected with each other’s camera');
    // The polite side never makes a connection's first offer: it answers first (it may offer later,
    // for tracks the answer could not carry).
    const firstOfA = a.log.findIndex((l) => l === `offer to ${b.key}` || l === `answer to ${b.key}`);
    expect(a.log[firstOfA]).toBe(`answer to ${b.key}`);
    expect(b.log).toContain(`hello from ${a.key}`);
    await until(() => a.filesOpen.has(b.key) && b.filesOpen.has(a.key), 'files channels open');
    const view = a.mesh.views()[0]!;
    expect(view.streams.map((s) => s.stream.getTracks().length)).toEqual([2]);
    expect(r.pc(a, b).rollbacks + r.pc(b, a).rollbacks).toBe(0);
  });

  it('glare: both sides add a screen share at the same moment and end stable with both shares', async () => {
    const { r, a, b } = users();
    a.mesh.ensurePeer(b.ref);
    b.mesh.ensurePeer(a.ref);
    await r.settled(a, b, 'connected');
    r.hold = true;
    a.mesh.addStream(asStream(new FakeStream([new FakeTrack('video')])), 'screen');
    b.mesh.addStream(asStream(new FakeStream([new FakeTrack('video')])), 'screen');
    // Both offers are made before either arrives: a real collision.
    await until(() => r.pc(a, b).signalingState === 'have-local-offer' && r.pc(b, a).signalingState === 'have-local-offer', 'two crossing offers');
    r.hold = false;
    r.release();
    await r.settled(a, b, 'both screen shares negotiated after the collision');
    // The polite side rolled back, the impolite side ignored the colliding offer.
    expect(r.pc(a, b).rollbacks).toBeGreaterThanOrEqual(1);
    expect(b.log).toContain(`ignored a colliding offer from ${a.key}`);
    expect(r.pc(a, b).remoteTracks.size).toBe(1);
    expect(r.pc(b, a).remoteTracks.size).toBe(1);
  });

  it('ICE failure restarts ICE with a fresh offer, and gives up after five failures in a row', async () => {
    const { r, a, b } = users();
    a.mesh.ensurePeer(b.ref);
    b.mesh.ensurePeer(a.ref);
    await r.settled(a, b, 'connected');
    const pcA = r.pc(a, b);
    const offersBefore = pcA.offersMade;
    pcA.setIce('failed');
    await until(() => pcA.restarts === 1 && pcA.offersMade > offersBefore && r.connected(a, b), 'restarted and renegotiated');
    // It connected again, so the budget is whole: five more restarts, then it stays failed for the UI.
    r.hold = true; // no renegotiation completes from here on
    for (let i = 0; i < 8; i++) pcA.setIce('failed');
    expect(pcA.restarts).toBe(1 + 5);
    pcA.setIce('connected');
    pcA.setIce('failed');
    expect(pcA.restarts).toBe(1 + 5 + 1);
  });

  it('a peer leaving mid-negotiation: its connection closes, and its late answer does not bring it back', async () => {
    const { r, a, b } = users();
    a.mesh.ensurePeer(b.ref);
    b.mesh.ensurePeer(a.ref);
    await r.settled(a, b, 'connected');
    r.hold = true;
    b.mesh.addStream(asStream(cameraStream()), 'camera'); // b offers
    await until(() => r.held.length > 0, 'b’s offer on its way');
    r.hold = false;
    r.release();
    // a answers; the answer is held while a leaves (presence offline at b).
    r.hold = true;
    await until(() => r.held.length > 0, 'a’s answer on its way');
    const old = r.pc(b, a);
    b.mesh.removePeer(a.ref);
    expect(old.closed).toBe(true);
    r.hold = false;
    r.release();
    await until(() => r.delivered >= 4, 'late signals delivered');
    await new Promise((res) => setTimeout(res, 5)); // let the mesh act on them (nothing should happen)
    expect(r.has(b, a)).toBe(false);
    expect(b.mesh.size).toBe(0);
  });

  it('a reloaded peer (new sid) gets a fresh connection, and the old page’s late signals are dropped', async () => {
    const { r, a, b } = users();
    a.mesh.ensurePeer(b.ref);
    b.mesh.ensurePeer(a.ref);
    await r.settled(a, b, 'connected');
    const before = r.pc(b, a);
    // a reloads: same device, new page (sid).
    r.nodes.delete(a.key);
    a.mesh.close();
    const a2 = r.add('@a:x', 'DA', 'sid-reloaded');
    a2.mesh.ensurePeer(b.ref);
    await until(() => r.has(b, a2) && r.pc(b, a2) !== before, 'b replaced the connection');
    expect(before.closed).toBe(true);
    await r.settled(a2, b, 'connected to the reloaded page');
    // A signal from the old page, late: stale.
    b.mesh.handleSignal(a.ref, { v: 1, sid: 'sid-@a:x-DA', to: null, msg: { candidate: null } });
    expect(b.log).toContain(`signal from ${a.key}: stale`);
    expect(r.pc(b, a2).closed).toBe(false);
  });

  it('signaling lost mid-offer: on resync the offer is rolled back and renegotiated once signals flow', async () => {
    const { r, a, b } = users();
    a.mesh.ensurePeer(b.ref);
    b.mesh.ensurePeer(a.ref);
    await r.settled(a, b, 'connected');
    r.down = true; // the socket dropped: whatever is sent now is lost
    b.mesh.signalingLost();
    b.mesh.addStream(asStream(cameraStream()), 'camera');
    await until(() => r.pc(b, a).signalingState === 'have-local-offer', 'b’s offer lost on the way');
    r.down = false; // resubscribed
    b.mesh.resyncAll();
    await r.settled(a, b, 'b’s camera negotiated after the outage');
    expect(r.pc(b, a).rollbacks).toBe(1);
    expect(r.pc(b, a).restarts).toBeGreaterThanOrEqual(1);
  });

  it('lowers the encodings as the mesh grows', async () => {
    const r = new Relay();
    const nodes = ['a', 'b', 'c', 'd'].map((u) => r.add(`@${u}:x`, 'D'));
    nodes[0]!.mesh.addStream(asStream(cameraStream()), 'camera');
    for (const n of nodes) for (const m of nodes) if (n !== m) n.mesh.ensurePeer(m.ref);
    for (let i = 1; i < nodes.length; i++) await r.settled(nodes[0]!, nodes[i]!, `a connected to ${i}`);
    const video = r.pc(nodes[0]!, nodes[1]!).senders.find((s) => s.track?.kind === 'video')!;
    await until(() => typeof video.params.encodings[0]?.maxBitrate === 'number', 'encodings applied');
    const three = video.params.encodings[0]!.maxBitrate as number;
    nodes[0]!.mesh.removePeer(nodes[3]!.ref);
    nodes[0]!.mesh.removePeer(nodes[2]!.ref);
    await until(() => (video.params.encodings[0]!.maxBitrate as number) > three, 'a higher bitrate with fewer peers');
  });
});
