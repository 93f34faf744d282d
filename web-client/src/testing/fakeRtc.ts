/**
 * Fake WebRTC for the unit tests of the mesh and the room session: peer connections that follow
 * the JSEP signaling state machine, "connect" once both sides hold each other's description,
 * deliver tracks named in the SDP to the other side, and pair their negotiated data channels.
 * Only what mesh.ts uses is implemented; anything else is a TypeError, which is what we want to
 * see if the code starts relying on more.
 */

let nextId = 1;
const uid = (p: string) => `${p}${nextId++}`;

export class FakeTrack {
  readonly id: string;
  enabled = true;
  readyState: 'live' | 'ended' = 'live';
  onended: (() => void) | null = null;
  onunmute: (() => void) | null = null;
  constructor(
    readonly kind: 'audio' | 'video',
    id?: string,
  ) {
    this.id = id ?? uid(kind);
  }
  stop(): void {
    this.readyState = 'ended';
  }
}

export class FakeStream {
  readonly id: string;
  onremovetrack: (() => void) | null = null;
  private tracks: FakeTrack[];
  constructor(tracks: FakeTrack[] = [], id?: string) {
    this.id = id ?? uid('stream');
    this.tracks = [...tracks];
  }
  getTracks(): FakeTrack[] {
    return [...this.tracks];
  }
  getAudioTracks(): FakeTrack[] {
    return this.tracks.filter((t) => t.kind === 'audio');
  }
  getVideoTracks(): FakeTrack[] {
    return this.tracks.filter((t) => t.kind === 'video');
  }
  addTrack(t: FakeTrack): void {
    if (!this.tracks.includes(t)) this.tracks.push(t);
  }
  removeTrack(t: FakeTrack): void {
    this.tracks = this.tracks.filter((x) => x !== t);
    this.onremovetrack?.();
  }
}

export const asStream = (s: FakeStream) => s as unknown as MediaStream;
export const asTrack = (t: FakeTrack) => t as unknown as MediaStreamTrack;

/** A camera stream with one audio and one video track. */
export function cameraStream(): FakeStream {
  return new FakeStream([new FakeTrack('audio'), new FakeTrack('video')]);
}

class FakeDataChannel {
  readyState: 'connecting' | 'open' | 'closed' = 'connecting';
  bufferedAmount = 0;
  bufferedAmountLowThreshold = 0;
  binaryType = 'blob';
  onopen: (() => void) | null = null;
  onclose: (() => void) | null = null;
  onmessage: ((e: { data: unknown }) => void) | null = null;
  partner: FakeDataChannel | null = null;
  readonly sent: unknown[] = [];
  private listeners = new Map<string, Set<() => void>>();
  constructor(
    readonly label: string,
    readonly id: number,
  ) {}
  send(data: unknown): void {
    if (this.readyState !== 'open') throw new Error('InvalidStateError: channel not open');
    this.sent.push(data);
    const to = this.partner;
    setTimeout(() => to?.readyState === 'open' && to.onmessage?.({ data }), 0);
  }
  open(): void {
    if (this.readyState !== 'connecting') return;
    this.readyState = 'open';
    this.onopen?.();
  }
  close(): void {
    if (this.readyState === 'closed') return;
    this.readyState = 'closed';
    this.onclose?.();
    for (const fn of this.listeners.get('close') ?? []) fn();
  }
  addEventListener(type: string, fn: () => void): void {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type)!.add(fn);
  }
  removeEventListener(type: string, fn: () => void): void {
    this.listeners.get(type)?.delete(fn);
  }
}

interface SdpBody {
  pc: string;
  gen: number;
  ice: number;
  tracks: Array<{ track: string; stream: string; kind: 'audio' | 'video' }>;
}

class FakeSender {
  params: { encodings: Array<Record<string, unknown>> } = { encodings: [] };
  constructor(
    public track: FakeTrack | null,
    readonly stream: FakeStream,
  ) {}
  getParameters() {
    return { ...this.params, encodings: this.params.encodings.map((e) => ({ ...e })) };
  }
  async setParameters(p: { encodings: Array<Record<string, unknown>> }): Promise<void> {
    this.params = p;
  }
  async replaceTrack(t: FakeTrack | null): Promise<void> {
    this.track = t;
  }
}

/** Every fake connection made, so tests can find and poke them. */
export class FakeRtcWorld {
  readonly all: FakePeerConnection[] = [];
  create = (config: RTCConfiguration): RTCPeerConnection => {
    const pc = new FakePeerConnection(this, config);
    this.all.push(pc);
    return pc as unknown as RTCPeerConnection;
  };
  byId(id: string): FakePeerConnection | undefined {
    return this.all.find((p) => p.id === id);
  }
}

export class FakePeerConnection {
  readonly id = uid('pc');
  signalingState: 'stable' | 'have-local-offer' | 'have-remote-offer' | 'closed' = 'stable';
  connectionState: 'new' | 'connecting' | 'connected' | 'disconnected' | 'failed' | 'closed' = 'new';
  iceConnectionState: string = 'new';
  localDescription: { type: string; sdp: string } | null = null;
  remoteDescription: { type: string; sdp: string } | null = null;
  /** The pc id named in the remote description: who we are talking to. */
  remotePc: string | null = null;
  restarts = 0;
  offersMade = 0;
  rollbacks = 0;
  closed = false;
  readonly candidatesReceived: unknown[] = [];
  readonly channels: FakeDataChannel[] = [];
  readonly senders: FakeSender[] = [];
  /** Remote tracks by id, delivered through ontrack. */
  readonly remoteTracks = new Map<string, FakeTrack>();
  private remoteStreams = new Map<string, FakeStream>();
  private gen = 0;
  private ice = 0;
  private pendingNegotiation = false;
  onnegotiationneeded: (() => void) | null = null;
  onicecandidate: ((e: { candidate: { toJSON(): unknown } | null }) => void) | null = null;
  oniceconnectionstatechange: (() => void) | null = null;
  onconnectionstatechange: (() => void) | null = null;
  ontrack: ((e: { track: FakeTrack; streams: FakeStream[] }) => void) | null = null;

  /** Test hook: the candidate type of the selected pair's local side, as getStats reports it. */
  localCandidateType = 'host';
  /** Every configuration set after the first (renewed ICE servers). */
  readonly reconfigured: RTCConfiguration[] = [];

  constructor(
    private readonly world: FakeRtcWorld,
    public config: RTCConfiguration,
  ) {}

  getConfiguration(): RTCConfiguration {
    return { ...this.config };
  }

  setConfiguration(config: RTCConfiguration): void {
    if (this.closed) throw new Error('InvalidStateError: closed');
    // Like browsers: what cannot change after creation must be passed unchanged.
    if (config.bundlePolicy !== this.config.bundlePolicy || config.iceTransportPolicy !== this.config.iceTransportPolicy) {
      throw new Error('InvalidModificationError');
    }
    this.config = config;
    this.reconfigured.push(config);
  }

  private body(): SdpBody {
    return { pc: this.id, gen: this.gen, ice: this.ice, tracks: this.senders.filter((s) => s.track).map((s) => ({ track: s.track!.id, stream: s.stream.id, kind: s.track!.kind })) };
  }

  async setLocalDescription(desc?: { type: string }): Promise<void> {
    await Promise.resolve();
    if (this.closed) throw new Error('InvalidStateError: closed');
    if (desc?.type === 'rollback') {
      if (this.signalingState !== 'have-local-offer' && this.signalingState !== 'have-remote-offer') throw new Error('InvalidStateError: rollback in ' + this.signalingState);
      this.signalingState = 'stable';
      this.localDescription = null;
      this.rollbacks++;
      this.needNegotiation();
      return;
    }
    if (this.signalingState === 'stable') {
      this.gen++;
      this.offersMade++;
      this.localDescription = { type: 'offer', sdp: JSON.stringify(this.body()) };
      this.signalingState = 'have-local-offer';
      this.pendingNegotiation = false;
      this.gatherCandidates();
    } else if (this.signalingState === 'have-remote-offer') {
      this.localDescription = { type: 'answer', sdp: JSON.stringify(this.body()) };
      this.signalingState = 'stable';
      this.gatherCandidates();
      this.maybeConnect();
      this.fireNegotiationIfNeeded();
    } else {
      throw new Error('InvalidStateError: setLocalDescription in ' + this.signalingState);
    }
  }

  async setRemoteDescription(desc: { type: string; sdp?: string }): Promise<void> {
    await Promise.resolve();
    if (this.closed) throw new Error('InvalidStateError: closed');
    const body = JSON.parse(desc.sdp ?? '{}') as SdpBody;
    if (this.remotePc && body.pc !== this.remotePc) throw new Error('InvalidAccessError: description from another connection (DTLS fingerprint changed)');
    if (desc.type === 'offer') {
      if (this.signalingState !== 'stable') throw new Error('InvalidStateError: offer in ' + this.signalingState);
      this.signalingState = 'have-remote-offer';
    } else if (desc.type === 'answer') {
      if (this.signalingState !== 'have-local-offer') throw new Error('InvalidStateError: answer in ' + this.signalingState);
      this.signalingState = 'stable';
    }
    this.remotePc = body.pc;
    this.remoteDescription = { type: desc.type, sdp: desc.sdp ?? '' };
    this.applyRemoteTracks(body);
    if (desc.type === 'answer') {
      this.maybeConnect();
      this.fireNegotiationIfNeeded();
    }
  }

  private applyRemoteTracks(body: SdpBody): void {
    const named = new Set(body.tracks.map((t) => t.track));
    for (const t of body.tracks) {
      if (this.remoteTracks.has(t.track)) continue;
      const track = new FakeTrack(t.kind, t.track);
      this.remoteTracks.set(t.track, track);
      let stream = this.remoteStreams.get(t.stream);
      if (!stream) {
        stream = new FakeStream([], t.stream);
        this.remoteStreams.set(t.stream, stream);
      }
      stream.addTrack(track);
      this.ontrack?.({ track, streams: [stream] });
    }
    for (const [id, track] of this.remoteTracks) {
      if (named.has(id)) continue;
      this.remoteTracks.delete(id);
      for (const s of this.remoteStreams.values()) if (s.getTracks().includes(track)) s.removeTrack(track);
    }
  }

  async addIceCandidate(c?: unknown): Promise<void> {
    await Promise.resolve();
    if (!this.remoteDescription) throw new Error('InvalidStateError: no remote description');
    this.candidatesReceived.push(c ?? null);
  }

  private gatherCandidates(): void {
    const ice = this.ice;
    setTimeout(() => {
      if (this.closed) return;
      this.onicecandidate?.({ candidate: { toJSON: () => ({ candidate: `candidate:${this.id}:${ice}`, sdpMid: '0', sdpMLineIndex: 0 }) } });
      this.onicecandidate?.({ candidate: null });
    }, 0);
  }

  /** Connected once both sides of a pair have each other's description in a stable state. */
  private maybeConnect(): void {
    setTimeout(() => {
      const other = this.remotePc ? this.world.byId(this.remotePc) : undefined;
      if (!other || other.closed || this.closed || other.remotePc !== this.id) return;
      for (const pc of [this, other]) {
        if (pc.signalingState !== 'stable' || !pc.localDescription || !pc.remoteDescription) return;
      }
      for (const pc of [this, other]) pc.setIce('connected');
      for (const ch of this.channels) {
        const peer = other.channels.find((c) => c.id === ch.id);
        if (!peer) continue;
        ch.partner = peer;
        peer.partner = ch;
        ch.open();
        peer.open();
      }
      for (const s of this.senders) if (s.params.encodings.length === 0) s.params.encodings = [{}];
      for (const s of other.senders) if (s.params.encodings.length === 0) s.params.encodings = [{}];
    }, 0);
  }

  /** Test hook: the ICE agent's verdict. */
  setIce(state: 'connected' | 'failed' | 'disconnected'): void {
    this.iceConnectionState = state;
    this.oniceconnectionstatechange?.();
    const conn = state === 'connected' ? 'connected' : state;
    if (this.connectionState !== conn) {
      this.connectionState = conn;
      this.onconnectionstatechange?.();
    }
  }

  restartIce(): void {
    this.restarts++;
    this.ice++;
    this.needNegotiation();
  }

  createDataChannel(label: string, opts: { id: number }): FakeDataChannel {
    const ch = new FakeDataChannel(label, opts.id);
    this.channels.push(ch);
    // Like Chromium: the first data channel adds the SCTP section, which needs negotiating.
    if (this.channels.length === 1) this.needNegotiation();
    return ch;
  }

  addTrack(track: FakeTrack, stream: FakeStream): FakeSender {
    const s = new FakeSender(track, stream);
    this.senders.push(s);
    this.needNegotiation();
    return s;
  }

  removeTrack(sender: FakeSender): void {
    sender.track = null;
    this.needNegotiation();
  }

  getSenders(): FakeSender[] {
    return [...this.senders];
  }

  async getStats(): Promise<Map<string, Record<string, unknown>>> {
    const m = new Map<string, Record<string, unknown>>();
    m.set('T', { id: 'T', type: 'transport', selectedCandidatePairId: 'P' });
    m.set('P', { id: 'P', type: 'candidate-pair', currentRoundTripTime: 0.012, nominated: true, state: 'succeeded', localCandidateId: 'L', remoteCandidateId: 'R' });
    m.set('L', { id: 'L', type: 'local-candidate', candidateType: this.localCandidateType });
    m.set('R', { id: 'R', type: 'remote-candidate', candidateType: 'host' });
    let i = 0;
    for (const t of this.remoteTracks.values()) {
      m.set(`in${i}`, { id: `in${i++}`, type: 'inbound-rtp', kind: t.kind, framesDecoded: t.kind === 'video' ? 30 : undefined, packetsReceived: 100, packetsLost: 0, bytesReceived: 10_000 });
    }
    return m;
  }

  close(): void {
    this.closed = true;
    this.signalingState = 'closed';
    this.connectionState = 'closed';
    for (const ch of this.channels) ch.close();
  }

  needNegotiation(): void {
    this.pendingNegotiation = true;
    this.fireNegotiationIfNeeded();
  }

  private fireNegotiationIfNeeded(): void {
    if (!this.pendingNegotiation || this.signalingState !== 'stable') return;
    setTimeout(() => {
      if (this.pendingNegotiation && this.signalingState === 'stable' && !this.closed) {
        this.pendingNegotiation = false;
        this.onnegotiationneeded?.();
      }
    }, 0);
  }
}

/** Resolves once `cond` holds, checking after each turn of the event loop; fails after `ms` with `what`. */
export async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}
