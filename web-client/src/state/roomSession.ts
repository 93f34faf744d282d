/**
 * One joined room in one tab: ties the socket, the room key, the mesh, the file transfers and the
 * local media together and folds everything into a RoomViewState store that components render.
 * Browser capabilities (WebSocket, RTCPeerConnection, getUserMedia) are injected, so this module
 * imports neither the DOM nor React.
 */
import { ConfabSocket, type SocketStatus, type WebSocketFactory, type LiveMessage } from '../protocol/socket';
import type { BackoffOptions } from '../protocol/backoff';
import { ConfabError, describeError, retryDelay, type KickResult, type RoomEvent, type RoomSummary, type Session, type IceServer } from '../protocol/types';
import type { RestClient } from '../protocol/rest';
import { DecryptError, deriveRoomKeyMaterial, openJson, rawKeySecret, roomKeyFromRaw, sealJson, type MessageContext, type RoomKey } from '../crypto/e2ee';
import { english, type Translate } from '../i18n/i18n';
import { assessQuality, type QualitySample } from '../mesh/quality';
import { AttentionCounter, attentionKind, badgeTitle } from './attention';
import { decodeKeyCheck, encodeKeyCheck, judgeKeys } from './keyCheck';
import { listDevices, removedChoices, type DeviceKind } from './devices';
import { Mesh, type SignalEnvelope } from '../mesh/mesh';
import { packSignal, unpackSignal, type PackedEnvelope } from '../mesh/signalPacking';
import { deviceKey } from '../mesh/negotiation';
import { FileTransfers } from '../files/transfers';
import type { ByteSource, FileOffer, FileStore } from '../files/chunks';
import { createSha256, hashSource } from '../files/hash';
import { Store } from './store';
import { IceCredentials } from './iceCredentials';
import { addChatItem, applyMember, applyPresence, applySummary, applyTyping, displayName, initialRoomState, setChatOpen, type RoomViewState, applyRole, applyKnock, isHostUser } from './roomState';
import type { LocalMemory } from './storage';
import { captureScreen } from './browserSupport';

/** Files up to this size are fetched as soon as their offer arrives; larger ones on request. */
export const AUTO_FETCH_BYTES = 64 * 1024 * 1024;
const TYPING_RESEND_MS = 3000;
const TYPING_IDLE_MS = 4000;
const REMOTE_TYPING_TTL_MS = 8000;
const PROFILE_COALESCE_MS = 200;
const QUALITY_INTERVAL_MS = 2000;
/** How long a join notification waits for the newcomer's encrypted name. */
const JOIN_NAME_WAIT_MS = 3000;

export interface MediaBackend {
  getUserMedia(c: MediaStreamConstraints): Promise<MediaStream>;
  getDisplayMedia(c: DisplayMediaStreamOptions): Promise<MediaStream>;
  createStream(tracks: MediaStreamTrack[]): MediaStream;
  /** A track carrying `mic` with RNNoise applied (loaded on first use). */
  denoise?(mic: MediaStreamTrack): Promise<MediaStreamTrack>;
  enumerateDevices?(): Promise<Array<{ kind: string; deviceId: string; label: string }>>;
  /** Calls `fn` on every `devicechange`; returns the unsubscribe. */
  onDeviceChange?(fn: () => void): () => void;
}

/** How the tab asks for attention while hidden (title badge, notifications); absent in tests that do not care. */
export interface AttentionBackend {
  setTitle(title: string): void;
  /** Shows a notification if the user allowed them; otherwise does nothing. */
  notify(title: string, body: string): void;
}

export interface RoomSessionDeps {
  roomId: string;
  session: Session;
  myName: string;
  /** The room key with its key check and fingerprint (crypto/e2ee.ts). */
  roomKey: RoomKey;
  /** Keys the room used before (replaced after removals), for reading history; newest first. */
  olderKeys?: RoomKey[];
  /** The secret `roomKey` came from (a passphrase or a raw-key secret), for invite links. */
  secret?: string;
  weakKey: boolean;
  /** Messages in the user's language; English when absent. */
  t?: Translate;
  attention?: AttentionBackend;
  /** The page title without a badge. */
  baseTitle?: string;
  rest: RestClient;
  memory: LocalMemory;
  wsUrl: string;
  wsFactory: WebSocketFactory;
  /**
   * The public STUN servers (`GET /config`), used until the room's own arrive: STUN and TURN with
   * credentials, fetched with the session once it is a member (`rest.iceServers`) and renewed
   * before they run out.
   */
  iceServers: IceServer[];
  /** 'relay' to send media through TURN only (the `relay=1` link setting); default 'all'. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  createPeerConnection(config: RTCConfiguration): RTCPeerConnection;
  media: MediaBackend;
  /** Where received files are written (the Origin Private File System in the browser). */
  fileStore: FileStore;
  randomId(): string;
  now(): number;
  log?(msg: string, err?: unknown): void;
  /** Reconnect pacing; the default suits browsers, tests make it quick. */
  backoff?: BackoffOptions;
}

interface OutboxItem {
  kind: string;
  ciphertext: string;
  mid: string;
  inFlight: boolean;
}

export interface MediaChoice {
  mic: boolean;
  cam: boolean;
  audioDeviceId?: string;
  videoDeviceId?: string;
  noiseSuppression: boolean;
  /** RNNoise on the microphone, on top of (or instead of) the browser's own suppression. */
  rnnoise?: boolean;
  /** A stream already captured by the pre-join preview, reused to avoid asking again. */
  preview?: MediaStream | null;
}

type TextPayload = { mid: string; text: string };
type FilePayload = { mid: string; offer: FileOffer };
type ProfilePayload = { name: string };

export class RoomSession {
  readonly store: Store<RoomViewState>;
  readonly socket: ConfabSocket;
  readonly mesh: Mesh;
  readonly transfers: FileTransfers;
  private outbox: OutboxItem[] = [];
  private decryptChain: Promise<void> = Promise.resolve();
  private signalsOut: Promise<void> = Promise.resolve();
  private signalsIn: Promise<void> = Promise.resolve();
  private typingSentAt = 0;
  private typingIdle: ReturnType<typeof setTimeout> | null = null;
  private remoteTypingTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private changeQueued = false;
  private profileQueued = false;
  private media: MediaChoice = { mic: false, cam: false, noiseSuppression: true };
  private disposed = false;
  private readonly t: Translate;
  private readonly attention = new AttentionCounter();
  /** Key checks heard from peers, by device key. */
  private readonly peerChecks = new Map<string, string>();
  private qualityTimer: ReturnType<typeof setInterval> | null = null;
  private readonly pendingJoinNotices = new Map<string, ReturnType<typeof setTimeout>>();
  private stopDeviceWatch: (() => void) | null = null;
  private qualitySamples = new Map<string, QualitySample>();
  /** Current key first, then the ones it replaced. */
  private keyring: RoomKey[];
  private secret: string;
  private readonly ice: IceCredentials;

  constructor(private readonly d: RoomSessionDeps) {
    this.t = d.t ?? english;
    this.keyring = [d.roomKey, ...(d.olderKeys ?? [])];
    this.secret = d.secret ?? '';
    const me = { userId: d.session.user_id, deviceId: d.session.device_id };
    this.store = new Store(initialRoomState(d.roomId, me, d.myName, d.weakKey, d.roomKey.fingerprint));
    if (d.weakKey) this.banner({ tone: 'warn', text: this.t('e2ee.notPrivateBanner') });
    this.transfers = new FileTransfers({ createHasher: createSha256, store: d.fileStore, now: d.now, onChange: () => this.queueChange() });
    this.mesh = new Mesh({
      self: { user_id: me.userId, device_id: me.deviceId },
      sid: d.randomId(),
      iceServers: d.iceServers,
      iceTransportPolicy: d.iceTransportPolicy ?? 'all',
      createPeerConnection: d.createPeerConnection,
      sendSignal: (to, env) => void this.sendSignal(to, env),
      onChange: () => this.queueChange(),
      onFilesChannel: (peer, ch) => (ch ? this.transfers.attachChannel(peer, ch) : this.transfers.detachChannel(peer)),
      onFilesMessage: (peer, data) => this.transfers.handleMessage(peer, data),
      onControl: (peer, msg) => void this.onControl(peer, msg).catch((e: unknown) => d.log?.('control', e)),
      log: d.log,
    });
    this.ice = new IceCredentials({
      fetch: () => d.rest.iceServers(d.roomId),
      onRenewed: (servers) => this.mesh.setIceServers(servers),
      log: d.log,
    });
    this.socket = new ConfabSocket({
      url: d.wsUrl,
      token: d.session.access_token,
      factory: d.wsFactory,
      backoff: d.backoff,
      handlers: {
        status: (s) => this.onStatus(s),
        event: (ev) => this.onEvent(ev),
        subscribed: (sum, resumed) => this.onSubscribed(sum, resumed),
        message: (m) => this.onMessage(m),
        unpairedError: (err, req) => {
          d.log?.(`${req ?? 'request'} refused`, err);
          if (req !== 'signal' && req !== 'typing') this.banner({ tone: 'warn', text: describeError(err, this.t) });
        },
      },
    });
  }

  // ---------- lifecycle ----------

  async start(media: MediaChoice): Promise<void> {
    this.media = media;
    // The room's ICE servers before any connection is made (the caller has joined the room, so
    // the TURN credentials are the session's to have).
    const [servers] = await Promise.all([this.ice.start(), this.startLocalMedia(media)]);
    if (this.disposed) return;
    if (servers) {
      this.mesh.setIceServers(servers);
      const hasTurn = servers.some((s) => [s.urls].flat().some((u) => /^turns?:/.test(u)));
      if (this.d.iceTransportPolicy === 'relay' && !hasTurn) this.banner({ tone: 'warn', text: this.t('banner.relayNoTurn') });
    }
    this.socket.start();
    const since = this.d.memory.room(this.d.roomId)?.joinedSeq ?? 0;
    this.qualityTimer = setInterval(() => void this.sampleQuality(), QUALITY_INTERVAL_MS);
    this.store.set((s) => ({ ...s, deviceChoice: { ...s.deviceChoice, audioinput: media.audioDeviceId ?? '', videoinput: media.videoDeviceId ?? '' } }));
    this.stopDeviceWatch = this.d.media.onDeviceChange?.(() => void this.devicesChanged()) ?? null;
    void this.refreshDevices();
    try {
      await this.socket.subscribe(this.d.roomId, since);
    } catch (err) {
      this.end('fatal', describeError(err, this.t));
    }
  }

  /** The room key in use (replaced for everyone after a removal, see `kick`). */
  private get key(): CryptoKey {
    return this.keyring[0]!.key;
  }

  /** The secret for invite links: the passphrase, or the raw key made after the last removal. */
  currentSecret(): string {
    return this.secret;
  }

  /** Opens with the current key, else with the keys it replaced (history from before a removal). */
  private async open<T>(wire: string, ctx: MessageContext): Promise<T> {
    let last: unknown = new DecryptError('auth');
    for (const k of this.keyring) {
      try {
        return await openJson<T>(k.key, wire, ctx);
      } catch (e) {
        last = e;
        if (!(e instanceof DecryptError) || e.why !== 'auth') throw e;
      }
    }
    throw last;
  }

  /**
   * Remove a member (host only), then replace the room key: the removed member knows the old one.
   * The new key is 32 random bytes, handed to every remaining device over its data channel
   * (DTLS, authenticated before the removal; never through a server). Everything sent from then on
   * uses it; new invite links carry it; the old key stays in the keyring for the history before.
   * The answer says whether the server revoked the invite link the member joined with (then every
   * other holder of that link needs a new one); a member who left can be removed too.
   */
  async kick(userId: string): Promise<KickResult> {
    const result = await this.d.rest.kick(this.d.roomId, userId);
    const raw = globalThis.crypto.getRandomValues(new Uint8Array(32));
    const secret = rawKeySecret(raw);
    const epoch = this.keyring.length;
    const sentTo = this.mesh.sendControl({ t: 'rekey', epoch, secret }, (ref) => ref.user_id !== userId);
    this.d.log?.(`new room key sent to ${sentTo.length} devices`);
    await this.adoptKey(await roomKeyFromRaw(raw, this.d.roomId), secret);
    return result;
  }

  private async adoptKey(key: RoomKey, secret: string): Promise<void> {
    const old = this.secret;
    this.keyring = [key, ...this.keyring];
    this.secret = secret;
    const mem = this.d.memory.room(this.d.roomId);
    if (mem) this.d.memory.rememberRoom(this.d.roomId, { passphrase: secret, olderSecrets: [old, ...(mem.olderSecrets ?? [])] });
    this.peerChecks.clear();
    this.store.set((s) => ({ ...s, fingerprint: key.fingerprint, weakKey: false, keyMismatch: {}, keyWrong: false, banner: s.weakKey ? null : s.banner }));
    const s = this.store.get();
    for (const devs of Object.entries(s.presence)) for (const dev of devs[1]) if (!this.isMe({ user_id: devs[0], device_id: dev.deviceId })) this.sendKeyCheck({ user_id: devs[0], device_id: dev.deviceId }, true);
  }

  /** A new room key from the host over a data channel (see `kick`). */
  private async onControl(peer: string, msg: { t: string; [k: string]: unknown }): Promise<void> {
    if (msg.t !== 'rekey') return;
    const from = peer.slice(0, peer.lastIndexOf('|'));
    const epoch = Number(msg.epoch);
    // Only a host (the host or a co-host, who may remove members) replaces the key, and only
    // forward: a replayed older message changes nothing.
    if (!isHostUser(this.store.get(), from) || typeof msg.secret !== 'string' || !(epoch >= this.keyring.length)) return;
    const key = await deriveRoomKeyMaterial(msg.secret, this.d.roomId);
    if (this.keyring.some((k) => k.check === key.check)) return;
    await this.adoptKey(key, msg.secret);
    this.banner({ tone: 'info', text: this.t('e2ee.rekeyed') });
  }

  /** The tab was hidden or shown: while hidden, joins and messages raise a badge and notifications. */
  setHidden(hidden: boolean): void {
    this.attention.setHidden(hidden);
    if (!hidden) this.d.attention?.setTitle(this.d.baseTitle ?? 'Confab');
  }

  /** Take the room back after `replaced` (another tab of this device had it). */
  async takeOver(): Promise<void> {
    this.store.set((s) => ({ ...s, ended: null, connection: this.socket.isOnline ? 'online' : 'connecting' }));
    await this.socket.subscribe(this.d.roomId, this.socket.lastSeq(this.d.roomId));
  }

  async leave(): Promise<void> {
    try {
      await this.d.rest.leave(this.d.roomId);
    } catch {
      /* leaving a room that is already gone is fine */
    }
    this.d.memory.forgetRoom(this.d.roomId);
    this.end('left', this.t('ended.youLeft'));
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.ice.stop();
    this.socket.stop();
    this.mesh.close();
    this.transfers.close();
    if (this.qualityTimer) clearInterval(this.qualityTimer);
    for (const t of this.pendingJoinNotices.values()) clearTimeout(t);
    this.stopDeviceWatch?.();
    const s = this.store.get();
    for (const st of [s.local.camera, s.local.screenStream]) st?.getTracks().forEach((t) => t.stop());
    for (const t of this.remoteTypingTimers.values()) clearTimeout(t);
    if (this.typingIdle) clearTimeout(this.typingIdle);
  }

  private end(reason: NonNullable<RoomViewState['ended']>['reason'], text: string): void {
    this.store.set((s) => ({ ...s, ended: { reason, text }, connection: 'stopped' }));
    if (reason !== 'replaced') this.dispose();
  }

  private banner(b: RoomViewState['banner']): void {
    this.store.set((s) => ({ ...s, banner: b }));
  }

  /** Coalesce mesh/transfer changes into one store update per microtask. */
  private queueChange(): void {
    if (this.changeQueued) return;
    this.changeQueued = true;
    queueMicrotask(() => {
      this.changeQueued = false;
      const peers = Object.fromEntries(this.mesh.views().map((p) => [p.key, p]));
      this.store.set((s) => ({ ...s, peers, transfers: this.transfers.views() }));
    });
  }

  // ---------- socket callbacks ----------

  private onStatus(st: SocketStatus): void {
    if (st.state === 'online') {
      this.store.set((s) => ({ ...s, connection: 'online', banner: s.banner?.tone === 'error' || s.banner?.id === 'reconnecting' ? null : s.banner }));
    } else if (st.state === 'reconnecting') {
      this.mesh.signalingLost();
      const secs = Math.max(1, Math.round(st.inMs / 1000));
      this.store.set((s) => ({ ...s, connection: 'reconnecting', banner: { tone: 'warn', id: 'reconnecting', text: this.t('banner.reconnecting', { secs, why: st.why }) } }));
    } else if (st.state === 'connecting') {
      this.store.set((s) => ({ ...s, connection: s.connection === 'online' ? 'reconnecting' : s.connection }));
    } else if (st.state === 'stopped' && st.fatal) {
      this.end('fatal', st.why);
    }
  }

  private onSubscribed(sum: RoomSummary, resumed: boolean): void {
    this.store.set((s) => applySummary(s, sum));
    this.mesh.reconcile(sum.connected.map((c) => ({ user_id: c.user_id, device_id: c.device_id })));
    if (resumed) {
      this.mesh.resyncAll();
      this.banner({ tone: 'info', text: this.t('banner.reconnected') });
    } else {
      this.announceProfile();
    }
    // Everyone already here learns our key check, and answers with theirs.
    for (const c of sum.connected) if (!this.isMe(c)) this.sendKeyCheck(c, true);
    this.flushOutbox();
  }

  private onMessage(m: LiveMessage): void {
    if ('room_id' in m && m.room_id !== this.d.roomId) return;
    switch (m.type) {
      case 'presence': {
        this.store.set((s) => applyPresence(s, m.user_id, m.device_id, m.display_name, m.online));
        const ref = { user_id: m.user_id, device_id: m.device_id };
        if (m.online) this.mesh.ensurePeer(ref);
        else {
          this.mesh.removePeer(ref);
          this.forgetKeyCheck(deviceKey(ref.user_id, ref.device_id));
        }
        return;
      }
      case 'typing': {
        const key = deviceKey(m.user_id, m.device_id);
        this.store.set((s) => applyTyping(s, m.user_id, m.device_id, m.typing));
        const old = this.remoteTypingTimers.get(key);
        if (old) clearTimeout(old);
        if (m.typing) {
          // A lost "stopped typing" must not leave the indicator on forever.
          this.remoteTypingTimers.set(key, setTimeout(() => this.store.set((s) => applyTyping(s, m.user_id, m.device_id, false)), REMOTE_TYPING_TTL_MS));
        }
        return;
      }
      case 'signal':
        void this.receiveSignal(m.from, m.payload);
        return;
      case 'kicked':
        this.d.memory.forgetRoom(this.d.roomId);
        this.end('kicked', this.t('ended.kicked'));
        return;
      case 'room_closed':
        this.d.memory.forgetRoom(this.d.roomId);
        this.end(m.reason === 'expired' ? 'expired' : 'closed', m.reason === 'expired' ? this.t('ended.expired') : this.t('ended.closed'));
        return;
      case 'replaced':
        this.end('replaced', this.t('ended.replaced'));
        return;
    }
  }

  private onEvent(ev: RoomEvent): void {
    // Decrypt strictly in seq order, so names learnt from profiles apply before later messages.
    this.decryptChain = this.decryptChain.then(() => this.foldEvent(ev)).catch((e: unknown) => this.d.log?.('event', e));
  }

  private async foldEvent(ev: RoomEvent): Promise<void> {
    const c = ev.content;
    if (c.type === 'member') {
      this.store.set((s) => {
        const s2 = applyMember(s, c.user_id, c.display_name, c.membership);
        const verb = c.membership === 'joined' ? 'joined' : c.membership === 'left' ? 'left' : 'removed';
        // The subject's name is looked up when shown: their encrypted profile usually arrives after the join.
        // `text` is a code the chat panel words in the user's language.
        return addChatItem(s2, { seq: ev.seq, ts: ev.ts, sender: ev.sender, deviceId: ev.device_id, kind: 'system', status: 'ok', subject: c.user_id, text: verb });
      });
      this.noticeLive(ev.seq);
      // Someone new: tell them our name (encrypted). Skip the backlog replay of old joins.
      if (c.membership === 'joined' && c.user_id !== this.d.session.user_id && this.d.now() - ev.ts < 60_000) this.announceProfile();
      return;
    }
    if (c.type === 'lock') {
      this.store.set((s) =>
        addChatItem(
          { ...s, locked: c.locked },
          { seq: ev.seq, ts: ev.ts, sender: ev.sender, deviceId: ev.device_id, kind: 'system', status: 'ok', text: c.locked ? 'locked' : 'unlocked' },
        ),
      );
      return;
    }
    if (c.type === 'settings') {
      // The event says every setting as it is now, and which of them this change set.
      this.store.set((s) => {
        const next = { ...s, guestsMayShare: c.guests_may_share, lobby: c.lobby ?? s.lobby };
        if (c.changed?.includes('lobby') && !c.changed.includes('guests_may_share')) {
          return addChatItem(next, { seq: ev.seq, ts: ev.ts, sender: ev.sender, deviceId: ev.device_id, kind: 'system', status: 'ok', text: next.lobby ? 'lobbyOn' : 'lobbyOff' });
        }
        if (!c.changed?.includes('guests_may_share')) return next;
        return addChatItem(next, { seq: ev.seq, ts: ev.ts, sender: ev.sender, deviceId: ev.device_id, kind: 'system', status: 'ok', text: c.guests_may_share ? 'sharingOn' : 'sharingOff' });
      });
      return;
    }
    if (c.type === 'role') {
      this.store.set((s) => {
        const s2 = applyRole(s, c.user_id, c.role, c.previous);
        const text = c.reason === 'succession' ? 'newHost' : c.role === 'cohost' ? 'promoted' : 'demoted';
        return addChatItem(s2, { seq: ev.seq, ts: ev.ts, sender: ev.sender, deviceId: ev.device_id, kind: 'system', status: 'ok', subject: c.user_id, text });
      });
      this.noticeLive(ev.seq);
      return;
    }
    if (c.type === 'knock') {
      this.store.set((s) => (s.isHost ? applyKnock(s, c) : s));
      return;
    }
    if (c.type !== 'chat') return;
    const ctx: MessageContext = { roomId: this.d.roomId, userId: ev.sender, deviceId: ev.device_id, kind: c.kind };
    const base = { seq: ev.seq, ts: ev.ts, sender: ev.sender, deviceId: ev.device_id };
    try {
      if (c.kind === 'text') {
        const p = await this.open<TextPayload>(c.ciphertext, ctx);
        if (typeof p?.text !== 'string') throw new DecryptError('format');
        this.removeFromOutbox(p.mid, ev.sender);
        this.store.set((s) => addChatItem(s, { ...base, kind: 'text', status: 'ok', text: p.text, mid: p.mid }));
        this.noticeLive(ev.seq);
      } else if (c.kind === 'file') {
        const p = await this.open<FilePayload>(c.ciphertext, ctx);
        const o = p?.offer;
        if (!o || typeof o.id !== 'string' || !/^[0-9a-f]{32}$/.test(o.id) || typeof o.size !== 'number' || typeof o.sha256 !== 'string') throw new DecryptError('format');
        const offer: FileOffer = { id: o.id, name: String(o.name).slice(0, 255), size: o.size, mime: String(o.mime ?? ''), sha256: o.sha256.toLowerCase() };
        this.removeFromOutbox(p.mid, ev.sender);
        this.store.set((s) => addChatItem(s, { ...base, kind: 'file', status: 'ok', file: offer, mid: p.mid }));
        this.noticeLive(ev.seq);
        if (ev.sender !== this.d.session.user_id || ev.device_id !== this.d.session.device_id) {
          this.transfers.offered(offer, deviceKey(ev.sender, ev.device_id));
          if (offer.size <= AUTO_FETCH_BYTES) this.transfers.request(offer.id);
        }
      } else if (c.kind === 'profile') {
        const p = await this.open<ProfilePayload>(c.ciphertext, ctx);
        if (typeof p?.name !== 'string') return;
        const name = p.name.slice(0, 64);
        const known = ev.sender in this.store.get().names;
        this.store.set((s) => ({ ...s, names: { ...s.names, [ev.sender]: name } }));
        if (this.pendingJoinNotices.has(ev.sender)) this.notifyJoin(ev.sender);
        // Someone whose name we did not know yet may not know ours either: the profile we sent
        // when they joined can fall before the seq their history starts at (a join races with it).
        if (!known && ev.sender !== this.d.session.user_id && this.d.now() - ev.ts < 60_000) this.announceProfile();
      }
      // Other kinds are from a newer client: not ours to show.
    } catch (err) {
      if (c.kind === 'profile') return;
      const status = err instanceof DecryptError && err.why !== 'auth' ? 'refused' : 'protected';
      this.store.set((s) => addChatItem(s, { ...base, kind: c.kind === 'file' ? 'file' : 'text', status }));
    }
  }

  // ---------- outgoing ----------

  private ctx(kind: string): MessageContext {
    return { roomId: this.d.roomId, userId: this.d.session.user_id, deviceId: this.d.session.device_id, kind };
  }

  /** Send our encrypted name soon; triggers that arrive together (a backlog replay) send it once. */
  private announceProfile(): void {
    if (this.profileQueued || this.disposed) return;
    this.profileQueued = true;
    setTimeout(() => {
      this.profileQueued = false;
      if (!this.disposed) void this.sendProfile();
    }, PROFILE_COALESCE_MS);
  }

  private async sendProfile(): Promise<void> {
    if (!this.d.myName) return;
    const ciphertext = await sealJson(this.key, { name: this.d.myName } satisfies ProfilePayload, this.ctx('profile'));
    this.socket.request({ type: 'chat', room_id: this.d.roomId, kind: 'profile', ciphertext }).catch(() => undefined);
  }

  async sendText(text: string): Promise<void> {
    const t = text.trim();
    if (!t) return;
    const mid = this.d.randomId();
    const ciphertext = await sealJson(this.key, { mid, text: t } satisfies TextPayload, this.ctx('text'));
    this.setTyping(false);
    this.enqueue({ kind: 'text', ciphertext, mid, inFlight: false });
  }

  /** Offer a local file to the room; peers pull it over their data channels. */
  async shareFile(file: { name: string; type: string; source: ByteSource }): Promise<void> {
    // Hashed slice by slice: a file of any size is never held whole in memory.
    const sha256 = await hashSource(file.source);
    const offer: FileOffer = {
      id: this.d.randomId().replace(/[^0-9a-f]/g, '').padEnd(32, '0').slice(0, 32),
      name: file.name,
      size: file.source.size,
      mime: file.type || 'application/octet-stream',
      sha256,
    };
    this.transfers.share(offer, file.source);
    const mid = this.d.randomId();
    const ciphertext = await sealJson(this.key, { mid, offer } satisfies FilePayload, this.ctx('file'));
    this.enqueue({ kind: 'file', ciphertext, mid, inFlight: false });
  }

  private enqueue(item: OutboxItem): void {
    this.outbox.push(item);
    this.flushOutbox();
  }

  private removeFromOutbox(mid: string | undefined, sender: string): void {
    if (!mid || sender !== this.d.session.user_id) return;
    this.outbox = this.outbox.filter((o) => o.mid !== mid);
  }

  /** Send what has no ack yet. Its mid is its transaction id: a message whose ack was lost is sent again and answered as the first. */
  private flushOutbox(): void {
    if (!this.socket.isOnline) return;
    for (const item of this.outbox) {
      if (item.inFlight) continue;
      item.inFlight = true;
      this.socket.request<{ seq: number }>({ type: 'chat', room_id: this.d.roomId, kind: item.kind, ciphertext: item.ciphertext, txn_id: item.mid }).then(
        () => {
          this.outbox = this.outbox.filter((o) => o !== item);
        },
        (err: unknown) => {
          item.inFlight = false;
          if (err instanceof ConfabError && (err.code === 'disconnected' || err.code === 'timeout')) return; // resent on resume
          // Too fast, or the server's database is briefly away: the message waits and goes again.
          const delay = retryDelay(err);
          if (delay !== null) {
            setTimeout(() => this.flushOutbox(), delay);
            return;
          }
          this.outbox = this.outbox.filter((o) => o !== item);
          this.banner({ tone: 'error', text: this.t('banner.notSent', { why: describeError(err, this.t) }) });
        },
      );
    }
  }

  pendingCount(): number {
    return this.outbox.length;
  }

  setTyping(typing: boolean): void {
    const now = this.d.now();
    if (this.typingIdle) clearTimeout(this.typingIdle);
    this.typingIdle = null;
    if (typing) {
      if (now - this.typingSentAt > TYPING_RESEND_MS) {
        this.typingSentAt = now;
        this.socket.send({ type: 'typing', room_id: this.d.roomId, typing: true });
      }
      this.typingIdle = setTimeout(() => this.setTyping(false), TYPING_IDLE_MS);
    } else if (this.typingSentAt) {
      this.typingSentAt = 0;
      this.socket.send({ type: 'typing', room_id: this.d.roomId, typing: false });
    }
  }

  setChatOpen(open: boolean): void {
    this.store.set((s) => setChatOpen(s, open));
  }

  /**
   * Encrypting and decrypting are asynchronous; signals are chained so they leave, and are applied,
   * in the order the negotiation produced and the server delivered them (an ICE candidate overtaking
   * its offer would be rejected by the peer connection).
   */
  private sendSignal(to: { user_id: string; device_id: string }, env: SignalEnvelope): Promise<void> {
    this.signalsOut = this.signalsOut.then(async () => {
      const payload = await sealJson(this.key, await packSignal(env), this.ctx('signal'));
      if (!this.socket.send({ type: 'signal', room_id: this.d.roomId, to, payload })) this.d.log?.(`signal to ${to.user_id} not sent: offline`);
    }).catch((err: unknown) => this.d.log?.('signal out', err));
    return this.signalsOut;
  }

  private receiveSignal(from: { user_id: string; device_id: string }, payload: string): Promise<void> {
    const check = decodeKeyCheck(payload);
    if (check) {
      this.onKeyCheck(from, check.check, check.ask);
      return this.signalsIn;
    }
    this.signalsIn = this.signalsIn.then(async () => {
      try {
        const packed = await this.open<PackedEnvelope>(payload, { roomId: this.d.roomId, userId: from.user_id, deviceId: from.device_id, kind: 'signal' });
        this.mesh.handleSignal(from, await unpackSignal(packed));
      } catch (err) {
        // A peer with another passphrase: no call is possible, and nothing unauthenticated is applied.
        // Its key check (sent on subscribing) tells the people why; ask for it in case it was lost.
        this.d.log?.(`signal from ${from.user_id} refused`, err);
        if (!this.peerChecks.has(deviceKey(from.user_id, from.device_id))) this.sendKeyCheck(from, true);
      }
    });
    return this.signalsIn;
  }

  // ---------- key check ----------

  private isMe(r: { user_id: string; device_id: string }): boolean {
    return r.user_id === this.d.session.user_id && r.device_id === this.d.session.device_id;
  }

  /**
   * The key check rides in a signal's payload without the room key's sealing: a peer with another
   * key must be able to read it (see keyCheck.ts for why that gives a server nothing).
   */
  private sendKeyCheck(to: { user_id: string; device_id: string }, ask: boolean): void {
    this.socket.send({ type: 'signal', room_id: this.d.roomId, to: { user_id: to.user_id, device_id: to.device_id }, payload: encodeKeyCheck(this.keyring[0]!.check, ask) });
  }

  private onKeyCheck(from: { user_id: string; device_id: string }, check: string, ask: boolean): void {
    if (this.isMe(from)) return;
    this.peerChecks.set(deviceKey(from.user_id, from.device_id), check);
    if (ask) this.sendKeyCheck(from, false);
    this.judgeKeys();
  }

  private forgetKeyCheck(peer: string): void {
    if (!this.peerChecks.delete(peer)) return;
    this.judgeKeys();
  }

  private judgeKeys(): void {
    const s = this.store.get();
    const verdict = judgeKeys(this.keyring[0]!.check, this.peerChecks, s.host, s.me.userId);
    const wasWrong = s.keyWrong;
    this.store.set((st) => ({ ...st, keyMismatch: verdict.mismatched, keyWrong: verdict.mineIsWrong }));
    if (verdict.mineIsWrong && !wasWrong) this.banner({ tone: 'error', id: 'key', text: this.t('e2ee.wrongPassphrase') });
    if (!verdict.mineIsWrong && wasWrong) this.store.set((st) => ({ ...st, banner: st.banner?.id === 'key' ? null : st.banner }));
  }

  // ---------- attention and quality ----------

  /** A live join or message while the tab is hidden: count it in the title and notify. */
  private noticeLive(seq: number): void {
    const s = this.store.get();
    const item = s.timeline.find((i) => i.seq === seq);
    if (!item || seq <= s.liveFromSeq) return;
    const kind = attentionKind(item, s.me.userId);
    if (!this.attention.note(kind)) return;
    const base = this.d.baseTitle ?? 'Confab';
    this.d.attention?.setTitle(badgeTitle(base, this.attention.count));
    // The notification names who, never what: a message's text stays out of the system's notification
    // centre (and lock screen), which keeps what it was shown.
    if (kind === 'join' && !(item.subject! in s.names)) {
      // A newcomer's name arrives in their encrypted profile just after the join: wait for it
      // (briefly; past that the server's neutral label will do).
      const subject = item.subject!;
      const timer = setTimeout(() => this.notifyJoin(subject), JOIN_NAME_WAIT_MS);
      this.pendingJoinNotices.set(subject, timer);
      return;
    }
    if (kind === 'join') this.notifyJoin(item.subject!);
    else this.d.attention?.notify(base, this.t('notify.message', { name: displayName(s, item.sender) }));
  }

  private notifyJoin(userId: string): void {
    const timer = this.pendingJoinNotices.get(userId);
    if (timer) clearTimeout(timer);
    this.pendingJoinNotices.delete(userId);
    if (this.disposed) return;
    this.d.attention?.notify(this.d.baseTitle ?? 'Confab', this.t('notify.joined', { name: displayName(this.store.get(), userId) }));
  }

  private async sampleQuality(): Promise<void> {
    if (this.disposed) return;
    let samples: Record<string, QualitySample>;
    try {
      samples = await this.mesh.qualitySamples(this.d.now());
    } catch (e) {
      this.d.log?.('quality', e);
      return;
    }
    const quality: RoomViewState['quality'] = {};
    for (const [peer, cur] of Object.entries(samples)) {
      quality[peer] = assessQuality(this.qualitySamples.get(peer) ?? null, cur);
    }
    this.qualitySamples = new Map(Object.entries(samples));
    if (!this.disposed) this.store.set((st) => ({ ...st, quality }));
  }

  // ---------- media ----------

  private audioConstraints(): MediaTrackConstraints {
    return {
      ...(this.media.audioDeviceId ? { deviceId: { exact: this.media.audioDeviceId } } : {}),
      noiseSuppression: this.media.noiseSuppression,
      echoCancellation: true,
      autoGainControl: true,
    };
  }
  private videoConstraints(): MediaTrackConstraints {
    return {
      ...(this.media.videoDeviceId ? { deviceId: { exact: this.media.videoDeviceId } } : {}),
      width: { ideal: 1280 },
      height: { ideal: 720 },
    };
  }

  private async startLocalMedia(m: MediaChoice): Promise<void> {
    let stream = m.preview ?? null;
    if (!stream) {
      // The microphone is captured even when starting muted, so unmuting is instant (track.enabled).
      try {
        stream = await this.d.media.getUserMedia({ audio: this.audioConstraints(), video: m.cam ? this.videoConstraints() : false });
      } catch {
        try {
          stream = await this.d.media.getUserMedia({ audio: this.audioConstraints() });
        } catch {
          stream = null;
          this.banner({ tone: 'warn', text: this.t('banner.noMedia') });
        }
      }
    }
    let rnnoise = false;
    const mic = stream?.getAudioTracks()[0];
    if (stream && mic && m.rnnoise && this.d.media.denoise) {
      try {
        const clean = await this.d.media.denoise(mic);
        stream.removeTrack(mic);
        stream.addTrack(clean);
        rnnoise = true;
      } catch (e) {
        this.banner({ tone: 'warn', text: this.t('banner.rnnoiseFailed', { why: String(e) }) });
      }
    }
    if (stream) {
      if (!m.cam) for (const t of stream.getVideoTracks()) { t.stop(); stream.removeTrack(t); }
      for (const t of stream.getAudioTracks()) t.enabled = m.mic;
      this.mesh.setMicEnabled(m.mic && stream.getAudioTracks().length > 0);
      this.mesh.addStream(stream, 'camera');
    }
    this.store.set((s) => ({ ...s, local: { ...s.local, camera: stream, mic: m.mic && !!stream?.getAudioTracks().length, cam: !!stream?.getVideoTracks().length, rnnoise } }));
  }

  // ---------- devices ----------

  private async refreshDevices(): Promise<void> {
    if (!this.d.media.enumerateDevices) return;
    try {
      const devices = listDevices(await this.d.media.enumerateDevices());
      if (!this.disposed) this.store.set((s) => ({ ...s, devices }));
    } catch (e) {
      this.d.log?.('enumerateDevices', e);
    }
  }

  /** A device came or went: a chosen one that is gone falls back to the default, with a notice. */
  private async devicesChanged(): Promise<void> {
    await this.refreshDevices();
    const s = this.store.get();
    const gone = removedChoices(s.deviceChoice, s.devices);
    for (const kind of gone) {
      await this.switchDevice(kind, '');
      this.banner({ tone: 'warn', id: 'device', text: this.t(`devices.gone.${kind}`) });
    }
  }

  /**
   * Use another microphone, camera or speaker during the call. Inputs are captured anew and
   * swapped into every peer connection with replaceTrack (no renegotiation); the speaker choice is
   * applied by the tiles (setSinkId, where the browser has it). '' = the system default.
   */
  async switchDevice(kind: DeviceKind, deviceId: string): Promise<void> {
    this.store.set((s) => ({ ...s, deviceChoice: { ...s.deviceChoice, [kind]: deviceId } }));
    if (kind === 'audiooutput') return;
    if (kind === 'audioinput') this.media = { ...this.media, audioDeviceId: deviceId || undefined };
    else this.media = { ...this.media, videoDeviceId: deviceId || undefined };
    const s = this.store.get();
    const stream = s.local.camera;
    const old = kind === 'audioinput' ? stream?.getAudioTracks()[0] : stream?.getVideoTracks()[0];
    // A camera that is off is only remembered: it is captured when turned on.
    if (!stream || !old || (kind === 'videoinput' && !s.local.cam)) return;
    let next: MediaStreamTrack | undefined;
    try {
      const got = await this.d.media.getUserMedia(kind === 'audioinput' ? { audio: this.audioConstraints() } : { video: this.videoConstraints() });
      next = kind === 'audioinput' ? got.getAudioTracks()[0] : got.getVideoTracks()[0];
    } catch (err) {
      this.banner({ tone: 'warn', text: this.t('devices.switchFailed', { why: describeError(err, this.t) }) });
      return;
    }
    if (!next || this.disposed) return next?.stop();
    if (kind === 'audioinput') next.enabled = s.local.mic;
    stream.removeTrack(old);
    stream.addTrack(next);
    await this.mesh.replaceTrack(old, next);
    old.stop();
    // The same stream object keeps its identity (the mesh knows its sources by it); the media
    // element showing it follows the swapped track by itself.
    this.store.set((st) => ({ ...st, local: { ...st.local, cameraLabel: kind === 'videoinput' ? next.label : st.local.cameraLabel, micLabel: kind === 'audioinput' ? next.label : st.local.micLabel } }));
  }

  toggleMic(): void {
    const s = this.store.get();
    const tracks = s.local.camera?.getAudioTracks() ?? [];
    if (!tracks.length) {
      this.banner({ tone: 'warn', text: this.t('banner.noMic') });
      return;
    }
    const on = !s.local.mic;
    for (const t of tracks) t.enabled = on;
    this.mesh.setMicEnabled(on);
    this.store.set((st) => ({ ...st, local: { ...st.local, mic: on } }));
  }

  async toggleCam(): Promise<void> {
    const s = this.store.get();
    let stream = s.local.camera;
    if (s.local.cam && stream) {
      for (const t of stream.getVideoTracks()) {
        this.mesh.removeTrack(t);
        t.stop();
        stream.removeTrack(t);
      }
      this.mesh.broadcastMediaState();
      this.store.set((st) => ({ ...st, local: { ...st.local, cam: false } }));
      return;
    }
    let track: MediaStreamTrack | undefined;
    try {
      track = (await this.d.media.getUserMedia({ video: this.videoConstraints() })).getVideoTracks()[0];
    } catch (err) {
      this.banner({ tone: 'warn', text: this.t('banner.noCamera', { why: describeError(err, this.t) }) });
      return;
    }
    if (!track) return;
    if (stream) {
      stream.addTrack(track);
      this.mesh.addTrack(stream, track);
    } else {
      stream = this.d.media.createStream([track]);
      this.mesh.addStream(stream, 'camera');
    }
    this.store.set((st) => ({ ...st, local: { ...st.local, cam: true, camera: stream } }));
  }

  async toggleScreen(): Promise<void> {
    const s = this.store.get();
    if (s.local.screenStream) {
      this.stopScreen();
      return;
    }
    let stream: MediaStream;
    try {
      // The shared tab's (or, where the system offers it, the screen's) sound goes along; browsers
      // that cannot capture it share the picture only, and the user is told.
      const capture = await captureScreen((c) => this.d.media.getDisplayMedia(c));
      stream = capture.stream;
      if (!capture.withSound) this.banner({ tone: 'info', text: this.t('banner.screenNoSound') });
    } catch (err) {
      this.banner({ tone: 'info', text: this.t('banner.screenNotStarted', { why: describeError(err, this.t) }) });
      return;
    }
    for (const t of stream.getTracks()) t.onended = () => this.stopScreen();
    this.mesh.addStream(stream, 'screen');
    this.store.set((st) => ({ ...st, local: { ...st.local, screen: true, screenStream: stream } }));
  }

  private stopScreen(): void {
    const stream = this.store.get().local.screenStream;
    if (!stream) return;
    this.mesh.removeStream(stream);
    stream.getTracks().forEach((t) => t.stop());
    this.store.set((st) => ({ ...st, local: { ...st.local, screen: false, screenStream: null } }));
  }
}
