/**
 * The WebRTC full mesh: one RTCPeerConnection per remote device, each driven by a
 * PerfectNegotiator. The mesh owns which local tracks are sent to whom (camera, microphone, any
 * number of screen shares), the per-sender encodings as the mesh grows, ICE restarts, the two
 * negotiated data channels per peer (id 0 `files`, id 1 `ctl` for media state), and the remote
 * streams received. Signals leave through `sendSignal`, which the caller encrypts: nothing here
 * touches the network or the DOM, and the connection factory is injected.
 */
import { deviceKey, isPolite, PerfectNegotiator, type NegotiationMessage } from './negotiation';
import { IncarnationTracker } from './incarnation';
import { encodingFor, type StreamKind } from './encoding';
import type { DeviceRef, IceServer } from '../protocol/types';
import type { PeerView, RemoteStreamView } from '../state/roomState';
import type { QualitySample } from './quality';

/** What goes (encrypted) inside a `signal` message. */
export interface SignalEnvelope {
  v: 1;
  sid: string;
  to: string | null;
  msg: NegotiationMessage;
}

interface CtlMessage {
  t: 'media';
  mic: boolean;
  cam: boolean;
  screen: boolean;
  labels: Record<string, 'camera' | 'screen'>;
}

export interface MeshOptions {
  self: DeviceRef;
  sid: string;
  iceServers: IceServer[];
  /** 'relay' keeps every connection on TURN relay candidates (no host or reflexive addresses leave). */
  iceTransportPolicy: RTCIceTransportPolicy;
  createPeerConnection(config: RTCConfiguration): RTCPeerConnection;
  sendSignal(to: DeviceRef, env: SignalEnvelope): void;
  onChange(): void;
  onFilesChannel(peerKey: string, ch: RTCDataChannel | null): void;
  onFilesMessage(peerKey: string, data: string | ArrayBuffer): void;
  /** A control message that is not the mesh's own (e.g. a new room key), from a DTLS-authenticated channel. */
  onControl?(peerKey: string, msg: { t: string; [k: string]: unknown }): void;
  log?(msg: string, err?: unknown): void;
}

/** Inbound media from one peer per getStats, with the connection's states (diagnostics). */
export interface InboundStats {
  framesDecoded: number;
  audioBytes: number;
  audioLevel: number;
  videoStreams: number;
  connection: string;
  signaling: string;
  ice: string;
  /** Candidate types of the selected pair ('host', 'srflx', 'prflx', 'relay'); null before one is chosen. */
  localCandidateType: string | null;
  remoteCandidateType: string | null;
}

interface LocalSource {
  stream: MediaStream;
  kind: 'camera' | 'screen';
}

class PeerLink {
  readonly key: string;
  readonly pc: RTCPeerConnection;
  readonly negotiator: PerfectNegotiator;
  readonly files: RTCDataChannel;
  readonly ctl: RTCDataChannel;
  /** local track id → sender */
  readonly senders = new Map<string, RTCRtpSender>();
  readonly remoteStreams = new Map<string, MediaStream>();
  remoteLabels: Record<string, 'camera' | 'screen'> = {};
  remoteMedia = { mic: false, cam: false, screen: false };
  private iceRestarts = 0;
  /** Set when the signaling path went down while this connection existed (see Mesh.signalingLost). */
  signalingLost = false;

  constructor(
    readonly ref: DeviceRef,
    private readonly mesh: Mesh,
    private readonly opts: MeshOptions,
  ) {
    this.key = deviceKey(ref.user_id, ref.device_id);
    this.pc = opts.createPeerConnection({ iceServers: rtcIceServers(mesh.iceServers), iceTransportPolicy: opts.iceTransportPolicy, bundlePolicy: 'max-bundle' });
    const polite = isPolite(deviceKey(opts.self.user_id, opts.self.device_id), this.key);
    this.negotiator = new PerfectNegotiator(this.pc, polite, (msg) => this.mesh.signalOut(this, msg), {
      error: (e) => opts.log?.(`negotiation with ${this.key}`, e),
      rollback: () => opts.log?.(`rolled back our offer to ${this.key}`),
      ignoredOffer: () => opts.log?.(`ignored a colliding offer from ${this.key}`),
    });
    opts.log?.(`peer ${this.key} created (${polite ? 'polite' : 'impolite'})`);
    this.pc.onnegotiationneeded = () => {
      opts.log?.(`negotiation needed with ${this.key}`);
      void this.negotiator.negotiationNeeded();
    };
    this.pc.onicecandidate = (e) => {
      this.negotiator.localCandidate(e.candidate ? e.candidate.toJSON() : null);
    };
    this.pc.oniceconnectionstatechange = () => {
      if (this.pc.iceConnectionState === 'failed') this.restartIce();
      if (this.pc.iceConnectionState === 'connected' || this.pc.iceConnectionState === 'completed') this.iceRestarts = 0;
      opts.onChange();
    };
    // ICE restarts follow the ICE state only: connectionState 'failed' accompanies the same failure
    // (restarting on both spent the bounded budget twice as fast), and a DTLS failure is not
    // something an ICE restart mends.
    this.pc.onconnectionstatechange = () => {
      if (this.pc.connectionState === 'connected') this.mesh.applyEncodings();
      opts.onChange();
    };
    this.pc.ontrack = (e) => {
      const streams = e.streams.length ? e.streams : [new MediaStream([e.track])];
      for (const s of streams) {
        this.remoteStreams.set(s.id, s);
        s.onremovetrack = () => {
          if (s.getTracks().length === 0) this.remoteStreams.delete(s.id);
          opts.onChange();
        };
      }
      e.track.onunmute = () => opts.onChange();
      opts.onChange();
    };
    // Both sides create the same negotiated channels, so neither has to wait for the other's offer.
    this.files = this.pc.createDataChannel('files', { negotiated: true, id: 0, ordered: true });
    this.files.binaryType = 'arraybuffer';
    this.files.onopen = () => {
      opts.onFilesChannel(this.key, this.files);
      opts.onChange();
    };
    this.files.onclose = () => {
      opts.onFilesChannel(this.key, null);
      opts.onChange();
    };
    this.files.onmessage = (e: MessageEvent) => opts.onFilesMessage(this.key, e.data as string | ArrayBuffer);
    this.ctl = this.pc.createDataChannel('ctl', { negotiated: true, id: 1, ordered: true });
    this.ctl.onopen = () => this.sendMediaState();
    this.ctl.onmessage = (e: MessageEvent) => this.onCtl(String(e.data));
  }

  restartIce(): void {
    // Bounded: a peer that keeps failing is left in 'failed' for the UI rather than looping.
    if (this.iceRestarts >= 5) return;
    this.iceRestarts++;
    this.opts.log?.(`ICE restart with ${this.key} (#${this.iceRestarts})`);
    this.negotiator.iceFailed();
  }

  /**
   * Renewed TURN credentials: the connection's next gathering uses them. If it relays through
   * TURN now, ICE restarts at once, so that a new allocation is made with them: the TURN server
   * refuses to refresh the current one once the credentials it was made with have run out.
   */
  async useIceServers(servers: IceServer[]): Promise<void> {
    try {
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: rtcIceServers(servers) });
    } catch (e) {
      this.opts.log?.(`new ICE servers for ${this.key} not applied`, e);
      return;
    }
    if (this.pc.connectionState === 'closed') return;
    if (selectedCandidateTypes(await this.pc.getStats()).localCandidateType !== 'relay') return;
    this.opts.log?.(`ICE restart with ${this.key} for renewed TURN credentials`);
    this.negotiator.iceFailed();
  }

  sendMediaState(): void {
    if (this.ctl.readyState !== 'open') return;
    const m = this.mesh.localMediaState();
    const msg: CtlMessage = { t: 'media', ...m };
    this.ctl.send(JSON.stringify(msg));
  }

  private onCtl(text: string): void {
    try {
      const m = JSON.parse(text) as CtlMessage;
      if (m.t !== 'media') {
        if (typeof m.t === 'string') this.opts.onControl?.(this.key, m as unknown as { t: string });
        return;
      }
      this.remoteMedia = { mic: !!m.mic, cam: !!m.cam, screen: !!m.screen };
      this.remoteLabels = m.labels ?? {};
      this.opts.onChange();
    } catch {
      /* ignore malformed control frames */
    }
  }

  view(): PeerView {
    const streams: RemoteStreamView[] = [];
    for (const [id, stream] of this.remoteStreams) {
      if (stream.getTracks().length === 0) continue;
      streams.push({ id, stream, label: this.remoteLabels[id] ?? 'camera' });
    }
    streams.sort((a, b) => (a.label === b.label ? 0 : a.label === 'camera' ? -1 : 1));
    return {
      key: this.key,
      userId: this.ref.user_id,
      deviceId: this.ref.device_id,
      state: this.pc.connectionState as PeerView['state'],
      ice: this.pc.iceConnectionState,
      streams,
      filesOpen: this.files.readyState === 'open',
      media: this.remoteMedia,
    };
  }

  close(): void {
    this.negotiator.close();
    this.pc.onnegotiationneeded = null;
    this.pc.onicecandidate = null;
    this.pc.ontrack = null;
    this.pc.onconnectionstatechange = null;
    this.pc.oniceconnectionstatechange = null;
    this.files.onclose = null;
    this.pc.close();
  }
}

export class Mesh {
  private readonly peers = new Map<string, PeerLink>();
  private readonly sources = new Map<string, LocalSource>();
  private readonly incarnations: IncarnationTracker;
  private mic = false;
  private closed = false;
  /** The ICE servers new connections are made with (see `setIceServers`). */
  iceServers: IceServer[];

  constructor(private readonly opts: MeshOptions) {
    this.incarnations = new IncarnationTracker(opts.sid);
    this.iceServers = opts.iceServers;
  }

  /** ICE servers with renewed TURN credentials, for new connections and the existing ones. */
  setIceServers(servers: IceServer[]): void {
    this.iceServers = servers;
    if (this.closed) return;
    for (const link of this.peers.values()) void link.useIceServers(servers);
  }

  get size(): number {
    return this.peers.size;
  }

  isSelf(ref: DeviceRef): boolean {
    return ref.user_id === this.opts.self.user_id && ref.device_id === this.opts.self.device_id;
  }

  /** Create the connection to a device if it does not exist yet (presence online, summary). */
  ensurePeer(ref: DeviceRef): void {
    if (this.closed || this.isSelf(ref)) return;
    const key = deviceKey(ref.user_id, ref.device_id);
    if (this.peers.has(key)) return;
    const link = new PeerLink(ref, this, this.opts);
    this.peers.set(key, link);
    for (const src of this.sources.values()) for (const t of src.stream.getTracks()) this.addSender(link, t, src);
    this.applyEncodings();
    this.opts.onChange();
  }

  removePeer(ref: DeviceRef): void {
    const key = deviceKey(ref.user_id, ref.device_id);
    this.opts.log?.(`peer ${key} removed`);
    const link = this.peers.get(key);
    this.incarnations.forget(key);
    if (!link) return;
    link.close();
    this.peers.delete(key);
    this.opts.onFilesChannel(key, null);
    this.applyEncodings();
    this.opts.onChange();
  }

  /** Keep exactly the given devices (after a (re)subscribe's summary). */
  reconcile(connected: DeviceRef[]): void {
    const want = new Set(connected.filter((r) => !this.isSelf(r)).map((r) => deviceKey(r.user_id, r.device_id)));
    for (const link of [...this.peers.values()]) if (!want.has(link.key)) this.removePeer(link.ref);
    for (const r of connected) this.ensurePeer(r);
  }

  /** A decrypted signal envelope from `from`. */
  handleSignal(from: DeviceRef, env: SignalEnvelope): void {
    if (this.closed || this.isSelf(from) || env?.v !== 1 || typeof env.sid !== 'string') return;
    const key = deviceKey(from.user_id, from.device_id);
    const verdict = this.incarnations.classify(key, env.sid, env.to ?? null);
    if (verdict !== 'accept') this.opts.log?.(`signal from ${key}: ${verdict}`);
    if (verdict === 'stale') return;
    if (verdict === 'reset') {
      // The remote page was reloaded: its old connection is gone for good.
      const old = this.peers.get(key);
      if (old) {
        old.close();
        this.peers.delete(key);
        this.opts.onFilesChannel(key, null);
      }
    }
    const existing = this.peers.get(key);
    // Only an offer or a hello starts a connection. An answer or a candidate for a connection we do
    // not have is from one we closed (the peer left, and its last signals were still on the way):
    // creating a connection for it would leave one that nothing ever negotiates.
    if (!existing && !('hello' in env.msg) && !('description' in env.msg && env.msg.description.type === 'offer')) {
      this.opts.log?.(`signal from ${key} for a closed connection dropped`);
      return;
    }
    if ('hello' in env.msg && existing?.negotiator.established) {
      // The remote side started a fresh connection to us (its old one is gone): follow suit.
      this.opts.log?.(`fresh connection requested by ${key}`);
      existing.close();
      this.peers.delete(key);
      this.opts.onFilesChannel(key, null);
    }
    this.ensurePeer(from);
    if ('hello' in env.msg) this.opts.log?.(`hello from ${key}`);
    else if ('description' in env.msg) this.opts.log?.(`${env.msg.description.type} from ${key}`);
    void this.peers.get(key)?.negotiator.receive(env.msg);
  }

  signalOut(link: PeerLink, msg: NegotiationMessage): void {
    if ('description' in msg) this.opts.log?.(`${msg.description.type} to ${link.key}`);
    this.opts.sendSignal(link.ref, { v: 1, sid: this.opts.sid, to: this.incarnations.remoteSid(link.key), msg });
  }

  /** The signaling path (the socket) went down: what the connections sent meanwhile may be lost. */
  signalingLost(): void {
    for (const link of this.peers.values()) link.signalingLost = true;
  }

  /**
   * After the signaling path was down: finish or restart any negotiation that may have lost
   * messages. Only connections that existed while it was down: one created since (e.g. for a hello
   * that arrived just before the resubscription's answer) has lost nothing, and rolling back its
   * offer would cross it with the answer already on its way.
   */
  resyncAll(): void {
    for (const link of this.peers.values()) {
      if (!link.signalingLost) continue;
      link.signalingLost = false;
      const st = link.pc.connectionState;
      if (link.pc.signalingState !== 'stable' || st === 'failed' || st === 'disconnected' || st === 'new' || st === 'connecting') {
        void link.negotiator.resync();
      }
    }
  }

  /** Start sending a local stream (camera+mic, or a screen share) to every peer. */
  addStream(stream: MediaStream, kind: 'camera' | 'screen'): void {
    const src: LocalSource = { stream, kind };
    this.sources.set(stream.id, src);
    for (const link of this.peers.values()) for (const t of stream.getTracks()) this.addSender(link, t, src);
    this.applyEncodings();
    this.broadcastMediaState();
  }

  /** Add one more track to a stream already sent (e.g. camera turned on after joining audio-only). */
  addTrack(stream: MediaStream, track: MediaStreamTrack): void {
    const src = this.sources.get(stream.id);
    if (!src) return;
    for (const link of this.peers.values()) this.addSender(link, track, src);
    this.applyEncodings();
    this.broadcastMediaState();
  }

  /** Stop sending a track (renegotiates). */
  removeTrack(track: MediaStreamTrack): void {
    for (const link of this.peers.values()) {
      const sender = link.senders.get(track.id);
      if (sender) {
        try {
          link.pc.removeTrack(sender);
        } catch (e) {
          this.opts.log?.('removeTrack', e);
        }
        link.senders.delete(track.id);
      }
    }
    this.broadcastMediaState();
  }

  /**
   * Send `next` instead of `prev` (another microphone or camera) without renegotiating: the
   * senders keep their transceivers, only the source changes (RTCRtpSender.replaceTrack).
   */
  async replaceTrack(prev: MediaStreamTrack, next: MediaStreamTrack): Promise<void> {
    const jobs: Array<Promise<void>> = [];
    for (const link of this.peers.values()) {
      const sender = link.senders.get(prev.id);
      if (!sender) continue;
      link.senders.delete(prev.id);
      link.senders.set(next.id, sender);
      jobs.push(sender.replaceTrack(next).catch((e: unknown) => this.opts.log?.('replaceTrack', e)));
    }
    await Promise.all(jobs);
    this.applyEncodings();
    this.broadcastMediaState();
  }

  removeStream(stream: MediaStream): void {
    for (const t of stream.getTracks()) this.removeTrack(t);
    this.sources.delete(stream.id);
    this.broadcastMediaState();
  }

  setMicEnabled(on: boolean): void {
    this.mic = on;
    this.broadcastMediaState();
  }

  localMediaState(): Omit<CtlMessage, 't'> {
    const labels: Record<string, 'camera' | 'screen'> = {};
    let cam = false;
    let screen = false;
    for (const [id, src] of this.sources) {
      labels[id] = src.kind;
      const hasVideo = src.stream.getVideoTracks().some((t) => t.readyState === 'live');
      if (src.kind === 'camera' && hasVideo) cam = true;
      if (src.kind === 'screen' && hasVideo) screen = true;
    }
    return { mic: this.mic, cam, screen, labels };
  }

  broadcastMediaState(): void {
    for (const link of this.peers.values()) link.sendMediaState();
    this.opts.onChange();
  }

  private addSender(link: PeerLink, track: MediaStreamTrack, src: LocalSource): void {
    if (link.senders.has(track.id)) return;
    try {
      link.senders.set(track.id, link.pc.addTrack(track, src.stream));
    } catch (e) {
      this.opts.log?.('addTrack', e);
    }
  }

  /** Lower bitrate and resolution as the mesh grows (RTCRtpSender.setParameters). */
  applyEncodings(): void {
    const n = this.peers.size;
    for (const link of this.peers.values()) {
      for (const [trackId, sender] of link.senders) {
        const track = sender.track;
        if (!track || track.id !== trackId) continue;
        const src = [...this.sources.values()].find((s) => s.stream.getTracks().some((t) => t.id === trackId));
        const kind: StreamKind = track.kind === 'audio' ? 'audio' : src?.kind === 'screen' ? 'screen' : 'camera';
        const policy = encodingFor(kind, n);
        const params = sender.getParameters();
        if (!params.encodings || params.encodings.length === 0) continue; // not negotiated yet; retried on 'connected'
        params.encodings = params.encodings.map((e) => ({
          ...e,
          maxBitrate: policy.maxBitrate,
          ...(kind !== 'audio' ? { scaleResolutionDownBy: policy.scaleResolutionDownBy ?? 1, maxFramerate: policy.maxFramerate } : {}),
        }));
        sender.setParameters(params).catch((e: unknown) => this.opts.log?.('setParameters', e));
      }
    }
  }

  /** Send a control message over the `ctl` data channel of every open peer for which `to` holds. Returns who got it. */
  sendControl(msg: { t: string; [k: string]: unknown }, to: (ref: DeviceRef) => boolean): string[] {
    const sent: string[] = [];
    for (const link of this.peers.values()) {
      if (!to(link.ref) || link.ctl.readyState !== 'open') continue;
      link.ctl.send(JSON.stringify(msg));
      sent.push(link.key);
    }
    return sent;
  }

  views(): PeerView[] {
    return [...this.peers.values()].map((l) => l.view());
  }

  /** For the diagnostics hook used by browser tests: inbound media per peer from getStats. */
  async inboundStats(): Promise<Record<string, InboundStats>> {
    const out: Record<string, InboundStats> = {};
    for (const link of this.peers.values()) {
      const stats = await link.pc.getStats();
      const row: InboundStats = {
        framesDecoded: 0,
        audioBytes: 0,
        audioLevel: 0,
        videoStreams: 0,
        connection: link.pc.connectionState,
        signaling: link.pc.signalingState,
        ice: link.pc.iceConnectionState,
        ...selectedCandidateTypes(stats),
      };
      stats.forEach((r: { type: string; kind?: string; framesDecoded?: number; bytesReceived?: number; totalAudioEnergy?: number }) => {
        if (r.type !== 'inbound-rtp') return;
        if (r.kind === 'video') {
          row.framesDecoded += r.framesDecoded ?? 0;
          if ((r.framesDecoded ?? 0) > 0) row.videoStreams++;
        }
        if (r.kind === 'audio') {
          row.audioBytes += r.bytesReceived ?? 0;
          row.audioLevel += r.totalAudioEnergy ?? 0;
        }
      });
      out[link.key] = row;
    }
    return out;
  }

  /** Counters per peer for the connection-quality label (mesh/quality.ts). */
  async qualitySamples(now: number): Promise<Record<string, QualitySample>> {
    const out: Record<string, QualitySample> = {};
    for (const link of this.peers.values()) {
      if (link.pc.connectionState !== 'connected') continue;
      const stats = await link.pc.getStats();
      out[link.key] = qualitySample(stats, now);
    }
    return out;
  }

  close(): void {
    this.closed = true;
    for (const link of this.peers.values()) link.close();
    this.peers.clear();
  }
}

type StatsRow = { type: string; id: string; selectedCandidatePairId?: string; localCandidateId?: string; remoteCandidateId?: string; candidateType?: string; nominated?: boolean; state?: string };

/** The candidate types of the pair the ICE agent selected (the transport's, else the nominated succeeded pair). */
/** Only the fields RTCPeerConnection knows, whatever else the server sent. */
function rtcIceServers(servers: IceServer[]): RTCIceServer[] {
  return servers.map((s) => ({ urls: s.urls, username: s.username, credential: s.credential }));
}

function selectedCandidateTypes(stats: RTCStatsReport): { localCandidateType: string | null; remoteCandidateType: string | null } {
  const rows = new Map<string, StatsRow>();
  stats.forEach((r: StatsRow) => rows.set(r.id, r));
  let pair: StatsRow | undefined;
  for (const r of rows.values()) {
    if (r.type === 'transport' && r.selectedCandidatePairId) pair = rows.get(r.selectedCandidatePairId);
  }
  pair ??= [...rows.values()].find((r) => r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded');
  const type = (id: string | undefined) => (id ? (rows.get(id)?.candidateType ?? null) : null);
  return { localCandidateType: type(pair?.localCandidateId), remoteCandidateType: type(pair?.remoteCandidateId) };
}

type QualityRow = StatsRow & { currentRoundTripTime?: number; packetsReceived?: number; packetsLost?: number; bytesReceived?: number };

/** Round trip of the selected pair and the totals of every inbound RTP stream. */
export function qualitySample(stats: RTCStatsReport, now: number): QualitySample {
  const rows = new Map<string, QualityRow>();
  stats.forEach((r: QualityRow) => rows.set(r.id, r));
  let pair: QualityRow | undefined;
  for (const r of rows.values()) if (r.type === 'transport' && r.selectedCandidatePairId) pair = rows.get(r.selectedCandidatePairId);
  pair ??= [...rows.values()].find((r) => r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded');
  const sample: QualitySample = { at: now, rtt: pair?.currentRoundTripTime ?? null, packetsReceived: 0, packetsLost: 0, bytesReceived: 0 };
  for (const r of rows.values()) {
    if (r.type !== 'inbound-rtp') continue;
    sample.packetsReceived += r.packetsReceived ?? 0;
    sample.packetsLost += r.packetsLost ?? 0;
    sample.bytesReceived += r.bytesReceived ?? 0;
  }
  return sample;
}
